/** The schema of every kind, by kind name. */

import type { z } from "zod";
import { type CalibrationJob, calibrationJobDocument } from "./calibration-job.js";
import type { Kind } from "./common.js";
import { type Deployment, deploymentDocument } from "./deployment.js";
import { type Rollout, rolloutDocument } from "./rollout.js";

export { BASELINES, type CalibrationJob, type FoldMethod } from "./calibration-job.js";
export { API_VERSION, KINDS, type Kind } from "./common.js";
export {
  DEFAULT_API_LISTEN,
  DEFAULT_TELEMETRY_ENDPOINT,
  type Deployment,
  type WorkerPool,
} from "./deployment.js";
export { GATE_NAMES, type GateName, type Rollout, type RolloutStep } from "./rollout.js";

/** Parsed document of each kind. */
export interface ConfigByKind {
  CalibrationJob: CalibrationJob;
  Deployment: Deployment;
  Rollout: Rollout;
}

/** Any parsed document. */
export type TardisConfig = ConfigByKind[Kind];

/** The zod schema of each kind's whole document. */
export const DOCUMENT_SCHEMAS: { readonly [K in Kind]: z.ZodType<ConfigByKind[K], unknown> } = {
  CalibrationJob: calibrationJobDocument,
  Deployment: deploymentDocument,
  Rollout: rolloutDocument,
};
