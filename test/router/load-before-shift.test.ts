import { describe, expect, it } from "vitest";
import { RolloutEngine, SqliteRolloutStore } from "../../control-plane/src/rollouts/index.js";
import { Router, StaticWorkerPool } from "../../control-plane/src/router/index.js";
import {
  ALL_GATES,
  BASELINE,
  CANDIDATE,
  ManualClock,
  rolloutDoc,
  ScriptedMeasurements,
  tempDb,
} from "../rollouts/harness.js";

type EngineOptions = ConstructorParameters<typeof RolloutEngine>[0];

/** A rollout engine on a fresh store driving `traffic` and `loader`, with the 30%-then-pause rollout applied. */
async function startRollout(traffic: EngineOptions["traffic"], loader: EngineOptions["loader"]) {
  const store = SqliteRolloutStore.open(tempDb());
  const engine = new RolloutEngine({
    store,
    clock: new ManualClock(),
    measurements: new ScriptedMeasurements(),
    traffic,
    loader,
  });
  await engine.apply(rolloutDoc({ steps: [{ setWeight: 30 }, { pause: {} }], gates: ALL_GATES }));
  return { store, engine };
}

describe("load before shift", () => {
  it("routes no request to the candidate until its load has finished on a worker", async () => {
    const pool = new StaticWorkerPool([
      { id: "w1", healthy: true, variants: [BASELINE] },
      { id: "w2", healthy: true, variants: [BASELINE] },
    ]);
    const router = new Router(pool);
    const events: string[] = [];
    let finishLoad: () => void = () => {};
    const { store, engine } = await startRollout(
      {
        applySplit(rollout, split) {
          router.applySplit(rollout, split);
          events.push(`split ${split.weights.map((w) => w.weight).join("/")}`);
        },
      },
      {
        load(variant) {
          events.push(`load ${variant} started`);
          if (variant === BASELINE) return Promise.resolve();
          return new Promise<void>((resolve) => {
            finishLoad = () => {
              pool.markLoaded("w2", variant);
              events.push(`load ${variant} done`);
              resolve();
            };
          });
        },
      },
    );
    await new Promise((resolve) => setTimeout(resolve, 20));

    // The candidate is loading: every request still reaches the baseline.
    expect(engine.status("tiny-gpt2-tardis")).toMatchObject({
      phase: "PROGRESSING",
      weight: 30,
      appliedWeight: 0,
      waitingFor: `load ${CANDIDATE}`,
    });
    for (let i = 0; i < 500; i++)
      expect(router.route({ sessionId: `s${i}` }).variant).toBe(BASELINE);

    finishLoad();
    await engine.idle();
    expect(events).toEqual([
      `load ${BASELINE} started`,
      "split 100/0",
      `load ${CANDIDATE} started`,
      `load ${CANDIDATE} done`,
      "split 70/30",
    ]);
    const routes = Array.from({ length: 500 }, (_, i) => router.route({ sessionId: `s${i}` }));
    expect(routes.filter((r) => r.variant === CANDIDATE).every((r) => r.worker.id === "w2")).toBe(
      true,
    );
    expect(routes.some((r) => r.variant === CANDIDATE)).toBe(true);
    store.close();
  });

  it("retries a split the router refused while the worker was unhealthy, once a load finds it healthy", async () => {
    // Loaded, but its health check failed just before the split (e.g. a busy worker after a
    // control-plane restart): the first split is refused; the retry's load waits for health.
    const pool = new StaticWorkerPool([
      { id: "w1", healthy: false, variants: [BASELINE, CANDIDATE] },
    ]);
    const router = new Router(pool);
    const loads: string[] = [];
    const { store, engine } = await startRollout(router, {
      async load(variant) {
        loads.push(variant);
        if (loads.length > 2) pool.setHealthy("w1", true); // healthy from the third load on
      },
    });
    await engine.idle();
    expect(engine.status("tiny-gpt2-tardis")).toMatchObject({ phase: "PAUSED", appliedWeight: 30 });
    expect(router.split("tiny-gpt2-tardis")?.weights.map((w) => w.weight)).toEqual([70, 30]);
    // the baseline's load, the refused 100/0 split's retry (loads the baseline again), the candidate's
    expect(loads).toEqual([BASELINE, BASELINE, CANDIDATE]);
    store.close();
  });

  it("aborts without shifting when the router refuses the split because no worker has the candidate", async () => {
    const pool = new StaticWorkerPool([{ id: "w1", healthy: true, variants: [BASELINE] }]);
    const router = new Router(pool);
    // A loader that claims success without loading anything anywhere.
    const { store, engine } = await startRollout(router, { load: async () => {} });
    await engine.idle();
    const status = engine.status("tiny-gpt2-tardis");
    expect(status).toMatchObject({ phase: "ABORTED", reason: "LoadFailed", weight: 0 });
    expect(status.message).toContain("router refused the split");
    expect(router.split("tiny-gpt2-tardis")?.weights.map((w) => w.weight)).toEqual([100, 0]);
    store.close();
  });
});
