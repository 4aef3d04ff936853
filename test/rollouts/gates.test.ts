import { describe, expect, it } from "vitest";
import {
  combineOutcomes,
  evaluateGate,
  type GateResult,
  type GatesSpec,
} from "../../control-plane/src/rollouts/index.js";
import { seededRandom } from "../config/seeded-random.js";
import { ALL_GATES, rolloutDoc } from "./harness.js";

const gates: GatesSpec = rolloutDoc({ steps: [{ setWeight: 10 }], gates: ALL_GATES }).spec.gates;

describe("gates", () => {
  it("fails exactly the layers whose live fallback rate exceeds envelopeFactor × the calibrated rate", () => {
    const random = seededRandom(9);
    for (let trial = 0; trial < 50; trial++) {
      const layers = Array.from({ length: 12 }, (_, layer) => {
        const calibratedRate = 0.01 + 0.2 * random();
        return {
          layer,
          tokens: 1 + Math.floor(1000 * random()),
          calibratedRate,
          liveRate: calibratedRate * 3 * random(),
        };
      });
      const result = evaluateGate(gates, { gate: "fallbackRate", sample: { layers } });
      const over = layers.filter((l) => l.liveRate > 2 * l.calibratedRate).map((l) => l.layer);
      expect(result.layers?.filter((l) => !l.withinEnvelope).map((l) => l.layer)).toEqual(over);
      expect(result.outcome).toBe(over.length > 0 ? "failed" : "successful");
      expect(result.measured.layersOverEnvelope).toBe(over.length);
    }
  });

  it("is inconclusive when no layer has live tokens yet", () => {
    const result = evaluateGate(gates, {
      gate: "fallbackRate",
      sample: { layers: [{ layer: 0, tokens: 0, liveRate: null, calibratedRate: 0.05 }] },
    });
    expect(result.outcome).toBe("inconclusive");
  });

  it("judges accuracy by perplexity ratio and cloze drop, inconclusive below minSamples", () => {
    const sample = {
      samples: 500,
      baselinePerplexity: 20,
      candidatePerplexity: 20.8,
      baselineCloze: 0.6,
      candidateCloze: 0.59,
    };
    const ok = evaluateGate(gates, { gate: "accuracy", sample });
    expect(ok.outcome).toBe("successful");
    expect(ok.measured.perplexityRatio).toBeCloseTo(1.04, 12);
    expect(ok.measured.clozeDrop).toBeCloseTo(0.01, 12);

    const cloze = evaluateGate(gates, {
      gate: "accuracy",
      sample: { ...sample, candidateCloze: 0.55 },
    });
    expect(cloze.outcome).toBe("failed");
    expect(cloze.message).toBe("cloze drop 0.05 > max 0.02");

    const few = evaluateGate(gates, { gate: "accuracy", sample: { ...sample, samples: 199 } });
    expect(few.outcome).toBe("inconclusive");
    expect(few.message).toBe("199 samples < minSamples 200");

    const exploded = evaluateGate(gates, {
      gate: "accuracy",
      sample: { ...sample, candidatePerplexity: Number.POSITIVE_INFINITY },
    });
    expect(exploded.outcome).toBe("failed");
    expect(exploded.measured.perplexityRatio).toBe(Number.POSITIVE_INFINITY);
  });

  it("judges latency ratios and error rate against their thresholds", () => {
    const latency = evaluateGate(gates, {
      gate: "latency",
      sample: {
        baseline: { requests: 10, tokensPerSec: 50, ttftMs: 40 },
        candidate: { requests: 10, tokensPerSec: 45, ttftMs: 60 },
      },
    });
    expect(latency.outcome).toBe("failed");
    expect(latency.message).toBe("tokens/s ratio 0.9 < min 1; TTFT ratio 1.5 > max 1.2");
    expect(latency.thresholds).toEqual({ minTokensPerSecRatio: 1, maxTtftRatio: 1.2 });

    const errors = evaluateGate(gates, {
      gate: "errorRate",
      sample: { requests: 1000, errors: 10 },
    });
    expect(errors).toMatchObject({ outcome: "successful", measured: { errorRate: 0.01 } });
    const none = evaluateGate(gates, { gate: "errorRate", sample: { requests: 0, errors: 0 } });
    expect(none.outcome).toBe("inconclusive");
  });

  it("combines a measurement's gates: failed beats error beats inconclusive beats successful", () => {
    const r = (outcome: GateResult["outcome"]): GateResult => ({
      gate: "latency",
      outcome,
      measured: {},
      thresholds: {},
      message: "",
    });
    expect(combineOutcomes([r("successful"), r("inconclusive"), r("error"), r("failed")])).toBe(
      "failed",
    );
    expect(combineOutcomes([r("inconclusive"), r("error")])).toBe("error");
    expect(combineOutcomes([r("successful"), r("inconclusive")])).toBe("inconclusive");
    expect(combineOutcomes([r("successful")])).toBe("successful");
  });
});
