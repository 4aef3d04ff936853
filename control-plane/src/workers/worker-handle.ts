/** How job code reaches a worker without knowing whether it is supervised here or elsewhere. */

import type { WorkerSupervisor } from "./supervisor.js";
import { WorkerClient } from "./worker-client.js";

/** A worker to send calls to. */
export interface WorkerHandle {
  /** A client of a SERVING worker; waits while a supervised worker restarts. */
  connect(signal?: AbortSignal): Promise<WorkerClient>;
  /** ZeroMQ telemetry endpoint ("" when unknown or off). */
  telemetryEndpoint(): string;
  /** Stop it if this process started it; a no-op for a worker that someone else runs. */
  close(): Promise<void>;
}

/** A worker this process supervises. */
export function supervisedWorker(supervisor: WorkerSupervisor, onClose?: () => void): WorkerHandle {
  return {
    async connect(signal) {
      await supervisor.ready(signal);
      return supervisor.client();
    },
    telemetryEndpoint: () => supervisor.telemetryEndpoint,
    async close() {
      await supervisor.stop();
      onClose?.();
    },
  };
}

/** A worker at a known address, run by someone else (`tardis worker start`, or `--worker`). */
export function remoteWorker(address: string, telemetry = ""): WorkerHandle {
  const client = new WorkerClient(address);
  return {
    async connect() {
      return client;
    },
    telemetryEndpoint: () => telemetry,
    async close() {
      client.close();
    },
  };
}
