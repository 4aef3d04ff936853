/** `tardis jobs ls|show|watch|cancel|resume`. */

import type { Command } from "commander";
import { isAlive, type Job } from "../jobs/job-store.js";
import { isTerminal } from "../jobs/state-machine.js";
import { WorkerClient } from "../workers/worker-client.js";
import { exitCodeOf, jobSummary } from "./calibrate.js";
import { acquireWorker, type Context, type GlobalOptions, withContext } from "./context.js";
import { badInput, EXIT } from "./exit-codes.js";
import { followJob } from "./follow.js";
import { type Column, outputFormat, printNdjson, printObject, printRows } from "./output.js";

const JOB_COLUMNS: readonly Column<Job>[] = [
  { header: "ID", cell: (j) => j.id },
  { header: "KIND", cell: (j) => j.kind },
  { header: "STATE", cell: (j) => j.state },
  { header: "REASON", cell: (j) => j.reason },
  { header: "ATTEMPTS", cell: (j) => String(j.attempts) },
  { header: "SINCE", cell: (j) => j.since },
  { header: "VARIANT", cell: (j) => (j.variantId ?? "").slice(0, 12) },
];

function mustGetJob(ctx: Context, id: string): Job {
  const job = ctx.jobs.get(id);
  if (!job) throw badInput(`job ${id} does not exist (tardis jobs ls lists them)`);
  return job;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Register the `jobs` command group. */
export function registerJobs(
  program: Command,
  run: (action: () => Promise<number>) => Promise<void>,
): void {
  const jobs = program.command("jobs").description("list, inspect, watch, cancel and resume jobs");
  const global = (): GlobalOptions => program.opts<GlobalOptions>();

  jobs
    .command("ls")
    .description("list jobs, newest first")
    .option("-o, --output <format>", "table, json or yaml", "table")
    .action((opts: { output: string }) =>
      run(async () => {
        const format = outputFormat(opts.output);
        return withContext(global(), async (ctx) => {
          printRows(format, ctx.jobs.list(), JOB_COLUMNS);
          return EXIT.OK;
        });
      }),
    );

  jobs
    .command("show <id>")
    .description("one job with its state history and events")
    .option("-o, --output <format>", "table, json or yaml", "table")
    .action((id: string, opts: { output: string }) =>
      run(async () => {
        const format = outputFormat(opts.output);
        return withContext(global(), async (ctx) => {
          const job = mustGetJob(ctx, id);
          const events = ctx.jobs.events(job.id);
          if (format === "table") {
            printObject(format, { ...jobSummary(ctx, job), spec: job.spec, events: events.length });
            const history = events.filter((e) => e.type === "state");
            printRows(format, history, [
              { header: "SEQ", cell: (e) => String(e.seq) },
              { header: "TIME", cell: (e) => e.time },
              { header: "STATE", cell: (e) => String(e.data.state) },
              { header: "REASON", cell: (e) => String(e.data.reason) },
              { header: "MESSAGE", cell: (e) => String(e.data.message ?? "") },
            ]);
          } else {
            printObject(format, { ...job, events });
          }
          return EXIT.OK;
        });
      }),
    );

  jobs
    .command("watch <id>")
    .description("stream a job's events as NDJSON until it is terminal (resumes from --since)")
    .option("--since <seq>", "print events after this seq", "0")
    .action((id: string, opts: { since: string }) =>
      run(async () => {
        return withContext(global(), async (ctx) => {
          let seq = Number(opts.since);
          let warned = false;
          for (;;) {
            const job = mustGetJob(ctx, id);
            for (const e of ctx.jobs.events(job.id, seq)) {
              printNdjson(e);
              seq = e.seq;
            }
            if (isTerminal(job.state)) return job.state === "SUCCEEDED" ? EXIT.OK : EXIT.FAILED;
            if (
              !warned &&
              !(job.ownerPid !== null && isAlive(job.ownerPid)) &&
              job.state !== "QUEUED"
            ) {
              process.stderr.write(
                `job ${job.id} has no live control plane: run tardis jobs resume ${job.id}\n`,
              );
              warned = true;
            }
            await sleep(500);
          }
        });
      }),
    );

  jobs
    .command("cancel <id>")
    .description("cancel a job (on the worker when it is running)")
    .option("--reason <text>", "recorded with the job", "cancelled by tardis jobs cancel")
    .action((id: string, opts: { reason: string }) =>
      run(async () => {
        return withContext(global(), async (ctx) => {
          const job = mustGetJob(ctx, id);
          if (isTerminal(job.state)) throw badInput(`job ${job.id} is already ${job.state}`);
          const owned = job.ownerPid !== null && isAlive(job.ownerPid);
          if (job.state === "QUEUED" || !owned) {
            // Nobody runs it: nothing to stop on a worker (a dead owner's call already ended).
            if (job.state === "RUNNING")
              ctx.jobs.transition(job.id, "CANCELLING", "CancelRequested", opts.reason);
            ctx.jobs.transition(job.id, "CANCELLED", "Cancelled", opts.reason);
            process.stderr.write(`job ${job.id} cancelled\n`);
            return EXIT.OK;
          }
          // The owning process sees CANCELLING and the worker's `cancelled` event, and finishes it.
          if (job.state === "RUNNING")
            ctx.jobs.transition(job.id, "CANCELLING", "CancelRequested", opts.reason);
          const worker =
            ctx.workers.alive().find((w) => w.ownerPid === job.ownerPid) ?? ctx.workers.alive()[0];
          if (worker) {
            const client = new WorkerClient(worker.address);
            try {
              await client.cancelJob(job.id, opts.reason);
            } catch (error) {
              process.stderr.write(`CancelJob on ${worker.address}: ${String(error)}\n`);
            } finally {
              client.close();
            }
          }
          for (let i = 0; i < 120; i++) {
            const now = mustGetJob(ctx, id);
            if (isTerminal(now.state)) {
              process.stderr.write(`job ${now.id} ${now.state}\n`);
              return EXIT.OK;
            }
            await sleep(500);
          }
          process.stderr.write(`job ${job.id} is still CANCELLING after 60 s\n`);
          return EXIT.TIMEOUT;
        });
      }),
    );

  jobs
    .command("resume [ids...]")
    .description(
      "run jobs left unfinished by a control plane that exited (all of them without ids)",
    )
    .option("--watch", "print job events as NDJSON on stdout")
    .option("-o, --output <format>", "table, json or yaml", "table")
    .action((ids: string[], opts: { watch?: boolean; output: string }) =>
      run(async () => {
        const format = outputFormat(opts.output);
        return withContext(global(), async (ctx) => {
          const targets =
            ids.length > 0 ? ids.map((id) => mustGetJob(ctx, id)) : ctx.jobs.orphans();
          const claimed = targets
            .map((j) => ctx.jobs.claim(j.id))
            .filter((j): j is Job => j !== undefined);
          for (const j of targets) {
            if (!claimed.some((c) => c.id === j.id)) {
              process.stderr.write(
                `job ${j.id} is ${isTerminal(j.state) ? j.state : "run by a live control plane"}; skipped\n`,
              );
            }
          }
          if (claimed.length === 0) return ids.length > 0 ? EXIT.FAILED : EXIT.OK;
          const announce = opts.watch
            ? undefined
            : (line: string) => process.stderr.write(`${line}\n`);
          const worker = await acquireWorker(ctx, global(), announce ? { announce } : {});
          let code: number = EXIT.OK;
          try {
            for (const job of claimed) {
              const result = await followJob(ctx, worker, job.id, {
                watch: Boolean(opts.watch),
                title: `${job.kind} ${job.name} (${job.id})`,
              });
              if (!opts.watch) printObject(format, jobSummary(ctx, result.job));
              code = Math.max(code, exitCodeOf(result));
              if (result.interrupted) break;
            }
          } finally {
            await worker.close();
          }
          return code;
        });
      }),
    );
}
