/** The view of a rollout that the CLI and the API show: phase, step, weights, counters. */

import type { Phase, RolloutState } from "./machine.js";
import type { RevisionRecord } from "./store.js";

/** Kind of a step, as shown in status. */
export type StepKind = "setWeight" | "pause" | "analysis";

/** A rollout as `rollout status` shows it. */
export interface RolloutStatus {
  readonly name: string;
  readonly revision: string;
  readonly revisionNumber: number;
  readonly phase: Phase;
  readonly reason: string;
  readonly message: string;
  /** When the phase last changed, ms since the epoch. */
  readonly since: number;
  readonly baseline: string;
  readonly candidate: string;
  /** 0-based index of the current step; equals `steps` once all are done. */
  readonly step: number;
  readonly steps: number;
  readonly stepKind: StepKind | null;
  /** Desired traffic percent of the candidate (the baseline gets the rest). */
  readonly weight: number;
  /** Percent the router was last given; null while waiting for a load (or after a restart). */
  readonly appliedWeight: number | null;
  readonly failed: number;
  readonly inconclusive: number;
  readonly resumeAt: number | null;
  readonly watchUntil: number | null;
  /** What the rollout waits on: `load <variant>`, `measure <id>`, or null. */
  readonly waitingFor: string | null;
}

/** Build the status of a rollout from its state and its revision. */
export function toStatus(state: RolloutState, revision: RevisionRecord): RolloutStatus {
  const step = revision.spec.steps[state.stepIndex];
  const stepKind: StepKind | null =
    step === undefined
      ? null
      : step.setWeight !== undefined
        ? "setWeight"
        : step.pause !== undefined
          ? "pause"
          : "analysis";
  const awaiting = state.awaiting;
  return {
    name: state.name,
    revision: state.revision,
    revisionNumber: revision.number,
    phase: state.phase,
    reason: state.reason,
    message: state.message,
    since: state.since,
    baseline: revision.spec.baseline,
    candidate: revision.spec.candidate,
    step: state.stepIndex,
    steps: revision.spec.steps.length,
    stepKind,
    weight: state.weight,
    appliedWeight: state.appliedWeight,
    failed: state.failed,
    inconclusive: state.inconclusive,
    resumeAt: state.resumeAt,
    watchUntil: state.watchUntil,
    waitingFor:
      awaiting === null
        ? null
        : awaiting.kind === "load"
          ? `load ${awaiting.variant}`
          : `measure ${awaiting.id}`,
  };
}
