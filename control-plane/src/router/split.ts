/**
 * A traffic split: percent weights over variants. A request's sticky bucket in [0, 100) picks the
 * variant whose cumulative range holds it; variants keep their order, so with [baseline,
 * candidate] the candidate owns the top `weight` buckets and a growing weight only ever moves
 * sessions from the baseline to the candidate, never back.
 */

/** One variant's share of traffic, in percent. */
export interface VariantWeight {
  readonly variant: string;
  readonly weight: number;
}

/** The split of one rollout at one step of one revision. */
export interface TrafficSplit {
  readonly revision: string;
  readonly step: number;
  /** Weights sum to 100. */
  readonly weights: readonly VariantWeight[];
}

/** Why a split cannot be used. */
export class InvalidSplitError extends Error {
  override readonly name = "InvalidSplitError";
}

/** Check weights: finite, ≥ 0, at least one variant, variants distinct, sum 100. */
export function validateSplit(split: TrafficSplit): void {
  if (split.weights.length === 0) throw new InvalidSplitError("expected at least one variant");
  const seen = new Set<string>();
  let sum = 0;
  for (const { variant, weight } of split.weights) {
    if (seen.has(variant)) throw new InvalidSplitError(`variant ${variant} appears twice`);
    seen.add(variant);
    if (!Number.isFinite(weight) || weight < 0) {
      throw new InvalidSplitError(`weight of ${variant} must be ≥ 0, got ${weight}`);
    }
    sum += weight;
  }
  if (Math.abs(sum - 100) > 1e-9)
    throw new InvalidSplitError(`weights sum to ${sum}, expected 100`);
}

/** The variant whose cumulative weight range holds `bucket` (in [0, 100)). */
export function variantForBucket(split: TrafficSplit, bucket: number): string {
  // Baseline first: the candidate of [baseline, candidate] owns [100 - weight, 100).
  let upper = 0;
  let last: string | undefined;
  for (const { variant, weight } of split.weights) {
    if (weight <= 0) continue;
    upper += weight;
    last = variant;
    if (bucket < upper) return variant;
  }
  if (last === undefined) throw new InvalidSplitError("every weight is 0");
  return last;
}
