/**
 * `kind: Rollout` — shift traffic from a baseline variant to a candidate by steps, checking gates
 * (Argo Rollouts semantics: a successful analysis continues, a failed one aborts, an inconclusive
 * one pauses; see CONTROL-PLANE.md).
 */

import { z } from "zod";
import { atLeastOneOf, document, duration, exactlyOneOf, textSource } from "./common.js";

/** Names of the gates, as `spec.gates` keys and as `analysis.gates` entries. */
export const GATE_NAMES = ["accuracy", "latency", "errorRate", "fallbackRate"] as const;

/** One of {@link GATE_NAMES}. */
export type GateName = (typeof GATE_NAMES)[number];

const variantId = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._:@/+-]*$/, { error: "expected a variant id (no spaces)" });

// A gate with no threshold would check nothing.
const accuracyThresholds = atLeastOneOf(["maxPerplexityRatio", "maxClozeDrop"]);
const latencyThresholds = atLeastOneOf(["minTokensPerSecRatio", "maxTtftRatio"]);
const stepAction = exactlyOneOf(["setWeight", "pause", "analysis"]);

const gates = z
  .strictObject({
    accuracy: z
      .strictObject({
        evalSet: textSource("held-out evaluation text").describe(
          "Held-out text both variants are scored on: exactly one of `path` or `builtin`.",
        ),
        maxPerplexityRatio: z
          .number()
          .min(1)
          .optional()
          .describe(
            "Fail when candidate perplexity / baseline perplexity exceeds this (e.g. 1.05).",
          ),
        maxClozeDrop: z
          .number()
          .min(0)
          .max(1)
          .optional()
          .describe("Fail when cloze accuracy drops by more than this, absolute (e.g. 0.02)."),
        minSamples: z
          .int()
          .min(1)
          .default(200)
          .describe("Fewer samples than this make the analysis inconclusive."),
      })
      .refine(accuracyThresholds.check, { error: accuracyThresholds.error })
      .meta(accuracyThresholds.jsonSchema)
      .optional()
      .describe("Accuracy of the candidate against the baseline on a named eval set."),
    latency: z
      .strictObject({
        minTokensPerSecRatio: z
          .number()
          .gt(0)
          .optional()
          .describe("Fail when candidate tokens/s / baseline tokens/s is below this."),
        maxTtftRatio: z
          .number()
          .gt(0)
          .optional()
          .describe("Fail when candidate time-to-first-token / baseline TTFT exceeds this."),
      })
      .refine(latencyThresholds.check, { error: latencyThresholds.error })
      .meta(latencyThresholds.jsonSchema)
      .optional()
      .describe("Latency of the candidate relative to the baseline."),
    errorRate: z
      .strictObject({
        max: z
          .number()
          .min(0)
          .max(1)
          .describe("Fail when the candidate's error rate exceeds this."),
      })
      .optional()
      .describe("Share of candidate requests that failed."),
    fallbackRate: z
      .strictObject({
        envelopeFactor: z
          .number()
          .min(1)
          .default(2)
          .describe(
            "Fail when any layer's live fallback rate exceeds this factor × its calibrated rate.",
          ),
      })
      .optional()
      .describe("Live per-layer fallback rate inside the envelope measured at calibration."),
  })
  .describe("Gates checked by analysis steps and during the watch window.");

const step = z
  .strictObject({
    setWeight: z
      .int()
      .min(0)
      .max(100)
      .optional()
      .describe("Send this percent of traffic to the candidate."),
    pause: z
      .strictObject({
        duration: duration.optional().describe("How long to wait; absent: until `rollout resume`."),
      })
      .optional()
      .describe("Wait for a duration, or indefinitely with `pause: {}`."),
    analysis: z
      .strictObject({
        gates: z
          .array(z.enum(GATE_NAMES))
          .min(1)
          .optional()
          .describe("Gates to check; default: every gate in spec.gates."),
        count: z.int().min(1).default(1).describe("Number of measurements."),
        interval: duration.default("1m").describe("Time between measurements."),
      })
      .optional()
      .describe("Check gates now: success continues, failure aborts, inconclusive pauses."),
  })
  .refine(stepAction.check, { error: stepAction.error })
  .meta({ minProperties: 1, maxProperties: 1 })
  .describe("One step: exactly one of setWeight, pause, analysis.");

/** A parsed rollout step. */
export type RolloutStep = z.output<typeof step>;

const rolloutSpec = z
  .strictObject({
    baseline: variantId.describe("Variant id serving traffic now (e.g. the dense base model's)."),
    candidate: variantId.describe("Variant id to roll out."),
    steps: z
      .array(step)
      .min(1)
      .describe("Steps, run in order; after the last, the candidate is promoted."),
    gates: gates.prefault({}),
    failureLimit: z
      .int()
      .min(0)
      .default(0)
      .describe("Failed measurements tolerated before the rollout aborts."),
    inconclusiveLimit: z
      .int()
      .min(0)
      .default(0)
      .describe("Inconclusive measurements tolerated before the rollout pauses."),
    consecutiveErrorLimit: z
      .int()
      .min(0)
      .default(4)
      .describe("Consecutive measurement errors (metric unavailable) tolerated before aborting."),
    watchWindow: duration
      .default("10m")
      .describe("After promotion, keep checking gates this long and revert instantly on failure."),
  })
  .superRefine((spec, ctx) => {
    if (spec.candidate === spec.baseline) {
      ctx.addIssue({
        code: "custom",
        path: ["candidate"],
        message: "expected a candidate different from the baseline",
      });
    }
    const configured = new Set(GATE_NAMES.filter((name) => spec.gates[name] !== undefined));
    spec.steps.forEach((item, index) => {
      if (item.analysis === undefined) return;
      if (configured.size === 0) {
        ctx.addIssue({
          code: "custom",
          path: ["steps", index, "analysis"],
          message: "expected at least one gate in spec.gates for an analysis step to check",
        });
        return;
      }
      item.analysis.gates?.forEach((gate, gateIndex) => {
        if (!configured.has(gate)) {
          ctx.addIssue({
            code: "custom",
            path: ["steps", index, "analysis", "gates", gateIndex],
            message: `expected a gate defined in spec.gates (${[...configured].join(", ")})`,
          });
        }
      });
    });
  })
  .describe("Baseline, candidate, steps, gates and limits.");

/** Schema of a whole `kind: Rollout` document. */
export const rolloutDocument = document("Rollout", rolloutSpec).describe(
  "A progressive rollout of a candidate variant with accuracy, latency and fallback gates.",
);

/** A parsed Rollout, defaults filled in. */
export type Rollout = z.output<typeof rolloutDocument>;
