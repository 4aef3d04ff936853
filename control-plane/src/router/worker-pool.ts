/**
 * The workers a router can send requests to, and how it picks one for a variant: the healthy
 * worker with the variant loaded and the fewest requests in flight, ties broken round-robin.
 */

/** A worker as the router sees it. */
export interface PoolWorker {
  readonly id: string;
  readonly healthy: boolean;
  /** Variant ids loaded on this worker. */
  readonly variants: readonly string[];
}

/** Source of the current workers (the supervisor's registry in the control plane). */
export interface WorkerPool {
  workers(): readonly PoolWorker[];
}

/** A pool whose workers are set by hand: for tests and single-process setups. */
export class StaticWorkerPool implements WorkerPool {
  private readonly byId = new Map<string, PoolWorker>();

  constructor(workers: readonly PoolWorker[] = []) {
    for (const worker of workers) this.byId.set(worker.id, worker);
  }

  workers(): readonly PoolWorker[] {
    return [...this.byId.values()];
  }

  /** Add or replace a worker. */
  put(worker: PoolWorker): void {
    this.byId.set(worker.id, worker);
  }

  /** Record that `variant` is now loaded on worker `id`. */
  markLoaded(id: string, variant: string): void {
    const worker = this.byId.get(id);
    if (worker === undefined) throw new Error(`no worker ${id} in the pool`);
    if (!worker.variants.includes(variant)) {
      this.byId.set(id, { ...worker, variants: [...worker.variants, variant] });
    }
  }

  setHealthy(id: string, healthy: boolean): void {
    const worker = this.byId.get(id);
    if (worker === undefined) throw new Error(`no worker ${id} in the pool`);
    this.byId.set(id, { ...worker, healthy });
  }
}

/** Healthy workers that have `variant` loaded. */
export function servingWorkers(pool: WorkerPool, variant: string): PoolWorker[] {
  return pool.workers().filter((w) => w.healthy && w.variants.includes(variant));
}

/** Least-loaded choice with a round-robin cursor among equally loaded workers. */
export class LeastLoadedPicker {
  private readonly inFlight = new Map<string, number>();
  private cursor = 0;

  /** Pick one of `workers` (non-empty) and count a request in flight on it. */
  acquire(workers: readonly PoolWorker[]): PoolWorker {
    const load = (w: PoolWorker): number => this.inFlight.get(w.id) ?? 0;
    const least = Math.min(...workers.map(load));
    const tied = workers.filter((w) => load(w) === least);
    const chosen = tied[this.cursor++ % tied.length] as PoolWorker;
    this.inFlight.set(chosen.id, least + 1);
    return chosen;
  }

  /** A request on worker `id` finished. */
  release(id: string): void {
    const count = this.inFlight.get(id) ?? 0;
    if (count <= 1) this.inFlight.delete(id);
    else this.inFlight.set(id, count - 1);
  }

  /** Requests in flight on worker `id`. */
  load(id: string): number {
    return this.inFlight.get(id) ?? 0;
  }
}
