/** Evaluate a registered variant on the worker (dense vs TARDIS vs baselines), as a stored job. */

import type { Variant } from "../variants/registry.js";
import type { WorkerHandle } from "../workers/worker-handle.js";
import type { Context } from "./context.js";
import { type FollowOptions, type FollowResult, followJob } from "./follow.js";
import { type Column, num, pct } from "./output.js";

/** What to evaluate on and against. */
export interface EvaluationRequest {
  readonly dataset: Record<string, string>;
  readonly baselines: readonly string[];
  readonly maxTokens?: number;
  readonly samplePrompt?: string;
  readonly sampleTokens?: number;
  /** Calibration text for the baselines' input norms; default: the worker's ("lee"). */
  readonly calibration?: Record<string, string>;
}

/** Store an evaluate job for `variant` and run it here. */
export async function evaluateVariant(
  ctx: Context,
  worker: WorkerHandle,
  variant: Variant,
  request: EvaluationRequest,
  options: FollowOptions = {},
): Promise<FollowResult> {
  const { job } = ctx.jobs.create({
    kind: "evaluate",
    name: variant.name,
    spec: {
      variantId: variant.id,
      request: {
        variantPath: variant.path,
        dataset: request.dataset,
        baselines: [...request.baselines],
        ...(request.maxTokens === undefined ? {} : { maxTokens: request.maxTokens }),
        ...(request.samplePrompt === undefined ? {} : { samplePrompt: request.samplePrompt }),
        ...(request.sampleTokens === undefined ? {} : { sampleTokens: request.sampleTokens }),
        ...(request.calibration === undefined ? {} : { calibration: request.calibration }),
      },
    },
  });
  ctx.jobs.claim(job.id);
  return followJob(ctx, worker, job.id, { title: `evaluate ${variant.name}`, ...options });
}

/** A row of an evaluation's comparison table. */
export type ComparisonRow = Record<string, unknown>;

/** Columns of the dense / TARDIS / baseline comparison. */
export const COMPARISON_COLUMNS: readonly Column<ComparisonRow>[] = [
  { header: "model", cell: (r) => String(r.name ?? "") },
  { header: "FFN reduction", cell: (r) => pct(r.ffnReduction) },
  { header: "perplexity", cell: (r) => num(r.perplexity) },
  {
    header: "vs dense",
    cell: (r) => (typeof r.perplexityRatio === "number" ? `×${r.perplexityRatio.toFixed(3)}` : "-"),
  },
  { header: "seconds", cell: (r) => num(r.seconds, 1) },
];
