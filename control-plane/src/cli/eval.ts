/** `tardis eval VARIANT`: perplexity of dense vs the variant (and pruning baselines) on the worker. */

import { existsSync } from "node:fs";
import { resolve } from "node:path";
import type { Command } from "commander";
import { BASELINES } from "../config/index.js";
import { exitCodeOf } from "./calibrate.js";
import { acquireWorker, type GlobalOptions, openContext } from "./context.js";
import { COMPARISON_COLUMNS, evaluateVariant } from "./evaluation.js";
import { badInput } from "./exit-codes.js";
import { outputFormat, printRows } from "./output.js";
import { mustGetVariant } from "./variants.js";

/** Register `tardis eval`. */
export function registerEval(
  program: Command,
  run: (action: () => Promise<number>) => Promise<void>,
): void {
  program
    .command("eval <variant>")
    .description("evaluate a registered variant against its base model (and baselines)")
    .option("--dataset <file>", "UTF-8 text file, one document per line")
    .option("--builtin <name>", "a corpus the worker ships", "lee")
    .option("--baselines <list>", `comma-separated: ${BASELINES.join(", ")}`, "")
    .option("--max-tokens <n>", "cap on evaluation tokens")
    .option("--sample-prompt <text>", "also continue this prompt with every model")
    .option("--watch", "print job events as NDJSON")
    .option("-o, --output <format>", "table, json or yaml", "table")
    .action(
      (
        ref: string,
        opts: {
          dataset?: string;
          builtin: string;
          baselines: string;
          maxTokens?: string;
          samplePrompt?: string;
          watch?: boolean;
          output: string;
        },
      ) =>
        run(async () => {
          const format = outputFormat(opts.output);
          const baselines = opts.baselines.split(",").filter((b) => b !== "");
          const unknown = baselines.filter((b) => !(BASELINES as readonly string[]).includes(b));
          if (unknown.length > 0)
            throw badInput(
              `--baselines: unknown ${unknown.join(", ")}; expected ${BASELINES.join(", ")}`,
            );
          const dataset = opts.dataset
            ? { path: resolve(opts.dataset) }
            : { builtin: opts.builtin };
          if (dataset.path && !existsSync(dataset.path))
            throw badInput(`--dataset: ${dataset.path} does not exist`);
          const maxTokens = opts.maxTokens === undefined ? undefined : Number(opts.maxTokens);
          if (maxTokens !== undefined && !(Number.isInteger(maxTokens) && maxTokens > 0)) {
            throw badInput(`--max-tokens ${opts.maxTokens}: expected a positive integer`);
          }
          const ctx = openContext(program.opts<GlobalOptions>());
          try {
            const variant = mustGetVariant(ctx, ref);
            const worker = await acquireWorker(ctx, program.opts<GlobalOptions>());
            try {
              const result = await evaluateVariant(
                ctx,
                worker,
                variant,
                {
                  dataset,
                  baselines,
                  ...(maxTokens === undefined ? {} : { maxTokens }),
                  ...(opts.samplePrompt === undefined ? {} : { samplePrompt: opts.samplePrompt }),
                },
                { watch: Boolean(opts.watch) },
              );
              const rows = (result.job.result?.comparison ?? []) as Record<string, unknown>[];
              if (!opts.watch) {
                if (result.job.state === "SUCCEEDED") printRows(format, rows, COMPARISON_COLUMNS);
                else
                  process.stderr.write(
                    `evaluation ${result.job.state}: ${result.job.reason} ${result.job.message}\n`,
                  );
              }
              return exitCodeOf(result);
            } finally {
              await worker.close();
            }
          } finally {
            ctx.close();
          }
        }),
    );
}
