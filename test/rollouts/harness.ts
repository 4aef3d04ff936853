/**
 * A rollout engine over real parts: SQLite in a temp folder, the real Router over a worker pool,
 * and scripted measurements and loader (the parts that would call Python workers).
 */

import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DOCUMENT_SCHEMAS, type Rollout } from "../../control-plane/src/config/index.js";
import {
  type AccuracySample,
  type ErrorSample,
  type FallbackSample,
  type LatencySample,
  type MeasurementQuery,
  type Measurements,
  RolloutEngine,
  SqliteRolloutStore,
  type VariantLoader,
} from "../../control-plane/src/rollouts/index.js";
import { Router, StaticWorkerPool } from "../../control-plane/src/router/index.js";

export const BASELINE = "dense-tiny-gpt2";
export const CANDIDATE = "tardis-tiny-gpt2-3f9c2a7d";

/** A clock that moves only when told. */
export class ManualClock {
  constructor(public t = Date.UTC(2026, 10, 28, 12, 0, 0)) {}
  now(): number {
    return this.t;
  }
  advance(ms: number): void {
    this.t += ms;
  }
}

/** A healthy candidate: same perplexity and cloze, faster, few errors, fallback inside envelope. */
export function goodSamples(): {
  accuracy: AccuracySample;
  latency: LatencySample;
  errorRate: ErrorSample;
  fallbackRate: FallbackSample;
} {
  return {
    accuracy: {
      samples: 4096,
      baselinePerplexity: 31.2,
      candidatePerplexity: 31.9,
      baselineCloze: 0.61,
      candidateCloze: 0.6,
    },
    latency: {
      baseline: { requests: 120, tokensPerSec: 50, ttftMs: 40 },
      candidate: { requests: 30, tokensPerSec: 61, ttftMs: 41 },
    },
    errorRate: { requests: 30, errors: 0 },
    fallbackRate: {
      layers: [0, 1, 2, 3].map((layer) => ({
        layer,
        tokens: 2000,
        liveRate: 0.05 + 0.01 * layer,
        calibratedRate: 0.05 + 0.01 * layer,
      })),
    },
  };
}

type Scripted<T> = T | Error | (() => T | Error);

/** Measurements whose answers the test sets (a value, an error to throw, or a function). */
export class ScriptedMeasurements implements Measurements {
  readonly queries: { gate: string; query: MeasurementQuery }[] = [];
  accuracySample: Scripted<AccuracySample>;
  latencySample: Scripted<LatencySample>;
  errorSample: Scripted<ErrorSample>;
  fallbackSample: Scripted<FallbackSample>;
  /** When set, every call waits for this promise (to leave a measurement in flight). */
  hold: Promise<void> | undefined;

  constructor() {
    const good = goodSamples();
    this.accuracySample = good.accuracy;
    this.latencySample = good.latency;
    this.errorSample = good.errorRate;
    this.fallbackSample = good.fallbackRate;
  }

  async accuracy(query: MeasurementQuery): Promise<AccuracySample> {
    return this.answer("accuracy", query, this.accuracySample);
  }
  async latency(query: MeasurementQuery): Promise<LatencySample> {
    return this.answer("latency", query, this.latencySample);
  }
  async errorRate(query: MeasurementQuery): Promise<ErrorSample> {
    return this.answer("errorRate", query, this.errorSample);
  }
  async fallbackRate(query: MeasurementQuery): Promise<FallbackSample> {
    return this.answer("fallbackRate", query, this.fallbackSample);
  }

  private async answer<T>(
    gate: string,
    query: MeasurementQuery,
    scripted: Scripted<T>,
  ): Promise<T> {
    this.queries.push({ gate, query });
    if (this.hold !== undefined) await this.hold;
    const value = typeof scripted === "function" ? (scripted as () => T | Error)() : scripted;
    if (value instanceof Error) throw value;
    return value;
  }
}

/** Loads a variant by marking it loaded on every worker of the pool (what LoadVariant does). */
export class PoolLoader implements VariantLoader {
  readonly calls: string[] = [];
  readonly failing = new Map<string, string>();

  constructor(private readonly pool: StaticWorkerPool) {}

  async load(variantId: string): Promise<void> {
    this.calls.push(variantId);
    await Promise.resolve();
    const failure = this.failing.get(variantId);
    if (failure !== undefined) throw new Error(failure);
    for (const worker of this.pool.workers()) this.pool.markLoaded(worker.id, variantId);
  }
}

/** One control-plane process: an engine, its router and workers, over a database file. */
export interface Harness {
  readonly engine: RolloutEngine;
  readonly store: SqliteRolloutStore;
  readonly router: Router;
  readonly pool: StaticWorkerPool;
  readonly loader: PoolLoader;
  readonly measurements: ScriptedMeasurements;
  readonly clock: ManualClock;
  /** Candidate weights the router accepted, in order. */
  readonly applied: number[];
  readonly errors: unknown[];
}

/** A fresh temp database file. */
export function tempDb(): string {
  return join(mkdtempSync(join(tmpdir(), "tardis-rollouts-")), "state.db");
}

/** Start a "process": new store handle, new router and pool (nothing loaded), same DB file. */
export function startHarness(dbFile: string, clock = new ManualClock()): Harness {
  const store = SqliteRolloutStore.open(dbFile);
  const pool = new StaticWorkerPool([
    { id: "worker-a", healthy: true, variants: [] },
    { id: "worker-b", healthy: true, variants: [] },
  ]);
  const router = new Router(pool);
  const applied: number[] = [];
  const errors: unknown[] = [];
  const loader = new PoolLoader(pool);
  const measurements = new ScriptedMeasurements();
  const engine = new RolloutEngine({
    store,
    loader,
    measurements,
    clock,
    onError: (error) => errors.push(error),
    traffic: {
      applySplit(rollout, split) {
        router.applySplit(rollout, split);
        applied.push(split.weights.find((w) => w.variant === CANDIDATE)?.weight ?? 0);
      },
    },
  });
  return { engine, store, router, pool, loader, measurements, clock, applied, errors };
}

/** A Rollout document through the real schema (defaults filled in). */
export function rolloutDoc(spec: Record<string, unknown>, name = "tiny-gpt2-tardis"): Rollout {
  return DOCUMENT_SCHEMAS.Rollout.parse({
    apiVersion: "tardis/v1",
    kind: "Rollout",
    metadata: { name },
    spec: { baseline: BASELINE, candidate: CANDIDATE, ...spec },
  });
}

/** Every gate, thresholds as in configs/rollout.yaml. */
export const ALL_GATES = {
  accuracy: {
    evalSet: { builtin: "wikitext-2-test" },
    maxPerplexityRatio: 1.05,
    maxClozeDrop: 0.02,
    minSamples: 200,
  },
  latency: { minTokensPerSecRatio: 1.0, maxTtftRatio: 1.2 },
  errorRate: { max: 0.01 },
  fallbackRate: { envelopeFactor: 2 },
};

export const SECOND = 1000;
export const MINUTE = 60 * SECOND;
