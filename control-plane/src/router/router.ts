/**
 * The traffic router behind `Generate`: each rollout's split (set by the rollout engine), a sticky
 * bucket per session or tenant, and a worker from the pool for the chosen variant. It refuses a
 * split that would send traffic to a variant no healthy worker has loaded (load before shift).
 */

import type { RequestResult, RequestStats } from "./request-stats.js";
import { type TrafficSplit, validateSplit, variantForBucket } from "./split.js";
import { stickyBucket } from "./sticky-hash.js";
import {
  LeastLoadedPicker,
  type PoolWorker,
  servingWorkers,
  type WorkerPool,
} from "./worker-pool.js";

/** Who is asking: the first of session id, tenant id, request id is the sticky key. */
export interface RouteRequest {
  /** Rollout whose split applies; may be left out when there is exactly one. */
  readonly rollout?: string;
  readonly sessionId?: string;
  readonly tenantId?: string;
  readonly requestId?: string;
}

/** Where one request goes; call `release` when it finishes (with its outcome, to feed the gates). */
export interface Route {
  readonly rollout: string;
  readonly revision: string;
  readonly variant: string;
  readonly worker: PoolWorker;
  /** The request's sticky point in [0, 100). */
  readonly bucket: number;
  /** The request finished; `result` (when given) is recorded for the variant's live gates. */
  release(result?: RequestResult): void;
}

/** A split names a variant that no healthy worker has loaded. */
export class VariantNotLoadedError extends Error {
  override readonly name = "VariantNotLoadedError";
}

/** No split to route by, or no healthy worker for the chosen variant. */
export class NoRouteError extends Error {
  override readonly name = "NoRouteError";
}

/** Weighted, sticky routing over a pool of workers. */
export class Router {
  private readonly splits = new Map<string, TrafficSplit>();
  private readonly picker = new LeastLoadedPicker();
  private anonymous = 0;

  /** `stats`, when given, collects the outcomes passed to {@link Route.release}. */
  constructor(
    private readonly pool: WorkerPool,
    private readonly stats?: RequestStats,
  ) {}

  /**
   * Use `split` for `rollout` from now on. Throws {@link VariantNotLoadedError} (and keeps the old
   * split) when a variant with weight > 0 has no healthy worker that loaded it.
   */
  applySplit(rollout: string, split: TrafficSplit): void {
    validateSplit(split);
    for (const { variant, weight } of split.weights) {
      if (weight > 0 && servingWorkers(this.pool, variant).length === 0) {
        throw new VariantNotLoadedError(
          `cannot send ${weight}% of ${rollout} to ${variant}: no healthy worker has it loaded (load it first)`,
        );
      }
    }
    this.splits.set(rollout, split);
  }

  /** Stop routing for a rollout. */
  removeRollout(rollout: string): void {
    this.splits.delete(rollout);
  }

  /** The split in force for `rollout`, if any. */
  split(rollout: string): TrafficSplit | undefined {
    return this.splits.get(rollout);
  }

  /** Pick the variant and worker for one request. */
  route(request: RouteRequest): Route {
    const rollout = request.rollout ?? this.onlyRollout();
    const split = this.splits.get(rollout);
    if (split === undefined) throw new NoRouteError(`no traffic split for rollout ${rollout}`);
    const key =
      request.sessionId ?? request.tenantId ?? request.requestId ?? `anonymous-${this.anonymous++}`;
    // Scoped by revision only: within a revision a session only ever moves baseline → candidate.
    const bucket = stickyBucket(split.revision, key);
    const variant = variantForBucket(split, bucket);
    const workers = servingWorkers(this.pool, variant);
    if (workers.length === 0) {
      throw new NoRouteError(`no healthy worker has ${variant} loaded (rollout ${rollout})`);
    }
    const worker = this.picker.acquire(workers);
    let released = false;
    return {
      rollout,
      revision: split.revision,
      variant,
      worker,
      bucket,
      release: (result?: RequestResult) => {
        if (released) return;
        released = true;
        this.picker.release(worker.id);
        if (result !== undefined) this.stats?.record(variant, result);
      },
    };
  }

  /** Requests in flight on worker `id`. */
  inFlight(id: string): number {
    return this.picker.load(id);
  }

  private onlyRollout(): string {
    const names = [...this.splits.keys()];
    if (names.length !== 1) {
      throw new NoRouteError(
        names.length === 0
          ? "no rollout is routing traffic"
          : `name the rollout: ${names.length} are routing (${names.join(", ")})`,
      );
    }
    return names[0] as string;
  }
}
