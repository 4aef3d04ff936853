/** `tardis calibrate -f FILE`: store a calibration job, run it on a worker, register its variant. */

import { spawn } from "node:child_process";
import { openSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Command } from "commander";
import { durationToMs, flagName } from "../config/index.js";
import type { Job } from "../jobs/job-store.js";
import {
  CALIBRATION_FLAGS,
  type CalibrationJobSpec,
  calibrationSpec,
  loadCalibrationJob,
} from "./calibration-spec.js";
import {
  acquireWorker,
  type Context,
  type GlobalOptions,
  openContext,
  REPO_ROOT,
} from "./context.js";
import { evaluateVariant } from "./evaluation.js";
import { badInput, EXIT } from "./exit-codes.js";
import type { FollowResult } from "./follow.js";
import { followJob } from "./follow.js";
import { outputFormat, printObject } from "./output.js";

/** Exit code for a followed job's outcome. */
export function exitCodeOf(result: FollowResult): number {
  if (result.job.state === "SUCCEEDED") return EXIT.OK;
  if (result.timedOut) return EXIT.TIMEOUT;
  if (result.interrupted) return EXIT.INTERRUPTED;
  return EXIT.FAILED;
}

/** The job summary commands print at the end. */
export function jobSummary(ctx: Context, job: Job): Record<string, unknown> {
  const variant = job.variantId ? ctx.variants.get(job.variantId) : undefined;
  return {
    job: job.id,
    state: job.state,
    reason: job.reason,
    message: job.message,
    attempts: job.attempts,
    ...(variant
      ? { variant: variant.id, variantPath: variant.path, metrics: variant.metrics }
      : {}),
  };
}

/** Parse a `--timeout` duration ("90s", "10m"). */
export function timeoutMs(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  try {
    return durationToMs(value);
  } catch {
    throw badInput(`--timeout ${value}: expected a duration such as "90s" or "10m"`);
  }
}

/** Start `tardis jobs resume ID` as a detached background process; its output goes to a log file. */
export function spawnDetached(ctx: Context, global: GlobalOptions, jobId: string): string {
  const logFile = join(ctx.home, "logs", `${jobId}.log`);
  const fd = openSync(logFile, "a");
  const args = [join(REPO_ROOT, "control-plane", "bin", "tardis.js"), "--home", ctx.home];
  if (global.worker) args.push("--worker", global.worker);
  args.push("jobs", "resume", jobId);
  const child = spawn(process.execPath, args, { detached: true, stdio: ["ignore", fd, fd] });
  child.unref();
  return logFile;
}

/** Register `tardis calibrate`. */
export function registerCalibrate(
  program: Command,
  run: (action: () => Promise<number>) => Promise<void>,
): void {
  const cmd = program
    .command("calibrate")
    .description("calibrate a base model into a TARDIS variant (a CalibrationJob YAML)")
    .requiredOption("-f, --file <file>", "CalibrationJob YAML")
    .option("--detach", "submit the job, run it in the background and return at once")
    .option("--watch", "print job events as NDJSON on stdout instead of progress bars")
    .option("--timeout <duration>", "cancel the job after this long (exit 3)")
    .option(
      "--request-id <id>",
      "idempotency key: submitting the same id again returns the first job",
    )
    .option("--skip-eval", "do not run spec.evaluation after calibrating")
    .option("-o, --output <format>", "table, json or yaml", "table");
  for (const o of CALIBRATION_FLAGS)
    cmd.option(`${flagName(o)} <value>`, `override ${o.path.join(".")} ($${o.env})`);
  cmd.action((opts: Record<string, string | boolean | undefined>) =>
    run(async () => {
      const global = program.opts<GlobalOptions>();
      const format = outputFormat(String(opts.output));
      const limit = timeoutMs(opts.timeout as string | undefined);
      const flags: Record<string, string | undefined> = {};
      for (const o of CALIBRATION_FLAGS) flags[o.option] = opts[o.option] as string | undefined;
      const file = resolve(String(opts.file));
      const config = await loadCalibrationJob(file, flags);
      const ctx = openContext(global);
      try {
        const { job, created } = ctx.jobs.create({
          kind: "calibrate",
          name: config.metadata.name,
          spec: (id) => ({ ...calibrationSpec(config, id, ctx.home, file) }),
          ...(opts.requestId ? { requestId: String(opts.requestId) } : {}),
        });
        if (!created) process.stderr.write(`request id already submitted: job ${job.id}\n`);
        if (opts.detach) {
          const log = created ? spawnDetached(ctx, global, job.id) : "";
          printObject(format, { job: job.id, state: job.state, ...(log ? { log } : {}) });
          return EXIT.OK;
        }
        if (!ctx.jobs.claim(job.id)) {
          printObject(format, jobSummary(ctx, ctx.jobs.get(job.id) ?? job));
          return job.state === "SUCCEEDED" ? EXIT.OK : EXIT.FAILED;
        }
        const announce = opts.watch
          ? undefined
          : (line: string) => process.stderr.write(`${line}\n`);
        const worker = await acquireWorker(ctx, global, announce ? { announce } : {});
        try {
          const result = await followJob(ctx, worker, job.id, {
            watch: Boolean(opts.watch),
            title: `calibrate ${config.metadata.name} (${job.id})`,
            ...(limit === undefined ? {} : { timeoutMs: limit }),
          });
          let code = exitCodeOf(result);
          const spec = result.job.spec as unknown as CalibrationJobSpec;
          const variant = result.job.variantId ? ctx.variants.get(result.job.variantId) : undefined;
          if (code === EXIT.OK && variant && spec.evaluation && !opts.skipEval) {
            const evaluated = await evaluateVariant(ctx, worker, variant, spec.evaluation, {
              watch: Boolean(opts.watch),
            });
            code = exitCodeOf(evaluated);
          }
          if (!opts.watch) printObject(format, jobSummary(ctx, ctx.jobs.get(job.id) ?? result.job));
          return code;
        } finally {
          await worker.close();
        }
      } finally {
        ctx.close();
      }
    }),
  );
}
