/**
 * The ControlPlane gRPC API (tardis/v1/control_plane.proto) next to grpc.health.v1 and server
 * reflection: a bearer-token interceptor, TLS when configured, the rollout engine driving the
 * Router and the workers' LoadVariant, routed Generate with deadlines and cancellation passed on to
 * the worker, and a Prometheus metrics endpoint.
 */

import { readFileSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation } from "grpc-health-check";
import type { Logger } from "pino";
import { parseListenAddress } from "../config/index.js";
import { JobStore } from "../jobs/job-store.js";
import { LiveMeasurements, RolloutEngine, SqliteRolloutStore } from "../rollouts/index.js";
import { RequestStats, Router } from "../router/index.js";
import type { Db } from "../store/database.js";
import { VariantRegistry } from "../variants/registry.js";
import { controlPlaneDefinition, controlPlaneProtos } from "../workers/proto.js";
import { authInterceptor } from "./auth.js";
import { Fleet, type FleetMember } from "./fleet.js";
import { type AccuracySettings, liveSources } from "./live-sources.js";
import { ApiMetrics } from "./metrics.js";
import { controlPlaneHandlers, JobRuns } from "./service.js";

/** Everything `tardis serve` (or a test) decides. */
export interface ControlPlaneOptions {
  /** The control plane's database (jobs, variants, rollouts). */
  readonly db: Db;
  /** State folder (calibration outputs of jobs submitted through the API). */
  readonly home: string;
  readonly workers: readonly FleetMember[];
  /** host:port or unix:/path; port 0 picks a free one. */
  readonly listen: string;
  /** Bearer token; undefined = no auth (only allowed on loopback, which the config enforces). */
  readonly token?: string | undefined;
  readonly tls?: { readonly certFile: string; readonly keyFile: string } | undefined;
  /** host:port of the metrics endpoint; null = none. */
  readonly metricsListen?: string | null;
  readonly accuracy?: AccuracySettings;
  readonly log?: Logger;
}

/** A running control plane. */
export class ControlPlaneServer {
  readonly jobs: JobStore;
  readonly variants: VariantRegistry;
  readonly stats = new RequestStats();
  readonly fleet: Fleet;
  readonly router: Router;
  readonly engine: RolloutEngine;
  readonly metrics: ApiMetrics;
  readonly runs: JobRuns;
  private readonly server: grpc.Server;
  private readonly health = new HealthImplementation({
    "": "NOT_SERVING",
    "tardis.v1.ControlPlane": "NOT_SERVING",
  });
  /** Bound API address, once started. */
  address = "";
  /** Bound metrics address ("" without one). */
  metricsAddress = "";
  private draining = false;

  constructor(private readonly options: ControlPlaneOptions) {
    const log = options.log;
    const onError = (error: unknown): void => {
      log?.warn({ err: error }, "control plane background error");
    };
    this.jobs = new JobStore(options.db);
    this.variants = new VariantRegistry(options.db);
    this.fleet = new Fleet(options.workers, this.variants, onError);
    this.router = new Router(this.fleet, this.stats);
    this.engine = new RolloutEngine({
      store: new SqliteRolloutStore(options.db),
      loader: this.fleet,
      traffic: this.router,
      measurements: new LiveMeasurements(
        liveSources(this.fleet, this.variants, this.stats, options.accuracy),
      ),
      onError,
    });
    this.metrics = new ApiMetrics(this.jobs, this.engine);
    this.runs = new JobRuns({
      db: options.db,
      jobs: this.jobs,
      variants: this.variants,
      fleet: this.fleet,
      log,
    });
    this.server = new grpc.Server({
      interceptors: [authInterceptor(options.token)],
      "grpc.max_receive_message_length": 16 * 1024 * 1024,
    });
    const p = controlPlaneProtos();
    this.server.addService(
      p.tardis.v1.ControlPlane.service,
      controlPlaneHandlers({
        home: options.home,
        db: options.db,
        jobs: this.jobs,
        variants: this.variants,
        fleet: this.fleet,
        router: this.router,
        engine: this.engine,
        metrics: this.metrics,
        draining: () => this.draining,
        runs: this.runs,
        ...(log ? { log } : {}),
      }),
    );
    this.health.addToServer(this.server);
    new ReflectionService(controlPlaneDefinition()).addToServer(this.server);
  }

  /**
   * Poll the workers, recover rollouts (and resume jobs a dead control plane left), start timers,
   * then listen (API, then metrics).
   */
  async start(): Promise<void> {
    await this.fleet.start();
    await this.engine.recover();
    this.engine.start();
    this.runs.resumeOrphans();
    const o = this.options;
    const credentials =
      o.tls === undefined
        ? grpc.ServerCredentials.createInsecure()
        : grpc.ServerCredentials.createSsl(
            null,
            [
              {
                cert_chain: readFileSync(o.tls.certFile),
                private_key: readFileSync(o.tls.keyFile),
              },
            ],
            false,
          );
    const port = await new Promise<number>((resolve, reject) => {
      this.server.bindAsync(o.listen, credentials, (error, bound) =>
        error ? reject(error) : resolve(bound),
      );
    });
    const parsed = parseListenAddress(o.listen);
    this.address = parsed?.kind === "tcp" ? `${parsed.host}:${port}` : o.listen;
    if (o.metricsListen) {
      const m = parseListenAddress(o.metricsListen);
      if (m?.kind !== "tcp")
        throw new Error(`metrics listen ${o.metricsListen}: expected host:port`);
      this.metricsAddress = await this.metrics.listen(m.host.replace(/^\[|\]$/g, ""), m.port);
    }
    this.health.setStatus("", "SERVING");
    this.health.setStatus("tardis.v1.ControlPlane", "SERVING");
  }

  /** Graceful stop: NOT_SERVING, finish calls in flight (up to `graceMs`), stop timers. */
  async stop(graceMs = 10_000): Promise<void> {
    this.draining = true;
    this.health.setStatus("", "NOT_SERVING");
    this.health.setStatus("tardis.v1.ControlPlane", "NOT_SERVING");
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, graceMs);
      timer.unref();
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    this.runs.detachAll();
    await this.engine.stop();
    await this.fleet.stop();
    await this.metrics.close();
  }
}
