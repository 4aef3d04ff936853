/**
 * Outcomes of routed requests per variant, kept for a while so that gates can read live error
 * rates and latencies over a window ("since the current split was applied"). Memory is bounded:
 * each variant keeps its most recent `capacity` requests.
 */

/** How one routed request ended. */
export interface RequestResult {
  readonly ok: boolean;
  /** Generated tokens per second of the request (final chunk's usage); absent on errors. */
  readonly tokensPerSec?: number;
  /** Time to first token in milliseconds; absent on errors. */
  readonly ttftMs?: number;
}

/** One variant's requests in a window. */
export interface WindowStats {
  readonly requests: number;
  readonly errors: number;
  /** Means over the successful requests that reported them; 0 when there are none. */
  readonly tokensPerSec: number;
  readonly ttftMs: number;
}

interface Entry extends RequestResult {
  readonly at: number;
}

/** Recent request outcomes per variant. */
export class RequestStats {
  private readonly byVariant = new Map<string, Entry[]>();

  constructor(
    private readonly capacity = 50_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** Record a finished request of `variant`. */
  record(variant: string, result: RequestResult): void {
    let entries = this.byVariant.get(variant);
    if (entries === undefined) {
      entries = [];
      this.byVariant.set(variant, entries);
    }
    entries.push({ ...result, at: this.now() });
    // Drop the oldest half at once, so recording stays amortised O(1).
    if (entries.length > this.capacity) entries.splice(0, entries.length - this.capacity / 2);
  }

  /** Requests of `variant` finished at or after `since` (ms since the epoch). */
  window(variant: string, since: number): WindowStats {
    let requests = 0;
    let errors = 0;
    let tps = 0;
    let tpsCount = 0;
    let ttft = 0;
    let ttftCount = 0;
    for (const entry of this.byVariant.get(variant) ?? []) {
      if (entry.at < since) continue;
      requests++;
      if (!entry.ok) {
        errors++;
        continue;
      }
      if (entry.tokensPerSec !== undefined) {
        tps += entry.tokensPerSec;
        tpsCount++;
      }
      if (entry.ttftMs !== undefined) {
        ttft += entry.ttftMs;
        ttftCount++;
      }
    }
    return {
      requests,
      errors,
      tokensPerSec: tpsCount === 0 ? 0 : tps / tpsCount,
      ttftMs: ttftCount === 0 ? 0 : ttft / ttftCount,
    };
  }
}
