/**
 * A {@link Measurements} provider over live sources: the router's request outcomes (latency, error
 * rate), the workers' per-layer counters (fallback rate vs its calibrated envelope), and an
 * accuracy scorer (Evaluate jobs on the eval set). The control plane wires the sources; this file
 * only turns their numbers into gate samples.
 */

import type { RequestStats, WindowStats } from "../router/request-stats.js";
import type {
  AccuracySample,
  ErrorSample,
  EvalSetRef,
  FallbackSample,
  LatencySample,
  LayerFallback,
  MeasurementQuery,
  Measurements,
  VariantLatency,
} from "./measurements.js";

/**
 * One layer's counters as a WorkerService.Stats reply carries them (proto-loader objects:
 * camelCase, 64-bit integers as strings).
 */
export interface WorkerLayerCounters {
  readonly layer: number;
  readonly tokens: string | number;
  readonly fallbackRate?: number | undefined;
  readonly calibratedFallbackRate?: number | undefined;
}

/** Where live numbers come from. */
export interface LiveSources {
  /** Outcomes of routed requests (the Router's RequestStats). */
  readonly requests: RequestStats;
  /** The variant's layer counters from every worker that has it loaded (WorkerService.Stats). */
  readonly layerCounters: (variant: string) => Promise<readonly WorkerLayerCounters[]>;
  /** Score baseline and candidate on the eval set (perplexity, cloze, samples). */
  readonly accuracy: (query: MeasurementQuery, evalSet: EvalSetRef) => Promise<AccuracySample>;
}

/** Measurements from live sources; accuracy is scored once per (baseline, candidate, eval set). */
export class LiveMeasurements implements Measurements {
  private readonly scored = new Map<string, Promise<AccuracySample>>();

  constructor(private readonly sources: LiveSources) {}

  accuracy(query: MeasurementQuery, evalSet: EvalSetRef): Promise<AccuracySample> {
    // Variants are immutable and the eval set fixed, so the score cannot change: score once.
    const key = JSON.stringify([query.baseline, query.candidate, evalSet.path, evalSet.builtin]);
    let score = this.scored.get(key);
    if (score === undefined) {
      score = this.sources.accuracy(query, evalSet);
      this.scored.set(key, score);
      // A failed scoring is a measurement error, retried next time.
      score.catch(() => this.scored.delete(key));
    }
    return score;
  }

  async latency(query: MeasurementQuery): Promise<LatencySample> {
    const { requests } = this.sources;
    return {
      baseline: latencyOf(requests.window(query.baseline, query.since)),
      candidate: latencyOf(requests.window(query.candidate, query.since)),
    };
  }

  async errorRate(query: MeasurementQuery): Promise<ErrorSample> {
    const window = this.sources.requests.window(query.candidate, query.since);
    return { requests: window.requests, errors: window.errors };
  }

  async fallbackRate(query: MeasurementQuery): Promise<FallbackSample> {
    return fallbackSampleFromCounters(await this.sources.layerCounters(query.candidate));
  }
}

/**
 * Per-layer live fallback rate over the counters of several workers (token-weighted), next to the
 * calibrated rate the worker reports from the variant manifest.
 */
export function fallbackSampleFromCounters(
  counters: readonly WorkerLayerCounters[],
): FallbackSample {
  const byLayer = new Map<number, { tokens: number; flagged: number; calibrated: number | null }>();
  for (const c of counters) {
    const tokens = Number(c.tokens);
    const entry = byLayer.get(c.layer) ?? { tokens: 0, flagged: 0, calibrated: null };
    if (tokens > 0 && c.fallbackRate !== undefined) {
      entry.tokens += tokens;
      entry.flagged += c.fallbackRate * tokens;
    }
    entry.calibrated ??= c.calibratedFallbackRate ?? null;
    byLayer.set(c.layer, entry);
  }
  const layers: LayerFallback[] = [...byLayer.entries()]
    .sort(([a], [b]) => a - b)
    .map(([layer, e]) => ({
      layer,
      tokens: e.tokens,
      liveRate: e.tokens > 0 ? e.flagged / e.tokens : null,
      calibratedRate: e.calibrated,
    }));
  return { layers };
}

function latencyOf(window: WindowStats): VariantLatency {
  // Latency is judged on successful requests only; errors are the errorRate gate's business.
  return {
    requests: window.requests - window.errors,
    tokensPerSec: window.tokensPerSec,
    ttftMs: window.ttftMs,
  };
}
