/**
 * What an analysis measures, and the interface that measures it. The engine never talks to workers
 * or telemetry itself: the control plane passes a {@link Measurements} provider (worker Evaluate
 * jobs for accuracy, router and worker Stats counters for latency, errors and fallback rates).
 */

import type { GateName } from "../config/index.js";

/** Which rollout a measurement is for, and the window of live traffic it should cover. */
export interface MeasurementQuery {
  readonly rollout: string;
  readonly revision: string;
  readonly baseline: string;
  readonly candidate: string;
  /** Start of the window, ms since the epoch: when the current traffic split was applied. */
  readonly since: number;
  readonly now: number;
}

/** Candidate vs baseline on one named eval set. */
export interface AccuracySample {
  /** Scored samples (tokens for perplexity, items for cloze) behind the numbers below. */
  readonly samples: number;
  readonly baselinePerplexity: number;
  readonly candidatePerplexity: number;
  /** Cloze accuracies in [0, 1]; needed when the gate sets `maxClozeDrop`. */
  readonly baselineCloze?: number;
  readonly candidateCloze?: number;
}

/** Live latency of both variants over the window. */
export interface LatencySample {
  readonly baseline: VariantLatency;
  readonly candidate: VariantLatency;
}

/** Latency of one variant: means over the requests it served in the window. */
export interface VariantLatency {
  readonly requests: number;
  readonly tokensPerSec: number;
  readonly ttftMs: number;
}

/** Candidate requests and how many of them failed, over the window. */
export interface ErrorSample {
  readonly requests: number;
  readonly errors: number;
}

/** Live fallback rate of one folded layer next to the rate its calibration predicts. */
export interface LayerFallback {
  readonly layer: number;
  /** Tokens the live rate was measured on; layers with 0 tokens are not judged. */
  readonly tokens: number;
  /** flagged / (tokens × neurons) on live traffic; null before any token. */
  readonly liveRate: number | null;
  /** Held-out (calibrated) fallback rate from the variant manifest; null when unknown. */
  readonly calibratedRate: number | null;
}

/** Per-layer live and calibrated fallback rates of the candidate. */
export interface FallbackSample {
  readonly layers: readonly LayerFallback[];
}

/** The sample type each gate reads. */
export interface GateSamples {
  readonly accuracy: AccuracySample;
  readonly latency: LatencySample;
  readonly errorRate: ErrorSample;
  readonly fallbackRate: FallbackSample;
}

/**
 * Source of measurements. A method that throws (metric unavailable, worker down) counts as a
 * measurement error, not as a failed gate; `consecutiveErrorLimit` bounds how many in a row.
 */
export interface Measurements {
  /** Score both variants on `evalSet` (a path or builtin corpus name). */
  accuracy(query: MeasurementQuery, evalSet: EvalSetRef): Promise<AccuracySample>;
  latency(query: MeasurementQuery): Promise<LatencySample>;
  errorRate(query: MeasurementQuery): Promise<ErrorSample>;
  fallbackRate(query: MeasurementQuery): Promise<FallbackSample>;
}

/** An eval set as the Rollout spec names it. */
export interface EvalSetRef {
  readonly path?: string | undefined;
  readonly builtin?: string | undefined;
}

/** What one gate's provider call returned: a sample, or the error that kept it from measuring. */
export type GateSample =
  | { readonly [G in GateName]: { readonly gate: G; readonly sample: GateSamples[G] } }[GateName]
  | { readonly gate: GateName; readonly error: string };
