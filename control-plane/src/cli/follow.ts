/**
 * Run a stored job in this process and show it: progress bars (or NDJSON with --watch), telemetry
 * for live ticks, Ctrl-C → cancel on the worker (a second Ctrl-C detaches), `--timeout` → cancel.
 */

import { JobRun } from "../jobs/job-runner.js";
import type { Job } from "../jobs/job-store.js";
import { followTelemetry } from "../workers/telemetry.js";
import type { WorkerHandle } from "../workers/worker-handle.js";
import type { Context } from "./context.js";
import { printNdjson } from "./output.js";
import { ProgressView } from "./progress.js";

/** How to show the job. */
export interface FollowOptions {
  /** NDJSON events on stdout instead of progress bars. */
  readonly watch?: boolean;
  /** No progress output at all. */
  readonly quiet?: boolean;
  readonly timeoutMs?: number;
  readonly title?: string;
}

/** How the run ended from this process's point of view. */
export interface FollowResult {
  readonly job: Job;
  readonly interrupted: boolean;
  readonly timedOut: boolean;
}

/** Run job `jobId` (already claimed by this process) on `worker` until it is terminal. */
export async function followJob(
  ctx: Context,
  worker: WorkerHandle,
  jobId: string,
  options: FollowOptions = {},
): Promise<FollowResult> {
  const view =
    options.watch || options.quiet ? undefined : new ProgressView(options.title ?? jobId);
  const run = new JobRun({ db: ctx.db, jobs: ctx.jobs, variants: ctx.variants, worker }, jobId, {
    onEvent: (event) => {
      if (options.watch) printNdjson(event);
      view?.update(event.type, event.data);
    },
    onRetry: (error, attempt) => {
      ctx.log.warn({ job: jobId, attempt, code: error.code }, error.details);
      if (!options.watch && !options.quiet) {
        process.stderr.write(
          `worker call failed (${error.code}); resuming the job (retry ${attempt})\n`,
        );
      }
    },
  });
  const endpoint = worker.telemetryEndpoint();
  const stopTelemetry =
    endpoint && view
      ? followTelemetry(endpoint, [`job.${jobId}`], (m) =>
          view.update(m.kind, m as Record<string, unknown>),
        )
      : () => {};
  let interrupted = false;
  let timedOut = false;
  const onSigint = (): void => {
    if (interrupted) {
      process.stderr.write("second interrupt: detaching (the worker stops the job on its own)\n");
      run.detach();
      return;
    }
    interrupted = true;
    process.stderr.write(
      "interrupted: cancelling the job on the worker (Ctrl-C again to detach)\n",
    );
    void run.cancel("interrupted (SIGINT)");
  };
  process.on("SIGINT", onSigint);
  const timer =
    options.timeoutMs === undefined
      ? undefined
      : setTimeout(() => {
          timedOut = true;
          void run.cancel(`timed out after ${options.timeoutMs} ms`);
        }, options.timeoutMs);
  try {
    const job = await run.run().catch(() => ctx.jobs.get(jobId) as Job);
    return { job, interrupted, timedOut };
  } finally {
    if (timer) clearTimeout(timer);
    process.off("SIGINT", onSigint);
    stopTelemetry();
    view?.finish();
  }
}
