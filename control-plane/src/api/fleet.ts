/**
 * The workers the API serves through: supervised (started by `tardis serve`) or remote ones, seen
 * by the Router as a {@link WorkerPool}. A poll keeps each worker's health and loaded variants
 * (Describe) current; the rollout engine's {@link VariantLoader} loads a variant on every worker
 * before any traffic shifts, and a worker that restarted gets its variants loaded again.
 */

import type { PoolWorker, WorkerPool } from "../router/index.js";
import type { VariantRegistry } from "../variants/registry.js";
import type { WorkerSupervisor } from "../workers/supervisor.js";
import type { WorkerClient } from "../workers/worker-client.js";
import type { WorkerHandle } from "../workers/worker-handle.js";
import { ApiError } from "./errors.js";

/** One worker of the deployment. */
export interface FleetMember {
  /** Unique id: `<pool>-<index>`. */
  readonly id: string;
  readonly pool: string;
  /** LoadVariant engine ("hf" or "vllm"). */
  readonly engine: string;
  readonly device: string;
  readonly handle: WorkerHandle;
  /** Present when this process runs the worker. */
  readonly supervisor?: WorkerSupervisor;
}

/** What the poll last saw of a worker. */
export interface WorkerView {
  readonly member: FleetMember;
  healthy: boolean;
  address: string;
  loaded: Set<string>;
  runningJobId: string;
  gpuName: string;
  engines: string[];
  telemetry: string;
  startedAt: number;
  state: string;
  /** When each variant was last confirmed loaded by a LoadVariant reply (ms). */
  loadedAt: Map<string, number>;
  /** LoadVariant calls in flight, by variant. */
  loading: Map<string, Promise<void>>;
}

const POLL_MS = 1_000;
/** How long a load waits for its worker to pass a health check before it counts as failed. */
const HEALTHY_AFTER_LOAD_MS = 60_000;

/** Every worker, its health and its loaded variants. */
export class Fleet implements WorkerPool {
  private readonly views: WorkerView[];
  /** Variants that must stay loaded (a rollout sends or may send them traffic). */
  private readonly wanted = new Map<string, string>();
  private timer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  private stopped = false;

  constructor(
    members: readonly FleetMember[],
    private readonly variants: VariantRegistry,
    private readonly onError: (error: unknown) => void = () => {},
  ) {
    this.views = members.map((member) => ({
      member,
      healthy: false,
      address: "",
      loaded: new Set(),
      runningJobId: "",
      gpuName: "",
      engines: [],
      telemetry: "",
      startedAt: Date.now(),
      state: "starting",
      loadedAt: new Map(),
      loading: new Map(),
    }));
  }

  /** The router's view: id, health, loaded variants. */
  workers(): readonly PoolWorker[] {
    return this.views.map((v) => ({
      id: v.member.id,
      healthy: v.healthy,
      variants: [...v.loaded],
    }));
  }

  /** Everything known about each worker (ListWorkers). */
  list(): readonly WorkerView[] {
    return this.views;
  }

  /** A worker by id. */
  member(id: string): FleetMember {
    const view = this.views.find((v) => v.member.id === id);
    if (view === undefined) throw new ApiError(14, `no worker ${id}`);
    return view.member;
  }

  /** The first healthy worker (jobs and accuracy evaluations run there). */
  async anyClient(signal?: AbortSignal): Promise<{ member: FleetMember; client: WorkerClient }> {
    const view = this.views.find((v) => v.healthy) ?? this.views[0];
    if (view === undefined) throw new ApiError(14, "the deployment has no workers");
    return { member: view.member, client: await view.member.handle.connect(signal) };
  }

  /** Poll once now, then every second until {@link stop}. */
  async start(): Promise<void> {
    await this.pollOnce();
    const loop = (): void => {
      if (this.stopped) return;
      this.timer = setTimeout(() => {
        this.polling = this.pollOnce().finally(loop);
      }, POLL_MS);
      this.timer.unref();
    };
    loop();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.polling?.catch(() => {});
  }

  /**
   * Load `variantId` on every healthy worker (VariantLoader): resolves once each has it, so the
   * router can shift traffic onto it; rejects (the rollout aborts) when it is unknown or a load fails.
   */
  async load(variantId: string): Promise<void> {
    const variant = this.variants.get(variantId);
    if (variant === undefined || variant.id !== variantId) {
      throw new ApiError(5, `variant ${variantId} is not registered (tardis variants ls)`);
    }
    this.wanted.set(variantId, variant.path);
    // Healthy workers load it now; one that is down gets it from the poll once it is back (and
    // is not routed to for this variant until then). With none healthy, wait for them to start.
    const healthy = this.views.filter((v) => v.healthy);
    const targets = healthy.length > 0 ? healthy : this.views;
    await Promise.all(targets.map((view) => this.loadOn(view, variantId, variant.path)));
  }

  private loadOn(view: WorkerView, variantId: string, path: string): Promise<void> {
    const pending = view.loading.get(variantId);
    if (pending !== undefined) return pending;
    const load = (async () => {
      const client = await view.member.handle.connect(AbortSignal.timeout(120_000));
      await client.loadVariant({ variantPath: path, engine: view.member.engine });
      view.loaded.add(variantId);
      view.loadedAt.set(variantId, Date.now());
      // Routable only once the worker also passes a health check (the router skips unhealthy
      // ones): a worker that is slow to answer one, e.g. busy right after a restart, gets time.
      const until = Date.now() + HEALTHY_AFTER_LOAD_MS;
      while (!view.healthy) {
        if (Date.now() >= until) {
          throw new ApiError(
            14,
            `worker ${view.member.id} loaded ${variantId} but failed its health checks for ` +
              `${HEALTHY_AFTER_LOAD_MS / 1000} s; check its log (tardis serve forwards it) and retry`,
          );
        }
        await this.pollView(view);
        if (!view.healthy) await new Promise((resolve) => setTimeout(resolve, 250));
      }
    })().finally(() => view.loading.delete(variantId));
    view.loading.set(variantId, load);
    return load;
  }

  private async pollOnce(): Promise<void> {
    await Promise.all(this.views.map((view) => this.pollView(view)));
  }

  private async pollView(view: WorkerView): Promise<void> {
    const supervisor = view.member.supervisor;
    let client: WorkerClient;
    try {
      if (supervisor !== undefined) {
        client = supervisor.client(); // throws while (re)starting
      } else {
        client = await view.member.handle.connect(AbortSignal.timeout(1_000));
      }
      const pollStart = Date.now();
      const health = await client.health({ timeoutMs: 1_500 });
      const info = await client.describe({ timeoutMs: 2_000 });
      const wasHealthy = view.healthy;
      view.healthy = health === "SERVING";
      view.state = view.healthy ? "serving" : "draining";
      view.address = client.address;
      // Keep loads confirmed after this Describe was sent (its reply may predate them).
      const loaded = new Set(info.loadedVariants);
      for (const [id, at] of view.loadedAt) if (at >= pollStart) loaded.add(id);
      view.loaded = loaded;
      view.runningJobId = info.runningJobId;
      view.gpuName = info.gpuName;
      view.engines = [...info.engines];
      view.telemetry = info.telemetryEndpoint;
      if (!wasHealthy && view.healthy) view.startedAt = Date.now();
      // A restarted worker lost its variants: load the wanted ones again (it is not routed to
      // for a variant until its Describe lists it).
      for (const [id, path] of this.wanted) {
        if (view.healthy && !view.loaded.has(id)) {
          void this.loadOn(view, id, path).catch(this.onError);
        }
      }
    } catch {
      view.healthy = false;
      view.loaded = new Set();
      view.state = supervisor === undefined ? "unreachable" : "restarting";
    }
  }
}
