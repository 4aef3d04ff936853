/**
 * The rollout state machine, pure: (state, spec, event, now) → (new state, actions for the driver,
 * history entries, decisions). It never performs I/O; the driver persists the new state first and
 * only then performs the actions (load a variant, set the traffic weight, take a measurement) and
 * feeds their results back in as events.
 *
 * Semantics (CONTROL-PLANE.md, Argo Rollouts): steps run in order; an analysis measurement that is
 * successful continues, failed aborts (beyond `failureLimit`), inconclusive pauses (beyond
 * `inconclusiveLimit`: aborts), and more than `consecutiveErrorLimit` measurement errors in a row
 * abort. Traffic only shifts onto a variant once it is loaded (Triton: load before unload).
 */

import { durationToMs, GATE_NAMES, type GateName } from "../config/index.js";
import { RolloutError } from "./errors.js";
import { combineOutcomes, evaluateGate, type GateResult } from "./gates.js";
import type { GateSample } from "./measurements.js";
import type { RolloutSpec } from "./revision.js";

/** Rollout phases (KServe/Argo style). ABORTED and DEGRADED serve the baseline only. */
export const PHASES = ["PROGRESSING", "PAUSED", "PROMOTED", "ABORTED", "DEGRADED"] as const;

/** One of {@link PHASES}. */
export type Phase = (typeof PHASES)[number];

/** Whether a measurement belongs to an analysis step or to the post-promotion watch window. */
export type MeasurementContext = "analysis" | "watch";

/** An effect the machine is waiting on; at most one at a time. */
export type Awaiting =
  | { readonly kind: "load"; readonly variant: string }
  | { readonly kind: "measure"; readonly id: number; readonly context: MeasurementContext };

/** Progress of the running analysis step (or of the watch window). */
export interface AnalysisProgress {
  /** Measurements that counted (successful, or failed within `failureLimit`). */
  readonly taken: number;
  /** When the next measurement is due, ms since the epoch. */
  readonly nextAt: number;
  readonly consecutiveErrors: number;
}

/** Everything needed to continue a rollout; persisted before any action is taken. */
export interface RolloutState {
  readonly name: string;
  /** Content hash of the spec being rolled out (see revision.ts). */
  readonly revision: string;
  readonly phase: Phase;
  /** CamelCase cause of the last change (e.g. `GateFailed`), and a sentence about it. */
  readonly reason: string;
  readonly message: string;
  /** When the phase last changed, ms since the epoch. */
  readonly since: number;
  /** Index of the current step; `steps.length` once every step is done. */
  readonly stepIndex: number;
  readonly stepStartedAt: number;
  /** Desired candidate traffic percent; the baseline gets the rest. */
  readonly weight: number;
  /** The weight last handed to the traffic target; null before any (or after a restart). */
  readonly appliedWeight: number | null;
  /** When `appliedWeight` was applied: the start of the live-measurement window. */
  readonly weightAppliedAt: number;
  /** Variants confirmed loaded since this revision started (or since the last restart). */
  readonly loaded: readonly string[];
  /** Variants whose load failed; traffic never shifts onto them. */
  readonly failedLoads: readonly string[];
  readonly awaiting: Awaiting | null;
  /** A timed pause ends at this time; null for a pause until resumed. */
  readonly resumeAt: number | null;
  readonly analysis: AnalysisProgress | null;
  /** Failed and inconclusive measurements so far in this revision (the limits count these). */
  readonly failed: number;
  readonly inconclusive: number;
  /** End of the post-promotion watch window; null when not watching. */
  readonly watchUntil: number | null;
  /** Last measurement id handed out; ids stay unique across revisions of one rollout. */
  readonly measurementSeq: number;
}

/** An effect for the driver to perform after persisting the state. */
export type Action =
  | { readonly type: "load"; readonly variant: string }
  /** Send `weight` percent to the candidate and the rest to the baseline. */
  | { readonly type: "setWeight"; readonly weight: number }
  | {
      readonly type: "measure";
      readonly id: number;
      readonly context: MeasurementContext;
      readonly gates: readonly GateName[];
      /** Start of the live window (when the current weight was applied). */
      readonly since: number;
    };

/** A change of phase, reason or weight, for `rollout history`. */
export interface HistoryEntry {
  readonly at: number;
  readonly revision: string;
  readonly phase: Phase;
  readonly reason: string;
  readonly message: string;
  readonly step: number;
  readonly weight: number;
}

/** One gate evaluation, with where in the rollout it happened. */
export interface Decision extends GateResult {
  readonly at: number;
  readonly revision: string;
  readonly step: number;
  readonly context: MeasurementContext;
  /** The measurement id (shared by the gates evaluated together). */
  readonly measurement: number;
}

/** The result of feeding one event to the machine. */
export interface Transition {
  readonly state: RolloutState;
  readonly actions: readonly Action[];
  readonly history: readonly HistoryEntry[];
  readonly decisions: readonly Decision[];
}

/** Start a revision: load the baseline, route everything to it, then run the steps. */
export function startRollout(
  name: string,
  revision: string,
  spec: RolloutSpec,
  now: number,
  previous?: RolloutState,
): Transition {
  const tx = new Tx(
    initialState(name, revision, now, previous, {
      phase: "PROGRESSING",
      reason: "Applied",
      message: `revision ${revision} applied`,
      stepIndex: 0,
      weight: 0,
    }),
    spec,
    now,
  );
  tx.record();
  return run(tx);
}

/**
 * Serve an earlier, promoted revision again: its candidate gets all traffic as soon as it is
 * loaded (no steps, no watch window).
 */
export function rollbackTo(
  name: string,
  revision: string,
  spec: RolloutSpec,
  now: number,
  previous?: RolloutState,
): Transition {
  const tx = new Tx(
    initialState(name, revision, now, previous, {
      phase: "PROMOTED",
      reason: "RolledBack",
      message: `rolled back to revision ${revision}: ${spec.candidate} serves all traffic`,
      stepIndex: spec.steps.length,
      weight: 100,
    }),
    spec,
    now,
  );
  tx.record();
  return run(tx);
}

/** Advance on the clock: end timed pauses, take due measurements, end the watch window. */
export function tick(state: RolloutState, spec: RolloutSpec, now: number): Transition {
  return run(new Tx(state, spec, now));
}

/**
 * After a control-plane restart: nothing is known to be loaded or routed any more, and effects
 * that were in flight are lost, so reload, re-route and re-measure from the persisted step.
 */
export function recover(state: RolloutState, spec: RolloutSpec, now: number): Transition {
  const tx = new Tx(state, spec, now);
  tx.set({ loaded: [], failedLoads: [], appliedWeight: null, awaiting: null });
  return run(tx);
}

/** A variant finished loading. */
export function onLoaded(
  state: RolloutState,
  spec: RolloutSpec,
  variant: string,
  now: number,
): Transition {
  const tx = new Tx(state, spec, now);
  const loaded = state.loaded.includes(variant) ? state.loaded : [...state.loaded, variant];
  tx.set({ loaded, awaiting: isLoadOf(state.awaiting, variant) ? null : state.awaiting });
  return run(tx);
}

/** A variant failed to load: traffic never shifts onto it; an unfinished rollout aborts. */
export function onLoadFailed(
  state: RolloutState,
  spec: RolloutSpec,
  variant: string,
  error: string,
  now: number,
): Transition {
  const tx = new Tx(state, spec, now);
  // A late failure of an earlier revision's variant says nothing about this one.
  if (variant !== spec.baseline && variant !== spec.candidate) return run(tx);
  tx.set({
    failedLoads: [...state.failedLoads, variant],
    awaiting: isLoadOf(state.awaiting, variant) ? null : state.awaiting,
  });
  const message = `variant ${variant} failed to load: ${error}`;
  if (state.phase === "PROGRESSING" || state.phase === "PAUSED")
    stop(tx, "ABORTED", "LoadFailed", message);
  else if (state.phase === "PROMOTED") stop(tx, "DEGRADED", "LoadFailed", message);
  return run(tx);
}

/** The samples of measurement `id` arrived: evaluate the gates and apply the limits. */
export function onMeasured(
  state: RolloutState,
  spec: RolloutSpec,
  id: number,
  samples: readonly GateSample[],
  now: number,
): Transition {
  const tx = new Tx(state, spec, now);
  const awaiting = state.awaiting;
  // A measurement that outlived its step (operator pause, abort, new revision) is dropped.
  if (awaiting?.kind !== "measure" || awaiting.id !== id || state.analysis === null) return run(tx);
  const results = samples.map((sample) => evaluateGate(spec.gates, sample));
  for (const result of results) {
    tx.decisions.push({
      ...result,
      at: now,
      revision: state.revision,
      step: state.stepIndex,
      context: awaiting.context,
      measurement: id,
    });
  }
  const outcome = combineOutcomes(results);
  const summary = results
    .filter((r) => r.outcome === outcome)
    .map((r) => `${r.gate}: ${r.message}`)
    .join("; ");
  const progress = state.analysis;
  tx.set({ awaiting: null });
  if (awaiting.context === "watch") {
    if (outcome === "failed") {
      stop(tx, "DEGRADED", "WatchWindowGateFailed", `reverted to ${spec.baseline}: ${summary}`);
    } else {
      tx.set({
        analysis: {
          taken: progress.taken + (outcome === "error" ? 0 : 1),
          nextAt: now + watchIntervalMs(spec),
          consecutiveErrors: outcome === "error" ? progress.consecutiveErrors + 1 : 0,
        },
      });
    }
    return run(tx);
  }
  const step = spec.steps[state.stepIndex]?.analysis;
  if (step === undefined) return run(tx);
  const interval = durationToMs(step.interval);
  if (outcome === "error") {
    const errors = progress.consecutiveErrors + 1;
    if (errors > spec.consecutiveErrorLimit) {
      const message = `${errors} consecutive measurement errors > consecutiveErrorLimit ${spec.consecutiveErrorLimit}: ${summary}`;
      stop(tx, "ABORTED", "MeasurementErrors", message);
    } else {
      tx.set({ analysis: { ...progress, consecutiveErrors: errors, nextAt: now + interval } });
    }
    return run(tx);
  }
  if (outcome === "inconclusive") {
    const inconclusive = state.inconclusive + 1;
    tx.set({ inconclusive });
    if (inconclusive > spec.inconclusiveLimit) {
      const message = `${inconclusive} inconclusive measurements > inconclusiveLimit ${spec.inconclusiveLimit}: ${summary}`;
      stop(tx, "ABORTED", "InconclusiveLimitExceeded", message);
    } else {
      // Resume re-runs this analysis step from its first measurement.
      tx.set({
        phase: "PAUSED",
        reason: "AnalysisInconclusive",
        message: `${summary} (resume to measure again)`,
        analysis: null,
        resumeAt: null,
      });
    }
    return run(tx);
  }
  if (outcome === "failed") {
    const failed = state.failed + 1;
    tx.set({ failed });
    if (failed > spec.failureLimit) {
      const message = `${summary} (${failed} failed > failureLimit ${spec.failureLimit}); traffic back to ${spec.baseline}`;
      stop(tx, "ABORTED", "GateFailed", message);
      return run(tx);
    }
  }
  const taken = progress.taken + 1;
  if (taken >= step.count) {
    tx.set({ reason: "AnalysisSuccessful", message: `analysis passed (${taken}/${step.count})` });
    nextStep(tx);
  } else {
    tx.set({ analysis: { taken, nextAt: now + interval, consecutiveErrors: 0 } });
  }
  return run(tx);
}

/** Operator pause: hold until resumed (also turns a timed pause into an open-ended one). */
export function pause(
  state: RolloutState,
  spec: RolloutSpec,
  now: number,
  message = "paused by operator",
): Transition {
  if (state.phase !== "PROGRESSING" && state.phase !== "PAUSED") {
    throw new RolloutError("FAILED_PRECONDITION", `cannot pause a ${state.phase} rollout`);
  }
  const tx = new Tx(state, spec, now);
  tx.set({
    phase: "PAUSED",
    reason: "PausedByOperator",
    message,
    resumeAt: null,
    awaiting: state.awaiting?.kind === "measure" ? null : state.awaiting,
  });
  return run(tx);
}

/** Operator resume of a PAUSED rollout: a pause step is done, an analysis step measures again. */
export function resume(state: RolloutState, spec: RolloutSpec, now: number): Transition {
  if (state.phase !== "PAUSED") {
    throw new RolloutError("FAILED_PRECONDITION", `cannot resume a ${state.phase} rollout`);
  }
  const tx = new Tx(state, spec, now);
  resumeInternal(tx, "Resumed", "resumed by operator");
  return run(tx);
}

/** Operator promote: skip the remaining steps and give the candidate all traffic. */
export function promote(state: RolloutState, spec: RolloutSpec, now: number): Transition {
  if (state.phase !== "PROGRESSING" && state.phase !== "PAUSED") {
    const hint =
      state.phase === "PROMOTED" ? "it is already promoted" : "apply the spec again to retry it";
    throw new RolloutError(
      "FAILED_PRECONDITION",
      `cannot promote a ${state.phase} rollout: ${hint}`,
    );
  }
  const tx = new Tx(state, spec, now);
  enterPromoted(tx, "PromotedByOperator", "promoted by operator, remaining steps skipped");
  return run(tx);
}

/** Operator abort: all traffic back to the baseline at once. */
export function abort(
  state: RolloutState,
  spec: RolloutSpec,
  now: number,
  message = "aborted by operator",
): Transition {
  if (state.phase !== "PROGRESSING" && state.phase !== "PAUSED") {
    const hint = state.phase === "PROMOTED" ? "; use rollback to serve an earlier revision" : "";
    throw new RolloutError("FAILED_PRECONDITION", `cannot abort a ${state.phase} rollout${hint}`);
  }
  const tx = new Tx(state, spec, now);
  stop(tx, "ABORTED", "AbortedByOperator", `${message}; traffic back to ${spec.baseline}`);
  return run(tx);
}

/** When the machine next needs a `tick`, or null when it waits on an effect or an operator. */
export function wakeAt(state: RolloutState): number | null {
  if (state.awaiting !== null) return null;
  if (state.phase === "PAUSED") return state.resumeAt;
  if (state.phase === "PROGRESSING") return state.analysis?.nextAt ?? null;
  if (state.phase === "PROMOTED" && state.watchUntil !== null && state.analysis !== null) {
    return Math.min(state.watchUntil, state.analysis.nextAt);
  }
  return null;
}

/** The variants that get traffic at `weight` % on the candidate (each must be loaded first). */
export function servingVariants(spec: RolloutSpec, weight: number): string[] {
  return [...(weight > 0 ? [spec.candidate] : []), ...(weight < 100 ? [spec.baseline] : [])];
}

/** Gates configured in the spec, in {@link GATE_NAMES} order. */
export function configuredGates(spec: RolloutSpec): GateName[] {
  return GATE_NAMES.filter((gate) => spec.gates[gate] !== undefined);
}

/** Interval between watch-window measurements: the last analysis step's, else one minute. */
export function watchIntervalMs(spec: RolloutSpec): number {
  const last = spec.steps.findLast((step) => step.analysis !== undefined)?.analysis;
  return durationToMs(last?.interval ?? "1m");
}

/** Accumulates one transition: the state as it changes, and what the driver must do. */
class Tx {
  readonly actions: Action[] = [];
  readonly history: HistoryEntry[] = [];
  readonly decisions: Decision[] = [];

  constructor(
    public s: RolloutState,
    readonly spec: RolloutSpec,
    readonly now: number,
  ) {}

  /** Change the state; a change of phase, reason or weight is a history entry (steps set reasons). */
  set(patch: Partial<RolloutState>): void {
    const before = this.s;
    const after = { ...before, ...patch };
    if (after.phase !== before.phase) after.since = this.now;
    this.s = after;
    if (
      after.phase !== before.phase ||
      after.reason !== before.reason ||
      after.weight !== before.weight
    ) {
      this.record();
    }
  }

  record(): void {
    const s = this.s;
    this.history.push({
      at: this.now,
      revision: s.revision,
      phase: s.phase,
      reason: s.reason,
      message: s.message,
      step: s.stepIndex,
      weight: s.weight,
    });
  }

  done(): Transition {
    return {
      state: this.s,
      actions: this.actions,
      history: this.history,
      decisions: this.decisions,
    };
  }
}

function initialState(
  name: string,
  revision: string,
  now: number,
  previous: RolloutState | undefined,
  start: Pick<RolloutState, "phase" | "reason" | "message" | "stepIndex" | "weight">,
): RolloutState {
  return {
    name,
    revision,
    ...start,
    since: now,
    stepStartedAt: now,
    appliedWeight: null,
    weightAppliedAt: now,
    loaded: [],
    failedLoads: [],
    awaiting: null,
    resumeAt: null,
    analysis: null,
    failed: 0,
    inconclusive: 0,
    watchUntil: null,
    measurementSeq: previous?.measurementSeq ?? 0,
  };
}

/** Run until the machine waits on an effect, the clock or an operator. */
function run(tx: Tx): Transition {
  for (let i = 0; i < 10_000; i++) {
    if (!reconcileTraffic(tx)) break;
    if (tx.s.awaiting !== null) break;
    if (!stepOnce(tx)) break;
  }
  return tx.done();
}

/**
 * Hand the desired weight to the traffic target once every variant that gets traffic is loaded.
 * Returns false while waiting for a load.
 */
function reconcileTraffic(tx: Tx): boolean {
  const s = tx.s;
  if (s.appliedWeight === s.weight) return true;
  for (const variant of servingVariants(tx.spec, s.weight)) {
    if (s.loaded.includes(variant)) continue;
    if (s.failedLoads.includes(variant)) return false;
    if (s.awaiting === null) {
      tx.set({ awaiting: { kind: "load", variant } });
      tx.actions.push({ type: "load", variant });
    }
    return false;
  }
  tx.set({ appliedWeight: s.weight, weightAppliedAt: tx.now });
  tx.actions.push({ type: "setWeight", weight: s.weight });
  return true;
}

/** Do one thing the current phase and step call for; false when nothing is due now. */
function stepOnce(tx: Tx): boolean {
  const s = tx.s;
  switch (s.phase) {
    case "PAUSED":
      if (s.resumeAt !== null && tx.now >= s.resumeAt) {
        resumeInternal(tx, "PauseElapsed", "pause duration elapsed");
        return true;
      }
      return false;
    case "PROGRESSING":
      return progressStep(tx);
    case "PROMOTED":
      return watchStep(tx);
    default:
      return false;
  }
}

function progressStep(tx: Tx): boolean {
  const s = tx.s;
  const steps = tx.spec.steps;
  const step = steps[s.stepIndex];
  if (step === undefined) {
    enterPromoted(tx, "Promoted", `all ${steps.length} steps completed`);
    return true;
  }
  if (step.setWeight !== undefined) {
    if (s.weight !== step.setWeight) {
      tx.set({
        weight: step.setWeight,
        reason: "SetWeight",
        message: `candidate weight ${step.setWeight}%`,
      });
      return true;
    }
    if (s.appliedWeight !== s.weight) return false;
    nextStep(tx);
    return true;
  }
  if (step.pause !== undefined) {
    const duration = step.pause.duration;
    tx.set({
      phase: "PAUSED",
      reason: "PauseStep",
      message: duration === undefined ? "paused until resumed" : `pausing for ${duration}`,
      resumeAt: duration === undefined ? null : tx.now + durationToMs(duration),
    });
    return true;
  }
  if (step.analysis === undefined) return false;
  if (s.analysis === null) {
    const gates = step.analysis.gates ?? configuredGates(tx.spec);
    tx.set({
      reason: "Analysis",
      message: `checking ${gates.join(", ")}: ${step.analysis.count} measurement(s), every ${step.analysis.interval}`,
      analysis: { taken: 0, nextAt: tx.now, consecutiveErrors: 0 },
    });
  }
  const progress = tx.s.analysis;
  if (progress !== null && tx.now >= progress.nextAt) {
    requestMeasurement(tx, "analysis", step.analysis.gates ?? configuredGates(tx.spec));
  }
  return false;
}

function watchStep(tx: Tx): boolean {
  const s = tx.s;
  if (s.watchUntil === null || s.analysis === null) return false;
  if (tx.now >= s.watchUntil) {
    tx.set({
      watchUntil: null,
      analysis: null,
      reason: "WatchWindowPassed",
      message: `watch window passed after ${s.analysis.taken} measurement(s)`,
    });
    return true;
  }
  if (tx.now >= s.analysis.nextAt) requestMeasurement(tx, "watch", configuredGates(tx.spec));
  return false;
}

function requestMeasurement(tx: Tx, context: MeasurementContext, gates: readonly GateName[]): void {
  const id = tx.s.measurementSeq + 1;
  tx.set({ measurementSeq: id, awaiting: { kind: "measure", id, context } });
  tx.actions.push({ type: "measure", id, context, gates, since: tx.s.weightAppliedAt });
}

function nextStep(tx: Tx): void {
  tx.set({
    stepIndex: tx.s.stepIndex + 1,
    stepStartedAt: tx.now,
    analysis: null,
    resumeAt: null,
  });
}

function resumeInternal(tx: Tx, reason: string, message: string): void {
  const atPauseStep = tx.spec.steps[tx.s.stepIndex]?.pause !== undefined;
  tx.set({ phase: "PROGRESSING", reason, message, resumeAt: null });
  if (atPauseStep) nextStep(tx);
}

function enterPromoted(tx: Tx, reason: string, message: string): void {
  const watchMs = durationToMs(tx.spec.watchWindow);
  const watching = watchMs > 0 && configuredGates(tx.spec).length > 0;
  tx.set({
    phase: "PROMOTED",
    reason,
    message,
    stepIndex: tx.spec.steps.length,
    weight: 100,
    resumeAt: null,
    awaiting: tx.s.awaiting?.kind === "measure" ? null : tx.s.awaiting,
    watchUntil: watching ? tx.now + watchMs : null,
    analysis: watching
      ? { taken: 0, nextAt: tx.now + watchIntervalMs(tx.spec), consecutiveErrors: 0 }
      : null,
  });
}

/** End the rollout with every request on the baseline. */
function stop(tx: Tx, phase: "ABORTED" | "DEGRADED", reason: string, message: string): void {
  tx.set({
    phase,
    reason,
    message,
    weight: 0,
    resumeAt: null,
    analysis: null,
    watchUntil: null,
    awaiting: tx.s.awaiting?.kind === "measure" ? null : tx.s.awaiting,
  });
}

function isLoadOf(awaiting: Awaiting | null, variant: string): boolean {
  return awaiting?.kind === "load" && awaiting.variant === variant;
}
