import { describe, expect, it } from "vitest";
import {
  fallbackSampleFromCounters,
  LiveMeasurements,
  type MeasurementQuery,
  RolloutEngine,
  SqliteRolloutStore,
  type WorkerLayerCounters,
} from "../../control-plane/src/rollouts/index.js";
import { RequestStats, Router, StaticWorkerPool } from "../../control-plane/src/router/index.js";
import { seededRandom } from "../config/seeded-random.js";
import {
  ALL_GATES,
  BASELINE,
  CANDIDATE,
  goodSamples,
  ManualClock,
  MINUTE,
  PoolLoader,
  rolloutDoc,
  tempDb,
} from "./harness.js";

const NAME = "tiny-gpt2-tardis";

function liveEngine(counters: () => WorkerLayerCounters[]) {
  const clock = new ManualClock();
  const stats = new RequestStats(50_000, () => clock.now());
  const pool = new StaticWorkerPool([
    { id: "w1", healthy: true, variants: [] },
    { id: "w2", healthy: true, variants: [] },
  ]);
  const router = new Router(pool, stats);
  let accuracyCalls = 0;
  const measurements = new LiveMeasurements({
    requests: stats,
    layerCounters: async () => counters(),
    accuracy: async () => {
      accuracyCalls++;
      return goodSamples().accuracy;
    },
  });
  const store = SqliteRolloutStore.open(tempDb());
  const engine = new RolloutEngine({
    store,
    clock,
    measurements,
    traffic: router,
    loader: new PoolLoader(pool),
  });
  return { clock, router, engine, store, accuracyCalls: () => accuracyCalls };
}

/** Route `count` sessions; the candidate fails with probability `candidateErrors`. */
function serve(router: Router, count: number, candidateErrors: number, seed: number): void {
  const random = seededRandom(seed);
  for (let i = 0; i < count; i++) {
    const route = router.route({ sessionId: `s-${seed}-${i}` });
    const candidate = route.variant === CANDIDATE;
    const ok = !(candidate && random() < candidateErrors);
    route.release(
      ok ? { ok, tokensPerSec: candidate ? 62 : 50, ttftMs: candidate ? 41 : 40 } : { ok },
    );
  }
}

describe("live measurements", () => {
  it("aborts on the candidate's live error rate measured from routed requests since the split", async () => {
    const live = liveEngine(() => []);
    await live.engine.apply(
      rolloutDoc({
        steps: [
          { setWeight: 20 },
          { pause: { duration: "5m" } },
          { analysis: { gates: ["errorRate", "latency"] } },
        ],
        gates: ALL_GATES,
      }),
    );
    await live.engine.idle();
    serve(live.router, 1000, 0.1, 1);
    live.clock.advance(5 * MINUTE);
    await live.engine.tick();

    expect(live.engine.status(NAME)).toMatchObject({ phase: "ABORTED", reason: "GateFailed" });
    const [errors, latency] = live.engine.decisions(NAME);
    expect(errors?.outcome).toBe("failed");
    expect(errors?.measured.requests).toBeGreaterThan(170);
    expect(errors?.measured.requests).toBeLessThan(230);
    expect(errors?.measured.errorRate).toBeGreaterThan(0.05);
    expect(latency).toMatchObject({ gate: "latency", outcome: "successful" });
    expect(latency?.measured.tokensPerSecRatio).toBeCloseTo(62 / 50, 12);
    expect(latency?.measured.ttftRatio).toBeCloseTo(41 / 40, 12);
  });

  it("promotes a candidate whose live errors, latency and fallback rates are inside the gates, scoring accuracy once", async () => {
    const counters = [0, 1, 2].map((layer) => ({
      layer,
      tokens: "4000",
      fallbackRate: 0.07,
      calibratedFallbackRate: 0.05,
    }));
    const live = liveEngine(() => counters);
    await live.engine.apply(
      rolloutDoc({
        steps: [
          { setWeight: 30 },
          { pause: { duration: "5m" } },
          { analysis: { count: 3, interval: "1m" } },
        ],
        gates: ALL_GATES,
        watchWindow: "0s",
      }),
    );
    await live.engine.idle();
    serve(live.router, 1000, 0, 2);
    for (let i = 0; i < 3; i++) {
      live.clock.advance(i === 0 ? 5 * MINUTE : MINUTE);
      await live.engine.tick();
    }
    expect(live.engine.status(NAME)).toMatchObject({ phase: "PROMOTED", weight: 100 });
    expect(live.accuracyCalls()).toBe(1);
    const fallback = live.engine.decisions(NAME).filter((d) => d.gate === "fallbackRate");
    expect(fallback.map((d) => d.measured.worstRatio)).toEqual(
      [1.4, 1.4, 1.4].map((x) => expect.closeTo(x, 12)),
    );
  });

  it("combines the layer counters of several workers, weighting each by its tokens", () => {
    const sample = fallbackSampleFromCounters([
      { layer: 1, tokens: "1000", fallbackRate: 0.1, calibratedFallbackRate: 0.05 },
      { layer: 0, tokens: "3000", fallbackRate: 0.02, calibratedFallbackRate: 0.04 },
      { layer: 1, tokens: "3000", fallbackRate: 0.02, calibratedFallbackRate: 0.05 },
      { layer: 0, tokens: "0", calibratedFallbackRate: 0.04 },
    ]);
    expect(sample.layers.map((l) => l.layer)).toEqual([0, 1]);
    expect(sample.layers[0]).toMatchObject({ tokens: 3000, calibratedRate: 0.04 });
    expect(sample.layers[0]?.liveRate).toBeCloseTo(0.02, 12);
    expect(sample.layers[1]?.liveRate).toBeCloseTo((0.1 * 1000 + 0.02 * 3000) / 4000, 12);
  });

  it("measures latency over successful requests only, and only those since the window start", async () => {
    const clock = new ManualClock();
    const stats = new RequestStats(100, () => clock.now());
    stats.record(BASELINE, { ok: true, tokensPerSec: 10, ttftMs: 100 });
    clock.advance(MINUTE);
    const since = clock.now();
    stats.record(BASELINE, { ok: true, tokensPerSec: 50, ttftMs: 40 });
    stats.record(BASELINE, { ok: false });
    stats.record(CANDIDATE, { ok: true, tokensPerSec: 60, ttftMs: 30 });
    const m = new LiveMeasurements({
      requests: stats,
      layerCounters: async () => [],
      accuracy: async () => goodSamples().accuracy,
    });
    const query: MeasurementQuery = {
      rollout: NAME,
      revision: "r",
      baseline: BASELINE,
      candidate: CANDIDATE,
      since,
      now: clock.now(),
    };
    expect(await m.latency(query)).toEqual({
      baseline: { requests: 1, tokensPerSec: 50, ttftMs: 40 },
      candidate: { requests: 1, tokensPerSec: 60, ttftMs: 30 },
    });
    expect(await m.errorRate({ ...query, candidate: BASELINE })).toEqual({
      requests: 2,
      errors: 1,
    });
  });
});
