/**
 * The live numbers behind the rollout gates: accuracy from worker Evaluate jobs (each variant
 * scored once per eval set, its perplexity through the folded FFNs), per-layer fallback counters
 * from WorkerService.Stats on every worker that has the variant loaded.
 */

import { randomUUID } from "node:crypto";
import type {
  AccuracySample,
  EvalSetRef,
  LiveSources,
  MeasurementQuery,
  WorkerLayerCounters,
} from "../rollouts/index.js";
import type { RequestStats } from "../router/index.js";
import type { VariantRegistry } from "../variants/registry.js";
import { ApiError } from "./errors.js";
import type { Fleet } from "./fleet.js";

/** Settings of the accuracy scoring. */
export interface AccuracySettings {
  /** Cap on the eval text, in tokens (both variants see the same text). Default 4096. */
  readonly maxTokens?: number;
  /** Sliding-window context and stride (worker defaults when absent). */
  readonly context?: number;
  readonly stride?: number;
}

interface Scored {
  readonly perplexity: number;
  readonly tokens: number;
}

/** LiveSources over the fleet: Evaluate for accuracy, Stats for fallback counters. */
export function liveSources(
  fleet: Fleet,
  variants: VariantRegistry,
  requests: RequestStats,
  settings: AccuracySettings = {},
): LiveSources {
  const scores = new Map<string, Promise<Scored>>();

  const score = (variantId: string, evalSet: EvalSetRef): Promise<Scored> => {
    const key = JSON.stringify([variantId, evalSet.path, evalSet.builtin]);
    let pending = scores.get(key);
    if (pending === undefined) {
      pending = evaluate(fleet, variants, variantId, evalSet, settings);
      scores.set(key, pending);
      pending.catch(() => scores.delete(key));
    }
    return pending;
  };

  return {
    requests,
    async layerCounters(variant: string): Promise<readonly WorkerLayerCounters[]> {
      const out: WorkerLayerCounters[] = [];
      const serving = fleet.list().filter((v) => v.healthy && v.loaded.has(variant));
      if (serving.length === 0) throw new Error(`no healthy worker has ${variant} loaded`);
      for (const view of serving) {
        const client = await view.member.handle.connect(AbortSignal.timeout(5_000));
        const stats = await client.stats(variant);
        for (const v of stats.variants) {
          if (v.variantId !== variant) continue;
          for (const layer of v.layers) {
            out.push({
              layer: layer.layer,
              tokens: layer.tokens,
              fallbackRate: layer.fallbackRate ?? undefined,
              calibratedFallbackRate: layer.calibratedFallbackRate ?? undefined,
            });
          }
        }
      }
      return out;
    },
    async accuracy(query: MeasurementQuery, evalSet: EvalSetRef): Promise<AccuracySample> {
      // One job at a time per worker: score the two variants one after the other.
      const baseline = await score(query.baseline, evalSet);
      const candidate = await score(query.candidate, evalSet);
      return {
        samples: Math.min(baseline.tokens, candidate.tokens),
        baselinePerplexity: baseline.perplexity,
        candidatePerplexity: candidate.perplexity,
      };
    },
  };
}

async function evaluate(
  fleet: Fleet,
  variants: VariantRegistry,
  variantId: string,
  evalSet: EvalSetRef,
  settings: AccuracySettings,
): Promise<Scored> {
  const variant = variants.get(variantId);
  if (variant === undefined) throw new ApiError(5, `variant ${variantId} is not registered`);
  const { client } = await fleet.anyClient(AbortSignal.timeout(30_000));
  const dataset =
    evalSet.path !== undefined ? { path: evalSet.path } : { builtin: evalSet.builtin ?? "lee" };
  const events = client.evaluate({
    jobId: `gate-${variantId.slice(0, 12)}-${randomUUID().slice(0, 8)}`,
    variantPath: variant.path,
    dataset,
    maxTokens: String(settings.maxTokens ?? 4096),
    prefill: "tardis",
    ...(settings.context !== undefined ? { context: settings.context } : {}),
    ...(settings.stride !== undefined ? { stride: settings.stride } : {}),
  });
  for await (const event of events) {
    if (event.event === "completed") {
      const m = event.completed?.metrics;
      const perplexity = Number(m?.perplexityVariant);
      const tokens = Number(m?.evalTokens ?? 0);
      if (m === null || m === undefined || m.perplexityVariant == null) {
        throw new Error(`the evaluation of ${variantId} reported no perplexity`);
      }
      return { perplexity, tokens };
    }
    if (event.event === "failed") {
      throw new Error(
        `evaluating ${variantId} failed: ${event.failed?.code ?? ""} ${event.failed?.message ?? ""}`,
      );
    }
    if (event.event === "cancelled") throw new Error(`evaluating ${variantId} was cancelled`);
  }
  throw new Error(`the evaluation of ${variantId} ended without a result`);
}
