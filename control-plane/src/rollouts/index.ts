/** Rollouts: the pure state machine, gates, revisions, persistence and the driver. */

export {
  type Clock,
  type RolloutChange,
  RolloutEngine,
  type RolloutEngineOptions,
  type TrafficTarget,
  type VariantLoader,
} from "./engine.js";
export { RolloutError, type RolloutErrorCode } from "./errors.js";
export {
  combineOutcomes,
  evaluateGate,
  type GateOutcome,
  type GateResult,
  type GatesSpec,
  type LayerCheck,
  thresholdsOf,
} from "./gates.js";
export {
  fallbackSampleFromCounters,
  LiveMeasurements,
  type LiveSources,
  type WorkerLayerCounters,
} from "./live-measurements.js";
export {
  type Action,
  type Decision,
  type HistoryEntry,
  type MeasurementContext,
  PHASES,
  type Phase,
  type RolloutState,
  type Transition,
} from "./machine.js";
export type {
  AccuracySample,
  ErrorSample,
  EvalSetRef,
  FallbackSample,
  GateSample,
  LatencySample,
  LayerFallback,
  MeasurementQuery,
  Measurements,
  VariantLatency,
} from "./measurements.js";
export { canonicalJson, type RolloutSpec, revisionOf } from "./revision.js";
export { SqliteRolloutStore } from "./sqlite-store.js";
export { type RolloutStatus, type StepKind, toStatus } from "./status.js";
export {
  type RevisionRecord,
  type RolloutCommit,
  type RolloutStore,
  StaleStateError,
  type StoredDecision,
  type StoredHistoryEntry,
  type StoredRollout,
} from "./store.js";
