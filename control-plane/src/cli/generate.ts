/** `tardis generate VARIANT --prompt TEXT`: load the variant on a worker and stream its tokens. */

import type { Command } from "commander";
import ora from "ora";
import { followTelemetry } from "../workers/telemetry.js";
import { acquireWorker, type GlobalOptions, openContext } from "./context.js";
import { badInput, EXIT } from "./exit-codes.js";
import { num, pct } from "./output.js";
import { mustGetVariant } from "./variants.js";

/** Register `tardis generate`. */
export function registerGenerate(
  program: Command,
  run: (action: () => Promise<number>) => Promise<void>,
): void {
  program
    .command("generate <variant>")
    .description("generate text from a registered variant (streams tokens to stdout)")
    .requiredOption("-p, --prompt <text>", "the prompt")
    .option("-n, --max-new-tokens <n>", "tokens to generate (1..4096)", "32")
    .option("--temperature <t>", "0 = greedy", "0")
    .option("--seed <n>", "sampling seed", "0")
    .action(
      (
        ref: string,
        opts: { prompt: string; maxNewTokens: string; temperature: string; seed: string },
      ) =>
        run(async () => {
          const maxNewTokens = Number(opts.maxNewTokens);
          if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1 || maxNewTokens > 4096) {
            throw badInput(`--max-new-tokens ${opts.maxNewTokens}: expected an integer in 1..4096`);
          }
          const ctx = openContext(program.opts<GlobalOptions>());
          try {
            const variant = mustGetVariant(ctx, ref);
            const worker = await acquireWorker(ctx, program.opts<GlobalOptions>());
            const controller = new AbortController();
            const onSigint = (): void => controller.abort();
            process.on("SIGINT", onSigint);
            try {
              const client = await worker.connect();
              const spinner = ora({
                text: `loading variant ${variant.id.slice(0, 12)}`,
                stream: process.stderr,
              }).start();
              try {
                const loaded = await client.loadVariant({ variantPath: variant.path });
                spinner.succeed(
                  `variant ${variant.id.slice(0, 12)} loaded (${loaded.engine}, ${loaded.device})`,
                );
              } catch (error) {
                spinner.fail();
                throw error;
              }
              // Per-layer fallback rates of this request arrive on the engine's telemetry topic.
              let layers: { layer: number; fallback_rate: number }[] = [];
              const endpoint = worker.telemetryEndpoint();
              const stopTelemetry = endpoint
                ? followTelemetry(endpoint, [`engine.${variant.id}`], (m) => {
                    if (m.kind === "generate" && Array.isArray(m.layers))
                      layers = m.layers as typeof layers;
                  })
                : () => {};
              process.stdout.write(opts.prompt);
              for await (const chunk of client.generate(
                {
                  variantId: variant.id,
                  prompt: opts.prompt,
                  maxNewTokens,
                  temperature: Number(opts.temperature),
                  seed: opts.seed,
                },
                { signal: controller.signal },
              )) {
                process.stdout.write(chunk.text);
                if (chunk.finishReason) {
                  const u = chunk.usage;
                  process.stdout.write("\n");
                  process.stderr.write(
                    `finish: ${chunk.finishReason}; ${u?.completionTokens ?? 0} tokens, ${num(u?.tokensPerSecond, 1)} tokens/s, fallback ${pct(u?.fallbackRate, 2)}\n`,
                  );
                }
              }
              await new Promise((r) => setTimeout(r, 300)); // the telemetry message trails the stream's end
              stopTelemetry();
              if (layers.length > 0) {
                const rates = layers.map((l) => `${l.layer + 1}:${pct(l.fallback_rate, 1)}`);
                process.stderr.write(`per-layer fallback: ${rates.join(" ")}\n`);
              }
              return EXIT.OK;
            } catch (error) {
              if (controller.signal.aborted) return EXIT.INTERRUPTED;
              throw error;
            } finally {
              process.off("SIGINT", onSigint);
              await worker.close();
            }
          } finally {
            ctx.close();
          }
        }),
    );
}
