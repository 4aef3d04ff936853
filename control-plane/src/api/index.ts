/** The ControlPlane gRPC API: server, client, fleet of workers, metrics. */

import { remoteWorker } from "../workers/worker-handle.js";
import type { FleetMember } from "./fleet.js";

export { bearerMatches, resolveToken } from "./auth.js";
export { ApiCallError, ApiClient, type ApiClientOptions } from "./client.js";
export { ApiError, decodeViolations, type FieldViolation } from "./errors.js";
export { Fleet, type FleetMember, type WorkerView } from "./fleet.js";
export { ApiMetrics } from "./metrics.js";
export { type ControlPlaneOptions, ControlPlaneServer } from "./server.js";
export { parseRolloutYaml } from "./service.js";

/** A worker someone else runs, at `address`, as a fleet member (hf engine). */
export function remoteWorkerMember(id: string, address: string): FleetMember {
  return { id, pool: "remote", engine: "hf", device: "", handle: remoteWorker(address) };
}
