import { describe, expect, it, vi } from "vitest";
import { RolloutEngine, SqliteRolloutStore } from "../../control-plane/src/rollouts/index.js";
import { Router, StaticWorkerPool } from "../../control-plane/src/router/index.js";
import {
  ALL_GATES,
  BASELINE,
  CANDIDATE,
  ManualClock,
  MINUTE,
  PoolLoader,
  rolloutDoc,
  ScriptedMeasurements,
  SECOND,
  startHarness,
  tempDb,
} from "./harness.js";

const STEPS = [
  { setWeight: 10 },
  { pause: { duration: "2m" } },
  { analysis: { count: 3, interval: "30s" } },
  { setWeight: 50 },
  { pause: { duration: "5m" } },
  { setWeight: 100 },
];
const NAME = "tiny-gpt2-tardis";

describe("rollout engine restart", () => {
  it("continues in the analysis step it was killed in, without repeating earlier steps or losing counted measurements", async () => {
    const db = tempDb();
    const clock = new ManualClock();
    const a = startHarness(db, clock);
    await a.engine.apply(rolloutDoc({ steps: STEPS, gates: ALL_GATES, watchWindow: "0s" }));
    await a.engine.idle();
    clock.advance(2 * MINUTE);
    await a.engine.tick(); // pause over; first of 3 measurements taken
    expect(a.engine.status(NAME)).toMatchObject({ step: 2, stepKind: "analysis" });
    a.measurements.hold = new Promise(() => {}); // the second measurement never returns
    clock.advance(30 * SECOND);
    void a.engine.tick();
    await vi.waitFor(() => expect(a.measurements.queries.length).toBe(8));
    expect(a.engine.status(NAME).waitingFor).toMatch(/^measure /);
    a.store.close(); // killed: no stop(), the measurement stays in flight forever

    clock.advance(5 * SECOND);
    const b = startHarness(db, clock);
    expect(b.router.split(NAME)).toBeUndefined();
    await b.engine.recover();
    await b.engine.idle();
    // The new process reloaded both variants and restored the 10% split before measuring again.
    expect(b.loader.calls.sort()).toEqual([BASELINE, CANDIDATE].sort());
    expect(b.applied[0]).toBe(10);
    expect(b.engine.status(NAME)).toMatchObject({ phase: "PROGRESSING", step: 2, weight: 10 });

    clock.advance(30 * SECOND);
    await b.engine.tick(); // third counted measurement → setWeight 50 → 5m pause
    expect(b.engine.status(NAME)).toMatchObject({ phase: "PAUSED", step: 4, weight: 50 });
    clock.advance(5 * MINUTE);
    await b.engine.tick();
    expect(b.engine.status(NAME)).toMatchObject({ phase: "PROMOTED", weight: 100 });
    expect(b.applied).toEqual([10, 50, 100]);

    const analysis = b.engine.decisions(NAME).filter((d) => d.step === 2);
    expect(new Set(analysis.map((d) => d.measurement)).size).toBe(3);
    expect(analysis.every((d) => d.outcome === "successful")).toBe(true);
    const setWeights = b.engine.history(NAME).filter((e) => e.reason === "SetWeight");
    expect(setWeights.map((e) => e.weight)).toEqual([10, 50, 100]);
    await b.engine.stop();
    b.store.close();
  });

  it("keeps a timed pause's deadline across a restart instead of starting it over", async () => {
    const db = tempDb();
    const clock = new ManualClock();
    const a = startHarness(db, clock);
    await a.engine.apply(rolloutDoc({ steps: STEPS, gates: ALL_GATES, watchWindow: "0s" }));
    await a.engine.idle();
    clock.advance(90 * SECOND); // 30s of the 2m pause left
    a.store.close();

    const b = startHarness(db, clock);
    await b.engine.recover();
    await b.engine.idle();
    expect(b.engine.status(NAME)).toMatchObject({ phase: "PAUSED", step: 1, weight: 10 });
    expect(b.engine.nextWakeAt()).toBe(clock.now() + 30 * SECOND);
    clock.advance(30 * SECOND);
    await b.engine.tick();
    expect(b.engine.status(NAME)).toMatchObject({ phase: "PROGRESSING", step: 2 });
    await b.engine.stop();
    b.store.close();
  });

  it("restores an aborted rollout's traffic to the baseline after a restart", async () => {
    const db = tempDb();
    const clock = new ManualClock();
    const a = startHarness(db, clock);
    await a.engine.apply(rolloutDoc({ steps: STEPS, gates: ALL_GATES }));
    await a.engine.idle();
    await a.engine.abort(NAME);
    await a.engine.idle();
    a.store.close();

    const b = startHarness(db, clock);
    await b.engine.recover();
    await b.engine.idle();
    expect(b.loader.calls).toEqual([BASELINE]);
    expect(b.applied).toEqual([0]);
    expect(b.router.route({ sessionId: "x" }).variant).toBe(BASELINE);
    b.store.close();
  });

  it("persists every state before acting on it: the loader and the router only see committed states", async () => {
    const db = tempDb();
    const store = SqliteRolloutStore.open(db);
    const observer = SqliteRolloutStore.open(db); // a second connection, as another process would
    const pool = new StaticWorkerPool([{ id: "w", healthy: true, variants: [] }]);
    const router = new Router(pool);
    const loads = new PoolLoader(pool);
    const checks: string[] = [];
    const engine = new RolloutEngine({
      store,
      measurements: new ScriptedMeasurements(),
      clock: new ManualClock(),
      loader: {
        async load(variant) {
          const state = observer.get(NAME)?.state;
          expect(state?.awaiting).toEqual({ kind: "load", variant });
          checks.push(`load ${variant}`);
          await loads.load(variant);
        },
      },
      traffic: {
        applySplit(rollout, split) {
          const weight = split.weights.find((w) => w.variant === CANDIDATE)?.weight;
          const state = observer.get(rollout)?.state;
          expect(state?.appliedWeight).toBe(weight);
          checks.push(`weight ${weight}`);
          router.applySplit(rollout, split);
        },
      },
    });
    await engine.apply(
      rolloutDoc({
        steps: [{ setWeight: 10 }, { analysis: {} }, { setWeight: 60 }],
        gates: ALL_GATES,
        watchWindow: "0s",
      }),
    );
    await engine.idle();
    expect(checks).toEqual([
      `load ${BASELINE}`,
      "weight 0",
      `load ${CANDIDATE}`,
      "weight 10",
      "weight 100", // setWeight 60 and the promotion's 100 are one transition: only 100 is routed
    ]);
    store.close();
    observer.close();
  });
});

describe("rollout engine timers", () => {
  /** A started engine (real timers) with a 100 ms timed pause between two steps, applied and PAUSED. */
  async function pausedEngine(
    clock?: ManualClock,
  ): Promise<{ engine: RolloutEngine; close: () => void }> {
    const store = SqliteRolloutStore.open(tempDb());
    const pool = new StaticWorkerPool([{ id: "w", healthy: true, variants: [] }]);
    const engine = new RolloutEngine({
      store,
      ...(clock ? { clock } : {}),
      loader: new PoolLoader(pool),
      traffic: new Router(pool),
      measurements: new ScriptedMeasurements(),
    });
    engine.start();
    await engine.apply(
      rolloutDoc({
        steps: [{ setWeight: 10 }, { pause: { duration: "100ms" } }, { setWeight: 100 }],
        gates: ALL_GATES,
        watchWindow: "0s",
      }),
    );
    await vi.waitFor(() => expect(engine.status(NAME).phase).toBe("PAUSED"));
    return { engine, close: () => store.close() };
  }

  it("runs timed pauses on its own once started, with the real clock", async () => {
    const { engine, close } = await pausedEngine();
    await vi.waitFor(() => expect(engine.status(NAME).phase).toBe("PROMOTED"), { timeout: 3000 });
    await engine.stop();
    close();
  });

  it("re-arms its timer when it fires before the clock reaches the wake time", async () => {
    // A busy event loop fires timers against a lagging cached clock, i.e. early by the wall clock
    // the engine reads; the tick then finds nothing due and must still wake up again.
    const clock = new ManualClock();
    const { engine, close } = await pausedEngine(clock);
    await new Promise((resolve) => setTimeout(resolve, 300)); // the timer fired: not due by the clock
    expect(engine.status(NAME).phase).toBe("PAUSED");
    clock.advance(100);
    await vi.waitFor(() => expect(engine.status(NAME).phase).toBe("PROMOTED"), { timeout: 3000 });
    await engine.stop();
    close();
  });
});
