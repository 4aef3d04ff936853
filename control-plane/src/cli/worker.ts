/** `tardis worker start`: a supervised worker in the foreground that other commands use. */

import type { Command } from "commander";
import { acquireWorker, type GlobalOptions, openContext } from "./context.js";
import { EXIT } from "./exit-codes.js";
import { followJob } from "./follow.js";

/** Register the `worker` command group. */
export function registerWorker(
  program: Command,
  run: (action: () => Promise<number>) => Promise<void>,
): void {
  const worker = program.command("worker").description("run and supervise a Python worker");
  worker
    .command("start")
    .description(
      "start a supervised worker (restarted when it dies) and keep it until Ctrl-C / SIGTERM",
    )
    .option("--grace <seconds>", "drain time on shutdown", "30")
    .action((opts: { grace: string }) =>
      run(async () => {
        const global = program.opts<GlobalOptions>();
        const ctx = openContext(global);
        const say = (line: string): void => {
          process.stderr.write(`${line}\n`);
        };
        try {
          const { worker: _remote, ...local } = global; // this command starts its own worker
          const handle = await acquireWorker(ctx, local, {
            mode: "service",
            announce: say,
            graceS: Number(opts.grace),
          });
          const stopped = new Promise<void>((resolve) => {
            process.once("SIGINT", () => resolve());
            process.once("SIGTERM", () => resolve());
          });
          // Jobs left by control planes that exited are resumed here (once: each is claimed first).
          for (const job of ctx.jobs.orphans()) {
            if (!ctx.jobs.claim(job.id)) continue;
            say(`resuming job ${job.id}`);
            void followJob(ctx, handle, job.id, { quiet: true }).then((r) =>
              say(`job ${job.id}: ${r.job.state}`),
            );
          }
          say("worker service running; Ctrl-C to stop");
          await stopped;
          say("stopping the worker (draining)…");
          await handle.close();
          return EXIT.OK;
        } finally {
          ctx.close();
        }
      }),
    );
}
