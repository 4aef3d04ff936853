/**
 * Gate evaluation: one gate's thresholds against one sample → successful, failed or inconclusive,
 * with every measured value and threshold kept for the decision log. Pure functions.
 */

import type { GateName, Rollout } from "../config/index.js";
import type {
  AccuracySample,
  ErrorSample,
  FallbackSample,
  GateSample,
  LatencySample,
} from "./measurements.js";

/** Outcome of one gate evaluation; `error` means the value could not be measured. */
export type GateOutcome = "successful" | "failed" | "inconclusive" | "error";

/** The gates block of a Rollout spec. */
export type GatesSpec = Rollout["spec"]["gates"];

/** One layer's check of the fallback-rate gate. */
export interface LayerCheck {
  readonly layer: number;
  readonly liveRate: number;
  readonly calibratedRate: number;
  /** envelopeFactor × calibratedRate: the most the live rate may be. */
  readonly limit: number;
  readonly withinEnvelope: boolean;
}

/** One gate evaluation, as the decision log stores it. */
export interface GateResult {
  readonly gate: GateName;
  readonly outcome: GateOutcome;
  /** Measured values by name (ratios, rates, sample counts); may be ±Infinity or NaN. */
  readonly measured: Readonly<Record<string, number>>;
  /** Thresholds by name, as configured. */
  readonly thresholds: Readonly<Record<string, number>>;
  /** Why, in words a person can act on. */
  readonly message: string;
  /** Fallback-rate gate only: each judged layer. */
  readonly layers?: readonly LayerCheck[];
}

/** Evaluate the gate a sample belongs to; a sample with an error is an `error` outcome. */
export function evaluateGate(gates: GatesSpec, sample: GateSample): GateResult {
  const thresholds = thresholdsOf(gates, sample.gate);
  if ("error" in sample) {
    return {
      gate: sample.gate,
      outcome: "error",
      measured: {},
      thresholds,
      message: `measurement failed: ${sample.error}`,
    };
  }
  switch (sample.gate) {
    case "accuracy":
      return accuracyGate(required(gates.accuracy, "accuracy"), sample.sample, thresholds);
    case "latency":
      return latencyGate(required(gates.latency, "latency"), sample.sample, thresholds);
    case "errorRate":
      return errorRateGate(required(gates.errorRate, "errorRate"), sample.sample, thresholds);
    case "fallbackRate":
      return fallbackGate(required(gates.fallbackRate, "fallbackRate"), sample.sample, thresholds);
  }
}

/** The configured thresholds of a gate, flattened to numbers. */
export function thresholdsOf(gates: GatesSpec, gate: GateName): Record<string, number> {
  const out: Record<string, number> = {};
  const put = (key: string, value: number | undefined): void => {
    if (value !== undefined) out[key] = value;
  };
  switch (gate) {
    case "accuracy":
      put("maxPerplexityRatio", gates.accuracy?.maxPerplexityRatio);
      put("maxClozeDrop", gates.accuracy?.maxClozeDrop);
      put("minSamples", gates.accuracy?.minSamples);
      break;
    case "latency":
      put("minTokensPerSecRatio", gates.latency?.minTokensPerSecRatio);
      put("maxTtftRatio", gates.latency?.maxTtftRatio);
      break;
    case "errorRate":
      put("max", gates.errorRate?.max);
      break;
    case "fallbackRate":
      put("envelopeFactor", gates.fallbackRate?.envelopeFactor);
      break;
  }
  return out;
}

/** The combined outcome of one measurement: failed beats error beats inconclusive. */
export function combineOutcomes(results: readonly GateResult[]): GateOutcome {
  const has = (outcome: GateOutcome): boolean => results.some((r) => r.outcome === outcome);
  if (has("failed")) return "failed";
  if (has("error")) return "error";
  if (has("inconclusive")) return "inconclusive";
  return "successful";
}

function required<T>(value: T | undefined, gate: GateName): T {
  // The Rollout schema only lets analysis steps name configured gates.
  if (value === undefined) throw new Error(`gate ${gate} is not configured in spec.gates`);
  return value;
}

type Thresholds = Readonly<Record<string, number>>;

function accuracyGate(
  gate: NonNullable<GatesSpec["accuracy"]>,
  s: AccuracySample,
  thresholds: Thresholds,
): GateResult {
  const measured: Record<string, number> = {
    samples: s.samples,
    baselinePerplexity: s.baselinePerplexity,
    candidatePerplexity: s.candidatePerplexity,
  };
  const base = { gate: "accuracy" as const, measured, thresholds };
  if (s.samples < gate.minSamples) {
    return {
      ...base,
      outcome: "inconclusive",
      message: `${s.samples} samples < minSamples ${gate.minSamples}`,
    };
  }
  const problems: string[] = [];
  if (gate.maxPerplexityRatio !== undefined) {
    // An exploded (non-finite) perplexity is a failure, not a missing value.
    const ratio = Number.isFinite(s.candidatePerplexity)
      ? s.candidatePerplexity / s.baselinePerplexity
      : Number.POSITIVE_INFINITY;
    measured.perplexityRatio = ratio;
    if (!(ratio <= gate.maxPerplexityRatio)) {
      problems.push(`perplexity ratio ${fmt(ratio)} > max ${gate.maxPerplexityRatio}`);
    }
  }
  if (gate.maxClozeDrop !== undefined) {
    if (s.baselineCloze === undefined || s.candidateCloze === undefined) {
      return {
        ...base,
        outcome: "inconclusive",
        message: "cloze accuracy was not measured but maxClozeDrop is set",
      };
    }
    const drop = s.baselineCloze - s.candidateCloze;
    measured.baselineCloze = s.baselineCloze;
    measured.candidateCloze = s.candidateCloze;
    measured.clozeDrop = drop;
    if (!(drop <= gate.maxClozeDrop)) {
      problems.push(`cloze drop ${fmt(drop)} > max ${gate.maxClozeDrop}`);
    }
  }
  return verdict(base, problems, "perplexity and cloze within limits");
}

function latencyGate(
  gate: NonNullable<GatesSpec["latency"]>,
  s: LatencySample,
  thresholds: Thresholds,
): GateResult {
  const measured: Record<string, number> = {
    baselineRequests: s.baseline.requests,
    candidateRequests: s.candidate.requests,
    baselineTokensPerSec: s.baseline.tokensPerSec,
    candidateTokensPerSec: s.candidate.tokensPerSec,
    baselineTtftMs: s.baseline.ttftMs,
    candidateTtftMs: s.candidate.ttftMs,
  };
  const base = { gate: "latency" as const, measured, thresholds };
  if (s.baseline.requests === 0 || s.candidate.requests === 0) {
    return {
      ...base,
      outcome: "inconclusive",
      message: "no requests served by the baseline or the candidate in the window",
    };
  }
  const problems: string[] = [];
  if (gate.minTokensPerSecRatio !== undefined) {
    const ratio = s.candidate.tokensPerSec / s.baseline.tokensPerSec;
    measured.tokensPerSecRatio = ratio;
    if (!(ratio >= gate.minTokensPerSecRatio)) {
      problems.push(`tokens/s ratio ${fmt(ratio)} < min ${gate.minTokensPerSecRatio}`);
    }
  }
  if (gate.maxTtftRatio !== undefined) {
    const ratio = s.candidate.ttftMs / s.baseline.ttftMs;
    measured.ttftRatio = ratio;
    if (!(ratio <= gate.maxTtftRatio)) {
      problems.push(`TTFT ratio ${fmt(ratio)} > max ${gate.maxTtftRatio}`);
    }
  }
  return verdict(base, problems, "tokens/s and TTFT within limits");
}

function errorRateGate(
  gate: NonNullable<GatesSpec["errorRate"]>,
  s: ErrorSample,
  thresholds: Thresholds,
): GateResult {
  const measured: Record<string, number> = { requests: s.requests, errors: s.errors };
  const base = { gate: "errorRate" as const, measured, thresholds };
  if (s.requests === 0) {
    return { ...base, outcome: "inconclusive", message: "no candidate requests in the window" };
  }
  const rate = s.errors / s.requests;
  measured.errorRate = rate;
  const problems = rate > gate.max ? [`error rate ${fmt(rate)} > max ${gate.max}`] : [];
  return verdict(base, problems, "error rate within limit");
}

function fallbackGate(
  gate: NonNullable<GatesSpec["fallbackRate"]>,
  s: FallbackSample,
  thresholds: Thresholds,
): GateResult {
  const layers: LayerCheck[] = [];
  for (const layer of s.layers) {
    if (layer.tokens <= 0 || layer.liveRate === null || layer.calibratedRate === null) continue;
    const limit = gate.envelopeFactor * layer.calibratedRate;
    layers.push({
      layer: layer.layer,
      liveRate: layer.liveRate,
      calibratedRate: layer.calibratedRate,
      limit,
      withinEnvelope: layer.liveRate <= limit,
    });
  }
  const measured: Record<string, number> = { layers: layers.length };
  const base = { gate: "fallbackRate" as const, measured, thresholds, layers };
  if (layers.length === 0) {
    return {
      ...base,
      outcome: "inconclusive",
      message: "no layer has both a live fallback rate and a calibrated one yet",
    };
  }
  const over = layers.filter((l) => !l.withinEnvelope);
  // The layer furthest outside (or closest to the edge of) its envelope.
  const worst = layers.reduce((a, b) => (excess(b) > excess(a) ? b : a));
  measured.layersOverEnvelope = over.length;
  measured.worstLayer = worst.layer;
  measured.worstLiveRate = worst.liveRate;
  measured.worstCalibratedRate = worst.calibratedRate;
  measured.worstRatio = worst.liveRate / worst.calibratedRate;
  const problems =
    over.length === 0
      ? []
      : [
          `${over.length}/${layers.length} layers above ${gate.envelopeFactor}× their calibrated ` +
            `fallback rate (worst: layer ${worst.layer}, live ${fmt(worst.liveRate)} vs ` +
            `calibrated ${fmt(worst.calibratedRate)})`,
        ];
  return verdict(base, problems, "every layer inside its calibrated envelope");
}

function excess(check: LayerCheck): number {
  return check.limit > 0 ? check.liveRate / check.limit : check.liveRate > 0 ? Infinity : 0;
}

function verdict<B extends Omit<GateResult, "outcome" | "message">>(
  base: B,
  problems: readonly string[],
  ok: string,
): GateResult {
  return problems.length > 0
    ? { ...base, outcome: "failed", message: problems.join("; ") }
    : { ...base, outcome: "successful", message: ok };
}

function fmt(value: number): string {
  return Number.isFinite(value) ? String(Number(value.toPrecision(4))) : String(value);
}
