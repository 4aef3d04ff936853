/** `tardis variants ls|show|rm`. */

import { rmSync } from "node:fs";
import type { Command } from "commander";
import type { Variant } from "../variants/registry.js";
import { type Context, type GlobalOptions, withContext } from "./context.js";
import { COMPARISON_COLUMNS } from "./evaluation.js";
import { badInput, EXIT } from "./exit-codes.js";
import { type Column, num, outputFormat, pct, printObject, printRows } from "./output.js";

const VARIANT_COLUMNS: readonly Column<Variant>[] = [
  { header: "ID", cell: (v) => v.id.slice(0, 16) },
  { header: "NAME", cell: (v) => v.name },
  { header: "FAMILY", cell: (v) => v.family },
  { header: "JOB", cell: (v) => v.jobId },
  { header: "FFN REDUCTION", cell: (v) => pct(v.metrics.ffnReductionPaper) },
  { header: "FALLBACK", cell: (v) => pct(v.metrics.measuredFallbackRate, 2) },
  { header: "PPL RATIO", cell: (v) => num(v.metrics.perplexityRatio, 3) },
  { header: "CREATED", cell: (v) => v.createdAt },
];

/** The registered variant for an id, id prefix or name; bad input otherwise. */
export function mustGetVariant(ctx: Context, ref: string): Variant {
  const v = ctx.variants.get(ref);
  if (!v) throw badInput(`variant ${ref} is not registered (tardis variants ls lists them)`);
  return v;
}

/** Register the `variants` command group. */
export function registerVariants(
  program: Command,
  run: (action: () => Promise<number>) => Promise<void>,
): void {
  const variants = program
    .command("variants")
    .description("the variant registry (content-addressed)");
  const global = (): GlobalOptions => program.opts<GlobalOptions>();
  variants
    .command("ls")
    .description("list variants, newest first")
    .option("-o, --output <format>", "table, json or yaml", "table")
    .action((opts: { output: string }) =>
      run(async () => {
        const format = outputFormat(opts.output);
        return withContext(global(), async (ctx) => {
          printRows(format, ctx.variants.list(), VARIANT_COLUMNS);
          return EXIT.OK;
        });
      }),
    );
  variants
    .command("show <variant>")
    .description("one variant: lineage, method, metrics, last evaluation")
    .option("-o, --output <format>", "table, json or yaml", "table")
    .action((ref: string, opts: { output: string }) =>
      run(async () => {
        const format = outputFormat(opts.output);
        return withContext(global(), async (ctx) => {
          const v = mustGetVariant(ctx, ref);
          if (format === "table") {
            const { comparison, ...rest } = v;
            printObject(format, rest);
            if (comparison.length > 0) printRows(format, comparison, COMPARISON_COLUMNS);
          } else {
            printObject(format, { ...v });
          }
          return EXIT.OK;
        });
      }),
    );
  variants
    .command("rm <variant>")
    .description("remove a registration (and with --purge its artifact folder)")
    .option("--purge", "also delete the artifact folder")
    .action((ref: string, opts: { purge?: boolean }) =>
      run(async () => {
        return withContext(global(), async (ctx) => {
          const v = mustGetVariant(ctx, ref);
          ctx.variants.remove(v.id);
          if (opts.purge) rmSync(v.path, { recursive: true, force: true });
          process.stderr.write(`removed variant ${v.id}${opts.purge ? ` and ${v.path}` : ""}\n`);
          return EXIT.OK;
        });
      }),
    );
}
