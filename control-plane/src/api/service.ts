/** The tardis.v1.ControlPlane handlers: requests → engine, stores, router and workers. */

import { performance } from "node:perf_hooks";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { calibrationSpec } from "../cli/calibration-spec.js";
import { documentsOfKind, parseConfigText, type Rollout } from "../config/index.js";
import type { ControlPlaneHandlers } from "../gen/tardis/v1/ControlPlane.js";
import type { JobUpdate } from "../gen/tardis/v1/JobUpdate.js";
import type { SubmitJobRequest__Output } from "../gen/tardis/v1/SubmitJobRequest.js";
import { JobRun } from "../jobs/job-runner.js";
import type { JobStore } from "../jobs/job-store.js";
import { isTerminal } from "../jobs/state-machine.js";
import { type RolloutEngine, revisionOf } from "../rollouts/index.js";
import { NoRouteError, type Route, type Router } from "../router/index.js";
import type { Db } from "../store/database.js";
import type { VariantRegistry } from "../variants/registry.js";
import { WorkerCallError } from "../workers/worker-client.js";
import {
  decisionMessage,
  historyMessage,
  jobMessage,
  revisionMessage,
  rolloutMessage,
  timestamp,
  variantMessage,
} from "./convert.js";
import { ApiError, invalidConfig, invalidField, toServiceError } from "./errors.js";
import type { Fleet } from "./fleet.js";
import type { ApiMetrics } from "./metrics.js";

/** What the handlers use. */
export interface ServiceDeps {
  readonly home: string;
  readonly db: Db;
  readonly jobs: JobStore;
  readonly variants: VariantRegistry;
  readonly fleet: Fleet;
  readonly router: Router;
  readonly engine: RolloutEngine;
  readonly metrics: ApiMetrics;
  readonly draining: () => boolean;
  readonly runs: JobRuns;
  readonly log?: Logger;
}

/** Jobs this control plane runs on its workers (submitted through the API, or orphaned). */
export class JobRuns {
  private readonly runs = new Map<string, JobRun>();

  constructor(
    private readonly deps: {
      readonly db: Db;
      readonly jobs: JobStore;
      readonly variants: VariantRegistry;
      readonly fleet: Fleet;
      readonly log?: Logger | undefined;
    },
  ) {}

  /** Claim and run a job in the background on the first worker (no-op when owned elsewhere). */
  start(jobId: string): void {
    const { db, jobs, variants, fleet, log } = this.deps;
    const member = fleet.list()[0]?.member;
    if (member === undefined || this.runs.has(jobId) || !jobs.claim(jobId)) return;
    const run = new JobRun({ db, jobs, variants, worker: member.handle }, jobId);
    this.runs.set(jobId, run);
    void run
      .run()
      .catch((error: unknown) => log?.warn({ err: error, job: jobId }, "job run failed"))
      .finally(() => this.runs.delete(jobId));
  }

  /** Jobs left by a control plane that died: resumed here, once (each is claimed first). */
  resumeOrphans(): void {
    for (const job of this.deps.jobs.orphans()) this.start(job.id);
  }

  get(jobId: string): JobRun | undefined {
    return this.runs.get(jobId);
  }

  /** Stop following running jobs (the workers finish or checkpoint them). */
  detachAll(): void {
    for (const run of this.runs.values()) run.detach();
  }
}

type Callback<T> = grpc.sendUnaryData<T>;

/** Run a unary handler body; thrown errors become statuses. */
function unary<Req, Res>(
  body: (request: Req, call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res> | Res,
): grpc.handleUnaryCall<Req, Res> {
  return (call, callback: Callback<Res>) => {
    Promise.resolve()
      .then(() => body(call.request, call))
      .then(
        (value) => callback(null, value),
        (error: unknown) => callback(toServiceError(error)),
      );
  };
}

/** Parse and validate exactly one `kind: Rollout` document from YAML text. */
export function parseRolloutYaml(text: string, label = "<spec_yaml>"): Rollout {
  const loaded = documentsOfKind(parseConfigText(text, label), "Rollout");
  if (!loaded.ok) throw invalidConfig(loaded.errors);
  const [first, second] = loaded.documents;
  if (first === undefined) throw invalidField("spec_yaml", "expected a Rollout document");
  if (second !== undefined) {
    throw invalidField("spec_yaml", "expected exactly one Rollout document, got several");
  }
  return first.config;
}

const BASELINES = ["magnitude", "wanda", "ria"];

/** A SubmitJob request as the job store's create() input (kind, name, spec); INVALID_ARGUMENT. */
function jobSubmission(
  req: SubmitJobRequest__Output,
  deps: ServiceDeps,
): {
  kind: "calibrate" | "evaluate";
  name: string;
  spec: Record<string, unknown> | ((id: string) => Record<string, unknown>);
} {
  if (req.spec === "calibrationYaml") {
    const loaded = documentsOfKind(
      parseConfigText(req.calibrationYaml ?? "", "<calibration_yaml>"),
      "CalibrationJob",
    );
    if (!loaded.ok) throw invalidConfig(loaded.errors);
    const config = loaded.documents[0]?.config;
    if (config === undefined || loaded.documents.length !== 1) {
      throw invalidField("calibration_yaml", "expected exactly one CalibrationJob document");
    }
    return {
      kind: "calibrate",
      name: config.metadata.name,
      spec: (id) => ({ ...calibrationSpec(config, id, deps.home, "<calibration_yaml>") }),
    };
  }
  if (req.spec === "evaluate" && req.evaluate) {
    const e = req.evaluate;
    const variant = deps.variants.get(e.variantId);
    if (variant === undefined) {
      throw new ApiError(grpc.status.NOT_FOUND, `evaluate.variant_id: no variant ${e.variantId}`, [
        { field: "evaluate.variant_id", description: `no registered variant ${e.variantId}` },
      ]);
    }
    const unknown = e.baselines.filter((b) => !BASELINES.includes(b));
    if (unknown.length > 0) {
      throw invalidField(
        "evaluate.baselines",
        `unknown ${unknown.join(", ")}; expected ${BASELINES.join(", ")}`,
      );
    }
    if (e.prefill != null && e.prefill !== "dense" && e.prefill !== "tardis") {
      throw invalidField("evaluate.prefill", 'expected "dense" or "tardis"');
    }
    const dataset = e.dataset?.path
      ? { path: e.dataset.path }
      : { builtin: e.dataset?.builtin || "lee" };
    return {
      kind: "evaluate",
      name: variant.name,
      spec: {
        variantId: variant.id,
        request: {
          variantPath: variant.path,
          dataset,
          baselines: [...e.baselines],
          ...(e.maxTokens != null ? { maxTokens: Number(e.maxTokens) } : {}),
          ...(e.context != null ? { context: e.context } : {}),
          ...(e.stride != null ? { stride: e.stride } : {}),
          ...(e.prefill != null ? { prefill: e.prefill } : {}),
          ...(e.samplePrompt != null ? { samplePrompt: e.samplePrompt } : {}),
          ...(e.sampleTokens != null ? { sampleTokens: e.sampleTokens } : {}),
        },
      },
    };
  }
  throw invalidField("spec", "expected calibration_yaml or evaluate");
}

/** The handler table. */
export function controlPlaneHandlers(deps: ServiceDeps): ControlPlaneHandlers {
  const { jobs, variants, engine, router, fleet } = deps;
  const runs = deps.runs;

  const lastSeq = (jobId: string): number => {
    const row = deps.db
      .prepare<[string], { seq: number | null }>(
        "SELECT MAX(seq) AS seq FROM job_events WHERE job_id = ?",
      )
      .get(jobId);
    return row?.seq ?? 0;
  };
  const mustJob = (id: string) => {
    if (!id) throw invalidField("job_id", "expected a job id");
    const job = jobs.get(id);
    if (job === undefined) throw new ApiError(grpc.status.NOT_FOUND, `no job ${id}`);
    return job;
  };
  /** A registered variant by id, unique id prefix or name; NOT_FOUND naming the field. */
  const mustVariant = (ref: string, field: string) => {
    const v = variants.get(ref);
    if (v === undefined) {
      throw new ApiError(
        grpc.status.NOT_FOUND,
        `${field}: no registered variant ${ref} (tardis variants ls lists them)`,
        [{ field, description: `no registered variant ${ref}` }],
      );
    }
    return v;
  };
  const loadedOn = (variantId: string): string[] =>
    fleet
      .list()
      .filter((w) => w.loaded.has(variantId))
      .map((w) => w.member.id);

  return {
    // ---- Jobs ----
    SubmitJob: unary((req) => {
      if (!/^[A-Za-z0-9._:-]{1,128}$/.test(req.requestId)) {
        throw invalidField("request_id", "expected 1..128 characters of [A-Za-z0-9._:-]");
      }
      const submission = jobSubmission(req, deps);
      const { job, created } = jobs.create({ ...submission, requestId: req.requestId });
      // The same request_id must mean the same spec (compared as this job would have stored it).
      const specFor =
        typeof submission.spec === "function"
          ? submission.spec
          : () => submission.spec as Record<string, unknown>;
      if (
        !created &&
        (job.kind !== submission.kind ||
          JSON.stringify(job.spec) !== JSON.stringify(specFor(job.id)))
      ) {
        throw new ApiError(
          grpc.status.ALREADY_EXISTS,
          `request_id ${req.requestId} was used for job ${job.id} with another spec`,
        );
      }
      if (created) runs.start(job.id);
      return jobMessage(job, lastSeq(job.id));
    }),
    GetJob: unary((req) => {
      const job = mustJob(req.jobId);
      return jobMessage(job, lastSeq(job.id));
    }),
    ListJobs: unary((req) => {
      const wanted = new Set(req.states.map((s) => String(s).replace(/^JOB_STATE_/, "")));
      const size = Math.min(1000, req.pageSize > 0 ? req.pageSize : 100);
      const offset = req.pageToken ? Number(req.pageToken) : 0;
      if (!Number.isInteger(offset) || offset < 0) {
        throw invalidField("page_token", "expected a token from next_page_token");
      }
      const all = jobs.list().filter((j) => wanted.size === 0 || wanted.has(j.state));
      const page = all.slice(offset, offset + size);
      return {
        jobs: page.map((j) => jobMessage(j, lastSeq(j.id))),
        nextPageToken: offset + size < all.length ? String(offset + size) : "",
      };
    }),
    CancelJob: unary(async (req) => {
      const job = mustJob(req.jobId);
      if (job.state === "CANCELLING") return jobMessage(job, lastSeq(job.id));
      if (isTerminal(job.state)) {
        throw new ApiError(
          grpc.status.FAILED_PRECONDITION,
          `job ${job.id} already finished (${job.state})`,
        );
      }
      const run = runs.get(job.id);
      if (run !== undefined) await run.cancel(req.reason || "cancelled through the API");
      else if (job.state === "QUEUED")
        jobs.transition(job.id, "CANCELLED", "Cancelled", req.reason);
      else
        throw new ApiError(
          grpc.status.FAILED_PRECONDITION,
          `job ${job.id} is run by another process`,
        );
      const now = mustJob(job.id);
      return jobMessage(now, lastSeq(now.id));
    }),
    WatchJobs: (call) => {
      const { jobId, sinceSeq } = call.request;
      let since = Number(sinceSeq);
      let timer: NodeJS.Timeout | undefined;
      let closed = false;
      call.on("cancelled", () => {
        closed = true;
        clearTimeout(timer);
      });
      const send = (): void => {
        if (closed) return;
        if (deps.draining()) {
          closed = true;
          call.end();
          return;
        }
        try {
          const rows = jobId
            ? deps.db
                .prepare<
                  [string, number],
                  { rowid: number; job_id: string; seq: number; time: string }
                >(
                  "SELECT rowid, job_id, seq, time FROM job_events WHERE job_id = ? AND seq > ? ORDER BY seq",
                )
                .all(mustJob(jobId).id, since)
            : deps.db
                .prepare<[number], { rowid: number; job_id: string; seq: number; time: string }>(
                  "SELECT rowid, job_id, seq, time FROM job_events WHERE rowid > ? ORDER BY rowid",
                )
                .all(since);
          for (const row of rows) {
            const job = jobs.get(row.job_id);
            if (job === undefined) continue;
            const update: JobUpdate = {
              seq: String(jobId ? row.seq : row.rowid),
              time: timestamp(row.time),
              job: jobMessage(job, row.seq),
            };
            call.write(update);
            since = jobId ? row.seq : row.rowid;
          }
          timer = setTimeout(send, 250);
        } catch (error) {
          closed = true;
          call.emit("error", toServiceError(error));
        }
      };
      send();
    },

    // ---- Variants ----
    ListVariants: unary((req) => {
      const size = Math.min(1000, req.pageSize > 0 ? req.pageSize : 100);
      const offset = req.pageToken ? Number(req.pageToken) : 0;
      const all = variants.list();
      return {
        variants: all.slice(offset, offset + size).map((v) => variantMessage(v, loadedOn(v.id))),
        nextPageToken: offset + size < all.length ? String(offset + size) : "",
      };
    }),
    GetVariant: unary((req) => {
      const v = variants.get(req.variantId);
      if (v === undefined) throw new ApiError(grpc.status.NOT_FOUND, `no variant ${req.variantId}`);
      return variantMessage(v, loadedOn(v.id));
    }),

    // ---- Rollouts ----
    ApplyRollout: unary(async (req) => {
      const parsed = parseRolloutYaml(req.specYaml);
      // Names and id prefixes become full ids: the revision pins exactly what is rolled out.
      const doc = {
        ...parsed,
        spec: {
          ...parsed.spec,
          baseline: mustVariant(parsed.spec.baseline, "spec.baseline").id,
          candidate: mustVariant(parsed.spec.candidate, "spec.candidate").id,
        },
      };
      if (doc.spec.baseline === doc.spec.candidate) {
        throw invalidField("spec.candidate", "expected a candidate different from the baseline");
      }
      if (req.dryRun) return { newRevision: false };
      const name = doc.metadata.name;
      const revision = revisionOf(name, doc.spec);
      const known =
        engine.list().some((r) => r.name === name) &&
        engine.revisions(name).some((r) => r.revision === revision);
      const status = await engine.apply(doc);
      const fresh = !known;
      return { rollout: rolloutMessage(status), newRevision: fresh };
    }),
    GetRollout: unary((req) => rolloutMessage(engine.status(req.name))),
    ListRollouts: unary(() => ({ rollouts: engine.list().map(rolloutMessage) })),
    PauseRollout: unary(async (req) =>
      rolloutMessage(await engine.pause(req.name, req.message || undefined)),
    ),
    ResumeRollout: unary(async (req) => rolloutMessage(await engine.resume(req.name))),
    PromoteRollout: unary(async (req) => rolloutMessage(await engine.promote(req.name))),
    AbortRollout: unary(async (req) =>
      rolloutMessage(await engine.abort(req.name, req.message || undefined)),
    ),
    RollbackRollout: unary(async (req) => {
      if (!req.toRevision) throw invalidField("to_revision", "expected a revision hash or number");
      return rolloutMessage(await engine.rollback(req.name, req.toRevision));
    }),
    GetRolloutHistory: unary((req) => {
      const revisions = engine.revisions(req.name);
      const afterHistory = Number(req.afterHistorySeq);
      const afterDecision = Number(req.afterDecisionSeq);
      return {
        revisions: revisions.map(revisionMessage),
        entries: engine
          .history(req.name, afterHistory > 0 ? afterHistory : undefined)
          .map(historyMessage),
        decisions: engine
          .decisions(req.name, {
            ...(req.revision ? { revision: req.revision } : {}),
            ...(afterDecision > 0 ? { afterSeq: afterDecision } : {}),
          })
          .map(decisionMessage),
      };
    }),

    // ---- Serving ----
    Generate: (call) => {
      void generate(deps, call).catch((error: unknown) => {
        call.emit("error", toServiceError(error));
      });
    },

    // ---- Workers ----
    ListWorkers: unary(() => ({
      workers: fleet.list().map((w) => ({
        id: w.member.id,
        address: w.address,
        state: deps.draining() ? "draining" : w.state,
        healthy: w.healthy,
        pid: w.member.supervisor?.pid ?? 0,
        device: w.member.device,
        gpuName: w.gpuName,
        engines: w.engines,
        loadedVariants: [...w.loaded],
        runningJobId: w.runningJobId,
        inFlight: router.inFlight(w.member.id),
        restarts: w.member.supervisor?.restarts ?? 0,
        startedAt: timestamp(w.startedAt),
        telemetryEndpoint: w.telemetry,
      })),
    })),
  };
}

/** Routed Generate: pick variant and worker, stream the worker's chunks, record the outcome. */
async function generate(
  deps: ServiceDeps,
  call: grpc.ServerWritableStream<
    import("../gen/tardis/v1/RoutedGenerateRequest.js").RoutedGenerateRequest__Output,
    import("../gen/tardis/v1/RoutedGenerateChunk.js").RoutedGenerateChunk
  >,
): Promise<void> {
  if (deps.draining()) throw new ApiError(grpc.status.UNAVAILABLE, "the control plane is draining");
  const req = call.request;
  if (req.rollout) deps.engine.status(req.rollout); // NOT_FOUND for an unknown rollout
  let route: Route;
  try {
    route = deps.router.route({
      ...(req.rollout ? { rollout: req.rollout } : {}),
      ...(req.sessionId ? { sessionId: req.sessionId } : {}),
      ...(req.tenantId ? { tenantId: req.tenantId } : {}),
      ...(req.requestId ? { requestId: req.requestId } : {}),
    });
  } catch (error) {
    if (error instanceof NoRouteError && error.message.startsWith("name the rollout")) {
      throw new ApiError(grpc.status.FAILED_PRECONDITION, error.message);
    }
    throw error;
  }
  const controller = new AbortController();
  const onCancel = (): void => controller.abort(new Error("cancelled by the client"));
  call.on("cancelled", onCancel);
  const deadline = call.getDeadline();
  const deadlineMs =
    deadline instanceof Date
      ? deadline.getTime()
      : typeof deadline === "number"
        ? deadline
        : Infinity;
  const timeoutMs = Number.isFinite(deadlineMs) ? Math.max(1, deadlineMs - Date.now()) : undefined;
  const started = performance.now();
  let first = true;
  try {
    const client = await deps.fleet.member(route.worker.id).handle.connect(controller.signal);
    const chunks = client.generate(
      {
        variantId: route.variant,
        prompt: req.prompt,
        ...(req.maxNewTokens != null ? { maxNewTokens: req.maxNewTokens } : {}),
        ...(req.temperature != null ? { temperature: req.temperature } : {}),
        ...(req.topP != null ? { topP: req.topP } : {}),
        ...(req.seed != null ? { seed: req.seed } : {}),
        stop: req.stop,
      },
      { signal: controller.signal, ...(timeoutMs !== undefined ? { timeoutMs } : {}) },
    );
    let usage: { tokensPerSecond: number; timeToFirstToken: number; fallbackRate?: number } | null =
      null;
    for await (const chunk of chunks) {
      call.write({
        chunk,
        ...(first
          ? { variantId: route.variant, workerId: route.worker.id, revision: route.revision }
          : {}),
      });
      first = false;
      if (chunk.usage) {
        usage = {
          tokensPerSecond: chunk.usage.tokensPerSecond,
          timeToFirstToken: chunk.usage.timeToFirstToken,
          ...(chunk.usage.fallbackRate != null ? { fallbackRate: chunk.usage.fallbackRate } : {}),
        };
      }
    }
    route.release({
      ok: true,
      ...(usage
        ? { tokensPerSec: usage.tokensPerSecond, ttftMs: usage.timeToFirstToken * 1000 }
        : {}),
    });
    deps.metrics.observeRequest(route.variant, "ok", (performance.now() - started) / 1000, {
      ...(usage ? { ttftSeconds: usage.timeToFirstToken } : {}),
      ...(usage?.fallbackRate !== undefined ? { fallbackRate: usage.fallbackRate } : {}),
    });
    call.end();
  } catch (error) {
    const cancelled = controller.signal.aborted || call.cancelled;
    // A request the client gave up on says nothing about the variant; a failure does.
    route.release(cancelled ? undefined : { ok: false });
    deps.metrics.observeRequest(
      route.variant,
      cancelled ? "cancelled" : "error",
      (performance.now() - started) / 1000,
    );
    if (cancelled) return;
    if (error instanceof WorkerCallError) throw error;
    throw error;
  } finally {
    call.off("cancelled", onCancel);
  }
}
