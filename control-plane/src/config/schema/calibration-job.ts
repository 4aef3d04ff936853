/**
 * `kind: CalibrationJob` — fold one model into a TARDIS variant.
 *
 * `spec.method` mirrors the Python `tardis.FoldConfig` field for field (snake_case there, camelCase
 * here), with the same defaults and the same allowed ranges; a test compares the defaults with
 * python-worker/tardis/config.py.
 */

import { z } from "zod";
import { document, localPath, textSource } from "./common.js";

/** Method parameters: the YAML face of `tardis.FoldConfig` (METHOD.md §2–3). */
export const foldMethod = z
  .strictObject({
    coverage: z
      .number()
      .gt(0)
      .lt(1)
      .default(0.85)
      .describe(
        "Fraction of each neuron's calibration inputs its range must hold (shortest such interval; the lines are fitted there); in (0, 1).",
      ),
    predictorBits: z
      .literal([2, 3, 4])
      .default(2)
      .describe("Bits per weight of the predictor's quantized copy of W1: 2, 3 or 4."),
    predictorMethod: z
      .enum(["rtn", "gptq"])
      .default("gptq")
      .describe(
        'How W1 is quantized for the predictor: "rtn" (round to nearest) or "gptq" (error feedback through the calibration Hessian; fewer fallbacks).',
      ),
    groupSize: z
      .int()
      .min(8)
      .default(128)
      .describe("Weights of one W1 row that share a predictor scale and offset; at least 8."),
    marginPolicy: z
      .enum(["recall", "quantile"])
      .default("recall")
      .describe(
        'How the per-neuron margin is chosen: "recall" (smallest margin reaching targetRecall) or "quantile" (marginQuantile of |z − ẑ|).',
      ),
    targetRecall: z
      .number()
      .min(0.5)
      .lt(1)
      .default(0.997)
      .describe('Per-neuron calibration recall the "recall" margin policy aims for; in [0.5, 1).'),
    marginQuantile: z
      .number()
      .min(0.5)
      .lt(1)
      .default(0.999)
      .describe('Quantile of |z − ẑ| used as the margin by the "quantile" policy; in [0.5, 1).'),
    bandTolerance: z
      .number()
      .min(0)
      .max(16)
      .default(2.0)
      .describe(
        "Recompute a neuron only where its line misfits by more than this many times the largest misfit inside its range (the range widens to that band); 0 = everything outside the range; in [0, 16].",
      ),
    foldFraction: z
      .number()
      .min(0)
      .max(1)
      .default(1.0)
      .describe("Fraction of neurons folded; the rest ('hot') are computed exactly; in [0, 1]."),
    calibTokens: z
      .int()
      .min(16)
      .default(32768)
      .describe("Calibration tokens used to fit ranges, lines and margins; at least 16."),
    heldoutTokens: z
      .int()
      .min(0)
      .default(4096)
      .describe(
        "Held-out tokens (after the calibration tokens) on which fallback rate and recall are measured.",
      ),
    seqLen: z
      .int()
      .min(2)
      .default(256)
      .describe("Length of each calibration sequence; at least 2."),
    batchSize: z.int().min(1).default(8).describe("Calibration sequences per forward pass."),
    prefill: z
      .enum(["dense", "tardis"])
      .default("dense")
      .describe('How multi-token (prefill) steps run: "dense" (default) or "tardis".'),
    histogramBins: z
      .int()
      .min(16)
      .max(4096)
      .default(512)
      .describe("Bins per neuron of the bounded-memory pre-activation histogram; in [16, 4096]."),
    clipSearch: z
      .boolean()
      .default(true)
      .describe("Search a per-group clipping ratio for the round-to-nearest predictor."),
  })
  .describe("Method parameters, mirroring tardis.FoldConfig (camelCase here).");

/** Parsed `spec.method`, defaults filled in. */
export type FoldMethod = z.output<typeof foldMethod>;

/** Baseline methods the evaluation can compare against, at the same FFN reduction. */
export const BASELINES = ["magnitude", "wanda", "ria"] as const;

const calibrationSpec = z
  .strictObject({
    model: z
      .strictObject({
        path: localPath(
          "Folder of the base model in HuggingFace format (config.json, weights, tokenizer)",
        ),
      })
      .describe("The base model to fold."),
    dataset: textSource("calibration text").describe(
      "Calibration text: exactly one of `path` or `builtin`.",
    ),
    method: foldMethod.prefault({}),
    output: z
      .strictObject({
        dir: localPath("Folder the variant artifact is written under"),
      })
      .optional()
      .describe("Where the variant goes; default: the control plane's variant store."),
    evaluation: z
      .strictObject({
        evalSet: textSource("held-out evaluation text").describe(
          "Held-out text for perplexity and the cloze proxy: exactly one of `path` or `builtin`.",
        ),
        baselines: z
          .array(z.enum(BASELINES))
          .refine((list) => new Set(list).size === list.length, {
            error: "expected each baseline at most once",
          })
          .default([])
          .describe(
            "Baselines evaluated at the same FFN reduction as the variant: magnitude, wanda, ria.",
          ),
      })
      .optional()
      .describe("Evaluate the variant against the dense model (and baselines) after calibration."),
  })
  .describe("What to calibrate, on which text, with which parameters.");

/** Schema of a whole `kind: CalibrationJob` document. */
export const calibrationJobDocument = document("CalibrationJob", calibrationSpec).describe(
  "A job that calibrates a base model into a TARDIS variant.",
);

/** A parsed CalibrationJob, defaults filled in. */
export type CalibrationJob = z.output<typeof calibrationJobDocument>;
