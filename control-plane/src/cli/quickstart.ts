/**
 * `tardis quickstart`: the README's first command. Start a worker, calibrate the bundled
 * tardis-tiny-gpt2 on the builtin "lee" corpus (configs/quickstart.yaml), register the variant,
 * evaluate dense vs TARDIS vs Wanda at the same FFN reduction, and print the table and one sample
 * generation from each model. CPU only, no network.
 */

import { join } from "node:path";
import type { Command } from "commander";
import { exitCodeOf } from "./calibrate.js";
import {
  type CalibrationJobSpec,
  calibrationSpec,
  loadCalibrationJob,
} from "./calibration-spec.js";
import { acquireWorker, type GlobalOptions, openContext, REPO_ROOT } from "./context.js";
import { COMPARISON_COLUMNS, evaluateVariant } from "./evaluation.js";
import { EXIT } from "./exit-codes.js";
import { followJob } from "./follow.js";
import { num, outputFormat, pct, printObject, printRows } from "./output.js";

const SAMPLE_PROMPT = "The government said on Tuesday that";
/** Evaluation text cap (tokens of the held-out documents): keeps three models' perplexity quick on 2 cores. */
const EVAL_TOKENS = 8192;

/** Register `tardis quickstart`. */
export function registerQuickstart(
  program: Command,
  run: (action: () => Promise<number>) => Promise<void>,
): void {
  program
    .command("quickstart")
    .description(
      "fold the bundled tiny GPT-2 and compare it with dense and Wanda (a few minutes on CPU)",
    )
    .option(
      "-f, --file <file>",
      "CalibrationJob YAML",
      join(REPO_ROOT, "configs", "quickstart.yaml"),
    )
    .option("--prompt <text>", "prompt for the sample generations", SAMPLE_PROMPT)
    .option("-o, --output <format>", "table, json or yaml", "table")
    .action((opts: { file: string; prompt: string; output: string }) =>
      run(async () => {
        const format = outputFormat(opts.output);
        const global = program.opts<GlobalOptions>();
        const config = await loadCalibrationJob(opts.file, {});
        const say = (line: string): void => {
          process.stderr.write(`${line}\n`);
        };
        const t0 = Date.now();
        const ctx = openContext(global);
        try {
          say(`tardis quickstart: ${config.metadata.description ?? config.metadata.name}`);
          say(`state in ${ctx.home}`);
          const worker = await acquireWorker(ctx, global, { announce: say });
          try {
            const { job } = ctx.jobs.create({
              kind: "calibrate",
              name: config.metadata.name,
              spec: (id) => ({ ...calibrationSpec(config, id, ctx.home, opts.file) }),
            });
            ctx.jobs.claim(job.id);
            say(`\n1/3 calibrating ${config.spec.model.path} (job ${job.id})`);
            const calibrated = await followJob(ctx, worker, job.id, {
              title: `calibrate ${config.metadata.name}`,
            });
            if (calibrated.job.state !== "SUCCEEDED" || !calibrated.job.variantId) {
              say(
                `calibration ${calibrated.job.state}: ${calibrated.job.reason} ${calibrated.job.message}`,
              );
              return exitCodeOf(calibrated);
            }
            const variant = ctx.variants.get(calibrated.job.variantId);
            if (!variant) return EXIT.FAILED;
            say(`\n2/3 registered variant ${variant.id} (${variant.path})`);
            const spec = calibrated.job.spec as unknown as CalibrationJobSpec;
            const plan = spec.evaluation ?? { dataset: { builtin: "lee" }, baselines: ["wanda"] };
            say(
              `\n3/3 evaluating dense vs TARDIS vs ${plan.baselines.join(", ") || "(no baselines)"}`,
            );
            const evaluated = await evaluateVariant(ctx, worker, variant, {
              dataset: plan.dataset,
              baselines: plan.baselines,
              calibration: (spec.request.dataset ?? { builtin: "lee" }) as Record<string, string>,
              maxTokens: EVAL_TOKENS,
              samplePrompt: opts.prompt,
              sampleTokens: 24,
            });
            if (evaluated.job.state !== "SUCCEEDED") {
              say(
                `evaluation ${evaluated.job.state}: ${evaluated.job.reason} ${evaluated.job.message}`,
              );
              return exitCodeOf(evaluated);
            }
            const rows = (evaluated.job.result?.comparison ?? []) as Record<string, unknown>[];
            const registered = ctx.variants.get(variant.id) ?? variant;
            if (format !== "table") {
              printObject(format, {
                variant: registered,
                comparison: rows,
                seconds: (Date.now() - t0) / 1000,
              });
              return EXIT.OK;
            }
            const m = registered.metrics;
            process.stdout.write(
              `\nvariant ${registered.id.slice(0, 16)}  FFN reduction ${pct(m.ffnReductionPaper)} (bytes read per decode step ${pct(m.ffnReductionRead)})` +
                `  held-out fallback ${pct(m.measuredFallbackRate, 2)}  live fallback ${pct(m.liveFallbackRate, 2)}  recall ${pct(m.predictorRecallMean, 2)}\n`,
            );
            printRows(format, rows, COMPARISON_COLUMNS);
            process.stdout.write(`\nsample generations (greedy, prompt: "${opts.prompt}")\n`);
            for (const r of rows) {
              process.stdout.write(
                `  ${String(r.name).padEnd(8)} …${String(r.sample ?? "").replace(/\s+/g, " ")}\n`,
              );
            }
            process.stdout.write(
              `\ndone in ${num((Date.now() - t0) / 1000, 0)} s. Next: tardis variants ls · tardis generate ${registered.id.slice(0, 12)} -p "…" · tardis jobs show ${job.id}\n`,
            );
            return EXIT.OK;
          } finally {
            await worker.close();
          }
        } finally {
          ctx.close();
        }
      }),
    );
}
