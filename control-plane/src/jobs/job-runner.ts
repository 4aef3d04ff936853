/**
 * Run one stored job on a worker until it is terminal: every worker event is stored (job-level
 * seq), a calibration's variant is registered with the job's success in one transaction, and a
 * worker that dies or restarts mid-job is called again with resume=true (the worker continues from
 * its checkpoints), so a job is neither lost nor run twice.
 */

import pRetry from "p-retry";
import type { JobEvent__Output } from "../gen/tardis/v1/JobEvent.js";
import type { Db } from "../store/database.js";
import type { VariantRegistry } from "../variants/registry.js";
import { WorkerCallError, type WorkerClient } from "../workers/worker-client.js";
import type { WorkerHandle } from "../workers/worker-handle.js";
import type { Job, JobEventRecord, JobStore } from "./job-store.js";
import { isTerminal } from "./state-machine.js";
import { eventRecord, metricsOf, setFields } from "./worker-events.js";

/** What a run needs. */
export interface RunnerDeps {
  readonly db: Db;
  readonly jobs: JobStore;
  readonly variants: VariantRegistry;
  readonly worker: WorkerHandle;
}

/** Callbacks for live display. */
export interface JobObserver {
  /** Every event stored for the job (state changes and worker events), in seq order. */
  onEvent?(event: JobEventRecord): void;
  /** A worker call failed transiently and will be retried (resumed). */
  onRetry?(error: WorkerCallError, attempt: number): void;
}

/** Transient worker failures (restart, busy) tolerated per run before the job fails. */
const MAX_RETRIES = 8;

/** One job being run by this process. */
export class JobRun {
  private readonly controller = new AbortController();
  private cancelReason: string | undefined;

  constructor(
    private readonly deps: RunnerDeps,
    readonly jobId: string,
    private readonly observer: JobObserver = {},
  ) {}

  private emitFrom(seq: number): number {
    let last = seq;
    for (const e of this.deps.jobs.events(this.jobId, seq)) {
      this.observer.onEvent?.(e);
      last = e.seq;
    }
    return last;
  }

  /** Run to a terminal state (or until {@link detach}); returns the job as stored at the end. */
  async run(): Promise<Job> {
    const { jobs } = this.deps;
    let seen = this.emitFrom(0);
    const attempt = async (): Promise<Job> => {
      const job = jobs.get(this.jobId);
      if (!job) throw new Error(`job ${this.jobId} vanished from the store`);
      if (isTerminal(job.state)) return job;
      if (job.state === "CANCELLING" && this.cancelReason === undefined) {
        // Cancelled by an earlier process that died before the worker confirmed: nothing to resume.
        return jobs.transition(this.jobId, "CANCELLED", "Cancelled", job.message);
      }
      const client = await this.deps.worker.connect(this.controller.signal);
      const n = jobs.beginAttempt(this.jobId);
      if (job.state !== "CANCELLING") {
        jobs.transition(
          this.jobId,
          "RUNNING",
          n === 1 ? "Started" : "Resumed",
          n === 1 ? `on worker ${client.address}` : `attempt ${n} on worker ${client.address}`,
        );
      }
      seen = this.emitFrom(seen);
      const stream = this.start(client, job, n > 1);
      for await (const event of stream) {
        const terminal = this.record(job, event, n);
        seen = this.emitFrom(seen);
        if (terminal) return terminal;
      }
      throw new WorkerCallError(
        "UNAVAILABLE",
        "the worker's stream ended without a terminal event",
      );
    };
    try {
      return await pRetry(attempt, {
        retries: MAX_RETRIES,
        minTimeout: 1_000,
        maxTimeout: 8_000,
        signal: this.controller.signal,
        shouldRetry: ({ error }) =>
          error instanceof WorkerCallError && error.transient && !this.controller.signal.aborted,
        onFailedAttempt: ({ error, attemptNumber }) => {
          if (error instanceof WorkerCallError) this.observer.onRetry?.(error, attemptNumber);
        },
      });
    } catch (error) {
      const job = jobs.get(this.jobId);
      if (job?.state === "CANCELLING" && this.cancelReason !== undefined) {
        // Cancelled while no call was running (e.g. during a worker restart): nothing left to stop.
        const cancelled = jobs.transition(this.jobId, "CANCELLED", "Cancelled", this.cancelReason);
        this.emitFrom(seen);
        return cancelled;
      }
      if (this.controller.signal.aborted || !job || isTerminal(job.state)) throw error;
      const code = error instanceof WorkerCallError ? error.code : "Error";
      const message = error instanceof WorkerCallError ? error.details : String(error);
      const failed = jobs.transition(this.jobId, "FAILED", code, message);
      this.emitFrom(seen);
      return failed;
    }
  }

  private start(client: WorkerClient, job: Job, resume: boolean) {
    const spec = job.spec as { request: Record<string, unknown> };
    const signal = this.controller.signal;
    if (job.kind === "calibrate") {
      return client.calibrate({ ...spec.request, jobId: job.id, resume }, { signal });
    }
    return client.evaluate({ ...spec.request, jobId: job.id }, { signal });
  }

  /** Store one worker event; returns the job when the event ended it. */
  private record(job: Job, event: JobEvent__Output, attempt: number): Job | undefined {
    const { db, jobs, variants } = this.deps;
    const { type, data } = eventRecord(event, attempt);
    if (type === "completed") {
      return db.transaction(() => {
        jobs.appendEvent(job.id, type, data);
        const completed = event.completed;
        const metrics = metricsOf(completed?.metrics);
        const comparison = (completed?.comparison ?? []).map(setFields);
        const manifest = completed?.manifest;
        let variantId: string | undefined;
        if (job.kind === "calibrate" && manifest) {
          const spec = job.spec as { variantName?: string };
          variants.register({
            id: manifest.variantId,
            name: spec.variantName ?? job.name,
            jobId: job.id,
            path: manifest.path,
            basePath: manifest.basePath,
            family: manifest.family,
            method: setFields(manifest.method),
            metrics,
          });
          variantId = manifest.variantId;
        } else if (job.kind === "evaluate") {
          const spec = job.spec as { variantId?: string };
          if (spec.variantId && variants.get(spec.variantId)) {
            variants.recordEvaluation(spec.variantId, metrics, comparison);
            variantId = spec.variantId;
          }
        }
        return jobs.transition(job.id, "SUCCEEDED", "Completed", "", {
          ...(variantId === undefined ? {} : { variantId }),
          result: { metrics, comparison },
        });
      })();
    }
    jobs.appendEvent(job.id, type, data);
    if (type === "failed") {
      return jobs.transition(
        job.id,
        "FAILED",
        event.failed?.code || "Failed",
        event.failed?.message ?? "",
      );
    }
    if (type === "cancelled") {
      const current = jobs.get(job.id);
      if (current?.state === "CANCELLING" || this.cancelReason !== undefined) {
        return jobs.transition(
          job.id,
          "CANCELLED",
          "Cancelled",
          this.cancelReason ?? event.cancelled?.reason ?? "",
        );
      }
      // Not asked for by us: the worker is draining (shutdown). Resume on the restarted worker.
      throw new WorkerCallError(
        "UNAVAILABLE",
        `the worker stopped the job: ${event.cancelled?.reason ?? ""}`,
      );
    }
    return undefined;
  }

  /**
   * Ask the worker to stop the job: CANCELLING is stored first, then CancelJob is sent; the run
   * ends when the worker's `cancelled` (or an earlier terminal) event arrives.
   */
  async cancel(reason: string): Promise<void> {
    if (this.cancelReason !== undefined) return;
    this.cancelReason = reason;
    const job = this.deps.jobs.get(this.jobId);
    if (!job || isTerminal(job.state)) return;
    if (job.state === "QUEUED") {
      this.deps.jobs.transition(this.jobId, "CANCELLED", "Cancelled", reason);
      this.controller.abort(new Error(reason));
      return;
    }
    if (job.state === "RUNNING")
      this.deps.jobs.transition(this.jobId, "CANCELLING", "CancelRequested", reason);
    try {
      const client = await this.deps.worker.connect();
      await client.cancelJob(this.jobId, reason);
    } catch {
      // Not running on the worker (between attempts, or already finished): ending the call suffices.
      this.controller.abort(new Error(reason));
    }
  }

  /** Stop following the job here without cancelling it (the call ends; the worker cancels it). */
  detach(): void {
    this.controller.abort(new Error("detached"));
    this.deps.jobs.release(this.jobId);
  }
}
