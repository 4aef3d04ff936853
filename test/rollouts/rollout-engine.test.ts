import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { documentsOfKind, loadConfigFile } from "../../control-plane/src/config/index.js";
import {
  ALL_GATES,
  BASELINE,
  CANDIDATE,
  type Harness,
  MINUTE,
  rolloutDoc,
  SECOND,
  startHarness,
  tempDb,
} from "./harness.js";

const STEPS = [
  { setWeight: 10 },
  { pause: { duration: "2m" } },
  { analysis: { count: 3, interval: "30s" } },
  { setWeight: 50 },
  { analysis: { gates: ["accuracy", "fallbackRate"] } },
  { pause: {} },
  { setWeight: 100 },
];

let open: Harness[] = [];
function harness(): Harness {
  const h = startHarness(tempDb());
  open.push(h);
  return h;
}
afterEach(async () => {
  for (const h of open) {
    await h.engine.stop();
    h.store.close();
  }
  open = [];
});

/** Advance the clock in `stepMs` slices, ticking after each, `times` times. */
async function run(h: Harness, stepMs: number, times: number): Promise<void> {
  for (let i = 0; i < times; i++) {
    h.clock.advance(stepMs);
    await h.engine.tick();
  }
}

describe("rollout engine", () => {
  it("walks a good candidate through setWeight, pause and analysis steps and promotes it", async () => {
    const h = harness();
    const doc = rolloutDoc({ steps: STEPS, gates: ALL_GATES, watchWindow: "0s" });
    await h.engine.apply(doc);
    await h.engine.idle();

    // Baseline first (all traffic), then the candidate is loaded before 10% shift to it.
    expect(h.loader.calls).toEqual([BASELINE, CANDIDATE]);
    expect(h.applied).toEqual([0, 10]);
    let status = h.engine.status(doc.metadata.name);
    expect(status).toMatchObject({ phase: "PAUSED", reason: "PauseStep", step: 1, weight: 10 });

    await run(h, MINUTE, 2); // the 2m pause elapses, analysis measures at once
    await run(h, 30 * SECOND, 2); // two more measurements 30s apart
    status = h.engine.status(doc.metadata.name);
    expect(status).toMatchObject({ phase: "PAUSED", reason: "PauseStep", step: 5, weight: 50 });
    expect(h.applied).toEqual([0, 10, 50]);

    await h.engine.resume(doc.metadata.name);
    await h.engine.idle();
    status = h.engine.status(doc.metadata.name);
    expect(status).toMatchObject({ phase: "PROMOTED", reason: "Promoted", step: 7, weight: 100 });
    expect(h.applied).toEqual([0, 10, 50, 100]);
    expect(h.router.split(doc.metadata.name)?.weights).toEqual([
      { variant: BASELINE, weight: 0 },
      { variant: CANDIDATE, weight: 100 },
    ]);

    const decisions = h.engine.decisions(doc.metadata.name);
    // 3 measurements × 4 gates, then 1 × 2 gates.
    expect(decisions).toHaveLength(14);
    expect(decisions.every((d) => d.outcome === "successful")).toBe(true);
    expect(decisions.filter((d) => d.step === 4).map((d) => d.gate)).toEqual([
      "accuracy",
      "fallbackRate",
    ]);
    const accuracy = decisions[0];
    expect(accuracy?.measured.perplexityRatio).toBeCloseTo(31.9 / 31.2, 10);
    expect(accuracy?.thresholds).toEqual({
      maxPerplexityRatio: 1.05,
      maxClozeDrop: 0.02,
      minSamples: 200,
    });

    const reasons = h.engine.history(doc.metadata.name).map((e) => e.reason);
    expect(reasons).toContain("PauseElapsed");
    expect(reasons).toContain("AnalysisSuccessful");
    expect(reasons.at(-1)).toBe("Promoted");
  });

  it("aborts a candidate whose perplexity explodes, sends traffic back to the baseline and logs the measured ratio", async () => {
    const h = harness();
    const doc = rolloutDoc({
      steps: [{ setWeight: 20 }, { analysis: { count: 2, interval: "1m" } }, { setWeight: 100 }],
      gates: ALL_GATES,
    });
    h.measurements.accuracySample = {
      samples: 4096,
      baselinePerplexity: 31.2,
      candidatePerplexity: 912.4,
      baselineCloze: 0.61,
      candidateCloze: 0.22,
    };
    await h.engine.apply(doc);
    await h.engine.idle();

    const status = h.engine.status(doc.metadata.name);
    expect(status).toMatchObject({ phase: "ABORTED", reason: "GateFailed", weight: 0 });
    expect(status.message).toContain("perplexity ratio 29.24 > max 1.05");
    expect(h.applied).toEqual([0, 20, 0]);
    for (let i = 0; i < 200; i++) {
      expect(h.router.route({ rollout: doc.metadata.name, sessionId: `s${i}` }).variant).toBe(
        BASELINE,
      );
    }
    const failed = h.engine.decisions(doc.metadata.name).filter((d) => d.outcome === "failed");
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatchObject({
      gate: "accuracy",
      step: 1,
      context: "analysis",
      thresholds: { maxPerplexityRatio: 1.05, maxClozeDrop: 0.02 },
    });
    expect(failed[0]?.measured.perplexityRatio).toBeCloseTo(912.4 / 31.2, 10);
    expect(failed[0]?.measured.clozeDrop).toBeCloseTo(0.39, 10);
    expect(failed[0]?.measured.candidatePerplexity).toBe(912.4);
  });

  it("aborts a candidate whose live fallback rate is far above its calibrated envelope", async () => {
    const h = harness();
    const doc = rolloutDoc({
      steps: [{ setWeight: 10 }, { analysis: { gates: ["fallbackRate"] } }],
      gates: { fallbackRate: { envelopeFactor: 2 } },
    });
    h.measurements.fallbackSample = {
      layers: [
        { layer: 0, tokens: 5000, liveRate: 0.06, calibratedRate: 0.05 },
        { layer: 1, tokens: 5000, liveRate: 0.41, calibratedRate: 0.05 },
        { layer: 2, tokens: 5000, liveRate: 0.09, calibratedRate: 0.05 },
        { layer: 3, tokens: 0, liveRate: null, calibratedRate: 0.05 },
      ],
    };
    await h.engine.apply(doc);
    await h.engine.idle();

    expect(h.engine.status(doc.metadata.name)).toMatchObject({ phase: "ABORTED", weight: 0 });
    expect(h.applied.at(-1)).toBe(0);
    const [decision] = h.engine.decisions(doc.metadata.name);
    expect(decision).toMatchObject({
      gate: "fallbackRate",
      outcome: "failed",
      thresholds: { envelopeFactor: 2 },
      measured: {
        layers: 3,
        layersOverEnvelope: 1,
        worstLayer: 1,
        worstLiveRate: 0.41,
        worstCalibratedRate: 0.05,
      },
    });
    expect(decision?.layers?.map((l) => [l.layer, l.withinEnvelope])).toEqual([
      [0, true],
      [1, false],
      [2, true],
    ]);
    expect(decision?.layers?.[1]?.limit).toBeCloseTo(0.1, 12);
  });

  it("pauses on an inconclusive analysis (too few samples) and aborts once inconclusiveLimit is exceeded", async () => {
    const h = harness();
    const doc = rolloutDoc({
      steps: [{ setWeight: 10 }, { analysis: { gates: ["accuracy"] } }, { setWeight: 100 }],
      gates: ALL_GATES,
      inconclusiveLimit: 1,
    });
    h.measurements.accuracySample = { ...h.measurements.accuracySample, samples: 50 } as never;
    await h.engine.apply(doc);
    await h.engine.idle();

    let status = h.engine.status(doc.metadata.name);
    expect(status).toMatchObject({
      phase: "PAUSED",
      reason: "AnalysisInconclusive",
      step: 1,
      weight: 10,
      inconclusive: 1,
    });
    expect(status.message).toContain("50 samples < minSamples 200");

    await h.engine.resume(doc.metadata.name); // measures again: still too few samples
    await h.engine.idle();
    status = h.engine.status(doc.metadata.name);
    expect(status).toMatchObject({
      phase: "ABORTED",
      reason: "InconclusiveLimitExceeded",
      weight: 0,
      inconclusive: 2,
    });
    const outcomes = h.engine
      .decisions(doc.metadata.name)
      .map((d) => [d.outcome, d.measured.samples]);
    expect(outcomes).toEqual([
      ["inconclusive", 50],
      ["inconclusive", 50],
    ]);
  });

  it("resuming an inconclusive analysis with enough samples continues to promotion", async () => {
    const h = harness();
    const doc = rolloutDoc({
      steps: [{ setWeight: 10 }, { analysis: { gates: ["accuracy"] } }],
      gates: ALL_GATES,
      inconclusiveLimit: 1,
      watchWindow: "0s",
    });
    const good = h.measurements.accuracySample;
    h.measurements.accuracySample = { ...(good as object), samples: 10 } as never;
    await h.engine.apply(doc);
    await h.engine.idle();
    expect(h.engine.status(doc.metadata.name).phase).toBe("PAUSED");
    h.measurements.accuracySample = good;
    await h.engine.resume(doc.metadata.name);
    await h.engine.idle();
    expect(h.engine.status(doc.metadata.name)).toMatchObject({ phase: "PROMOTED", weight: 100 });
  });

  it("tolerates failed measurements up to failureLimit and aborts on the next one", async () => {
    const h = harness();
    const doc = rolloutDoc({
      steps: [{ setWeight: 10 }, { analysis: { gates: ["errorRate"], count: 5, interval: "10s" } }],
      gates: ALL_GATES,
      failureLimit: 1,
    });
    const errors = [0, 3, 0, 4];
    let call = 0;
    h.measurements.errorSample = () => ({ requests: 100, errors: errors[call++] ?? 0 });
    await h.engine.apply(doc);
    await h.engine.idle();
    await run(h, 10 * SECOND, 3);

    const status = h.engine.status(doc.metadata.name);
    expect(status).toMatchObject({ phase: "ABORTED", reason: "GateFailed", failed: 2, weight: 0 });
    expect(status.message).toContain("error rate 0.04 > max 0.01");
    expect(h.engine.decisions(doc.metadata.name).map((d) => d.outcome)).toEqual([
      "successful",
      "failed",
      "successful",
      "failed",
    ]);
  });

  it("aborts after more measurement errors in a row than consecutiveErrorLimit", async () => {
    const h = harness();
    const doc = rolloutDoc({
      steps: [{ setWeight: 10 }, { analysis: { gates: ["latency"], interval: "5s" } }],
      gates: ALL_GATES,
      consecutiveErrorLimit: 2,
    });
    h.measurements.latencySample = new Error("worker-a Stats: UNAVAILABLE");
    await h.engine.apply(doc);
    await h.engine.idle();
    expect(h.engine.status(doc.metadata.name)).toMatchObject({ phase: "PROGRESSING", weight: 10 });
    await run(h, 5 * SECOND, 2);

    const status = h.engine.status(doc.metadata.name);
    expect(status).toMatchObject({ phase: "ABORTED", reason: "MeasurementErrors", weight: 0 });
    const decisions = h.engine.decisions(doc.metadata.name);
    expect(decisions.map((d) => d.outcome)).toEqual(["error", "error", "error"]);
    expect(decisions[0]?.message).toContain("UNAVAILABLE");
  });

  it("never shifts traffic to a candidate that fails to load", async () => {
    const h = harness();
    h.loader.failing.set(CANDIDATE, "manifest hash mismatch: tardis.safetensors");
    const doc = rolloutDoc({ steps: [{ setWeight: 10 }, { setWeight: 100 }], gates: ALL_GATES });
    await h.engine.apply(doc);
    await h.engine.idle();

    const status = h.engine.status(doc.metadata.name);
    expect(status).toMatchObject({ phase: "ABORTED", reason: "LoadFailed", weight: 0 });
    expect(status.message).toContain("manifest hash mismatch");
    expect(h.applied).toEqual([0]);
  });

  it("reverts a promoted candidate at once when a gate fails in the watch window", async () => {
    const h = harness();
    const doc = rolloutDoc({
      steps: [{ setWeight: 50 }, { analysis: { interval: "1m" } }],
      gates: ALL_GATES,
      watchWindow: "10m",
    });
    await h.engine.apply(doc);
    await h.engine.idle();
    expect(h.engine.status(doc.metadata.name)).toMatchObject({ phase: "PROMOTED", weight: 100 });

    await run(h, MINUTE, 2); // two clean watch measurements
    h.measurements.latencySample = {
      baseline: { requests: 0, tokensPerSec: 0, ttftMs: 0 },
      candidate: { requests: 400, tokensPerSec: 55, ttftMs: 40 },
    };
    h.measurements.errorSample = { requests: 400, errors: 37 };
    await run(h, MINUTE, 1);

    const status = h.engine.status(doc.metadata.name);
    expect(status).toMatchObject({ phase: "DEGRADED", reason: "WatchWindowGateFailed", weight: 0 });
    expect(h.applied).toEqual([0, 50, 100, 0]);
    expect(h.router.route({ sessionId: "after-revert" }).variant).toBe(BASELINE);
    const watch = h.engine.decisions(doc.metadata.name).filter((d) => d.context === "watch");
    expect(watch).toHaveLength(12);
    expect(watch.filter((d) => d.outcome === "failed").map((d) => d.gate)).toEqual(["errorRate"]);
    expect(watch.find((d) => d.outcome === "failed")?.measured.errorRate).toBeCloseTo(37 / 400, 12);
  });

  it("keeps a promoted candidate once its watch window passes without a failure", async () => {
    const h = harness();
    const doc = rolloutDoc({
      steps: [{ setWeight: 100 }],
      gates: { errorRate: { max: 0.01 } },
      watchWindow: "3m",
    });
    await h.engine.apply(doc);
    await h.engine.idle();
    await run(h, MINUTE, 3);
    const status = h.engine.status(doc.metadata.name);
    expect(status).toMatchObject({
      phase: "PROMOTED",
      reason: "WatchWindowPassed",
      watchUntil: null,
    });
    expect(h.engine.nextWakeAt()).toBeNull();
  });

  it("rolls back to an earlier promoted revision and refuses a revision that was never promoted", async () => {
    const h = harness();
    const name = "tiny-gpt2-tardis";
    const first = rolloutDoc({ steps: [{ setWeight: 100 }], gates: ALL_GATES, watchWindow: "0s" });
    const firstStatus = await h.engine.apply(first);
    await h.engine.idle();
    expect(firstStatus.revisionNumber).toBe(1);

    const v2 = "tardis-tiny-gpt2-77aa01";
    const second = rolloutDoc({
      baseline: CANDIDATE,
      candidate: v2,
      steps: [{ setWeight: 100 }],
      gates: ALL_GATES,
      watchWindow: "0s",
    });
    await h.engine.apply(second);
    await h.engine.idle();
    expect(h.engine.status(name)).toMatchObject({ phase: "PROMOTED", revisionNumber: 2 });
    expect(h.router.route({ sessionId: "u1" }).variant).toBe(v2);

    const third = rolloutDoc({
      baseline: v2,
      candidate: "tardis-broken",
      steps: [{ setWeight: 10 }, { analysis: {} }],
      gates: ALL_GATES,
    });
    h.measurements.accuracySample = {
      ...(h.measurements.accuracySample as object),
      candidatePerplexity: 1e9,
    } as never;
    await h.engine.apply(third);
    await h.engine.idle();
    expect(h.engine.status(name).phase).toBe("ABORTED");
    await expect(h.engine.rollback(name, "3")).rejects.toMatchObject({
      code: "FAILED_PRECONDITION",
    });
    await expect(h.engine.rollback(name, "r9")).rejects.toMatchObject({ code: "NOT_FOUND" });

    const rolledBack = await h.engine.rollback(name, firstStatus.revision.slice(0, 8));
    await h.engine.idle();
    expect(rolledBack).toMatchObject({
      phase: "PROMOTED",
      reason: "RolledBack",
      revisionNumber: 1,
    });
    expect(h.router.route({ sessionId: "u1" }).variant).toBe(CANDIDATE);
    expect(h.engine.revisions(name).map((r) => [r.number, r.promotedAt !== null])).toEqual([
      [1, true],
      [2, true],
      [3, false],
    ]);
  });

  it("treats re-applying the same spec as a no-op and a changed spec as a new revision", async () => {
    const h = harness();
    const doc = rolloutDoc({ steps: [{ setWeight: 10 }, { pause: {} }], gates: ALL_GATES });
    const a = await h.engine.apply(doc);
    await h.engine.idle();
    const historyLength = h.engine.history(doc.metadata.name).length;
    const b = await h.engine.apply(
      rolloutDoc({ steps: [{ setWeight: 10 }, { pause: {} }], gates: ALL_GATES }),
    );
    expect(b.revision).toBe(a.revision);
    expect(h.engine.history(doc.metadata.name)).toHaveLength(historyLength);

    const c = await h.engine.apply(
      rolloutDoc({ steps: [{ setWeight: 20 }, { pause: {} }], gates: ALL_GATES }),
    );
    await h.engine.idle();
    expect(c.revision).not.toBe(a.revision);
    expect(c.revisionNumber).toBe(2);
    expect(h.engine.status(doc.metadata.name)).toMatchObject({ phase: "PAUSED", weight: 20 });
  });

  it("answers operator commands outside their phase with FAILED_PRECONDITION and unknown names with NOT_FOUND", async () => {
    const h = harness();
    const doc = rolloutDoc({ steps: [{ setWeight: 10 }, { pause: {} }], gates: ALL_GATES });
    await h.engine.apply(doc);
    await h.engine.idle();
    await expect(h.engine.resume("nope")).rejects.toMatchObject({ code: "NOT_FOUND" });
    expect(() => h.engine.status("nope")).toThrow(/no rollout named nope/);

    await h.engine.abort(doc.metadata.name, "bad vibes");
    await h.engine.idle();
    expect(h.engine.status(doc.metadata.name)).toMatchObject({
      phase: "ABORTED",
      reason: "AbortedByOperator",
    });
    expect(h.applied.at(-1)).toBe(0);
    await expect(h.engine.resume(doc.metadata.name)).rejects.toMatchObject({
      code: "FAILED_PRECONDITION",
    });
    await expect(h.engine.promote(doc.metadata.name)).rejects.toMatchObject({
      code: "FAILED_PRECONDITION",
    });
    await expect(h.engine.pause(doc.metadata.name)).rejects.toMatchObject({
      code: "FAILED_PRECONDITION",
    });
  });

  it("promote skips the remaining steps, and a manual pause holds a timed pause until resumed", async () => {
    const h = harness();
    const doc = rolloutDoc({
      steps: [{ setWeight: 10 }, { pause: { duration: "1m" } }, { setWeight: 50 }, { pause: {} }],
      gates: ALL_GATES,
      watchWindow: "0s",
    });
    await h.engine.apply(doc);
    await h.engine.idle();
    await h.engine.pause(doc.metadata.name);
    await run(h, MINUTE, 5);
    expect(h.engine.status(doc.metadata.name)).toMatchObject({
      phase: "PAUSED",
      step: 1,
      weight: 10,
    });
    await h.engine.promote(doc.metadata.name);
    await h.engine.idle();
    expect(h.engine.status(doc.metadata.name)).toMatchObject({
      phase: "PROMOTED",
      reason: "PromotedByOperator",
      weight: 100,
    });
    expect(h.applied).toEqual([0, 10, 100]);
  });

  it("runs the example configs/rollout.yaml to PROMOTED and through its 15m watch window", async () => {
    const file = fileURLToPath(new URL("../../configs/rollout.yaml", import.meta.url));
    const loaded = documentsOfKind(await loadConfigFile(file), "Rollout");
    if (!loaded.ok) throw new Error(loaded.errors.map(String).join("\n"));
    const doc = loaded.documents[0]?.config;
    if (doc === undefined) throw new Error("no Rollout in configs/rollout.yaml");
    const h = harness();
    await h.engine.apply(doc);
    await h.engine.idle();
    await run(h, MINUTE, 2);
    await run(h, 30 * SECOND, 2);
    expect(h.engine.status(doc.metadata.name)).toMatchObject({
      phase: "PAUSED",
      step: 5,
      weight: 50,
    });
    await h.engine.resume(doc.metadata.name);
    await h.engine.idle();
    expect(h.engine.status(doc.metadata.name)).toMatchObject({ phase: "PROMOTED", weight: 100 });
    await run(h, 30 * SECOND, 30);
    expect(h.engine.status(doc.metadata.name)).toMatchObject({
      phase: "PROMOTED",
      reason: "WatchWindowPassed",
    });
    const watch = h.engine.decisions(doc.metadata.name).filter((d) => d.context === "watch");
    expect(watch.length).toBe(14 * 4); // every 1m (the last analysis step's interval) for 15m
    expect(h.loader.calls).toEqual([doc.spec.baseline, doc.spec.candidate]);
  });
});
