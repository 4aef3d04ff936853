/** Domain objects (rollout status, history, decisions, jobs, variants) → ControlPlane messages. */

import type { Timestamp } from "../gen/google/protobuf/Timestamp.js";
import type { GateDecision } from "../gen/tardis/v1/GateDecision.js";
import type { Job as JobMessage } from "../gen/tardis/v1/Job.js";
import type { Rollout as RolloutMessage } from "../gen/tardis/v1/Rollout.js";
import type { RolloutHistoryEntry } from "../gen/tardis/v1/RolloutHistoryEntry.js";
import type { RolloutRevision } from "../gen/tardis/v1/RolloutRevision.js";
import type { Variant as VariantMessage } from "../gen/tardis/v1/Variant.js";
import type { Job } from "../jobs/job-store.js";
import type {
  RevisionRecord,
  RolloutStatus,
  StoredDecision,
  StoredHistoryEntry,
} from "../rollouts/index.js";
import type { Variant } from "../variants/registry.js";

/** ms since the epoch (or an ISO string) → google.protobuf.Timestamp. */
export function timestamp(at: number | string | null | undefined): Timestamp | null {
  if (at === null || at === undefined) return null;
  const ms = typeof at === "number" ? at : Date.parse(at);
  if (!Number.isFinite(ms)) return null;
  const seconds = Math.floor(ms / 1000);
  return { seconds: String(seconds), nanos: Math.round((ms - seconds * 1000) * 1e6) };
}

/** Timestamp → ms since the epoch (0 when unset). */
export function millis(ts: { seconds?: string | number | null; nanos?: number | null } | null) {
  if (!ts) return 0;
  return Number(ts.seconds ?? 0) * 1000 + Math.round(Number(ts.nanos ?? 0) / 1e6);
}

export function rolloutMessage(s: RolloutStatus): RolloutMessage {
  return {
    name: s.name,
    revision: s.revision,
    revisionNumber: s.revisionNumber,
    phase: `ROLLOUT_PHASE_${s.phase}`,
    reason: s.reason,
    message: s.message,
    since: timestamp(s.since),
    baseline: s.baseline,
    candidate: s.candidate,
    step: s.step,
    steps: s.steps,
    stepKind: s.stepKind ?? "",
    weight: s.weight,
    ...(s.appliedWeight === null ? {} : { appliedWeight: s.appliedWeight }),
    failed: s.failed,
    inconclusive: s.inconclusive,
    resumeAt: timestamp(s.resumeAt),
    watchUntil: timestamp(s.watchUntil),
    waitingFor: s.waitingFor ?? "",
  };
}

export function revisionMessage(r: RevisionRecord): RolloutRevision {
  return {
    revision: r.revision,
    number: r.number,
    specJson: JSON.stringify(r.spec),
    appliedAt: timestamp(r.appliedAt),
    promotedAt: timestamp(r.promotedAt),
  };
}

export function historyMessage(h: StoredHistoryEntry): RolloutHistoryEntry {
  return {
    seq: String(h.seq),
    time: timestamp(h.at),
    revision: h.revision,
    phase: `ROLLOUT_PHASE_${h.phase}`,
    reason: h.reason,
    message: h.message,
    step: h.step,
    weight: h.weight,
  };
}

export function decisionMessage(d: StoredDecision): GateDecision {
  return {
    seq: String(d.seq),
    time: timestamp(d.at),
    revision: d.revision,
    step: d.step,
    context: d.context,
    measurement: String(d.measurement),
    gate: d.gate,
    outcome: `GATE_OUTCOME_${d.outcome.toUpperCase()}` as NonNullable<GateDecision["outcome"]>,
    measured: { ...d.measured },
    thresholds: { ...d.thresholds },
    message: d.message,
    layers: (d.layers ?? []).map((l) => ({
      layer: l.layer,
      liveRate: l.liveRate,
      calibratedRate: l.calibratedRate,
      limit: l.limit,
      withinEnvelope: l.withinEnvelope,
    })),
  };
}

export function jobMessage(job: Job, seq: number): JobMessage {
  const result = (job.result ?? {}) as { metrics?: Record<string, number> };
  return {
    id: job.id,
    kind: job.kind,
    name: job.name,
    requestId: job.requestId ?? "",
    state: `JOB_STATE_${job.state}` as NonNullable<JobMessage["state"]>,
    reason: job.reason,
    message: job.message,
    since: timestamp(job.since),
    createdAt: timestamp(job.createdAt),
    seq: String(seq),
    attempts: job.attempts,
    variantId: job.variantId ?? "",
    ...(result.metrics ? { metrics: result.metrics } : {}),
  };
}

export function variantMessage(v: Variant, loadedOn: readonly string[]): VariantMessage {
  return {
    id: v.id,
    name: v.name,
    jobId: v.jobId,
    path: v.path,
    basePath: v.basePath,
    family: v.family,
    method: v.method,
    metrics: v.metrics,
    comparison: [...v.comparison] as unknown as NonNullable<VariantMessage["comparison"]>,
    state: loadedOn.length > 0 ? "VARIANT_STATE_LOADED" : "VARIANT_STATE_REGISTERED",
    createdAt: timestamp(v.createdAt),
    loadedOn: [...loadedOn],
  };
}
