/**
 * `tardis rollout …`: `validate` checks a Rollout file offline (no server); the others talk to the
 * ControlPlane API of `tardis serve` (--server, $TARDIS_API; the bearer token from --token,
 * --token-file or $TARDIS_API_TOKEN).
 */

import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import type { Command } from "commander";
import { ApiCallError, ApiClient } from "../api/client.js";
import { millis } from "../api/convert.js";
import { documentsOfKind, formatConfigErrors, loadConfigFile } from "../config/index.js";
import type { ApplyRolloutResponse__Output } from "../gen/tardis/v1/ApplyRolloutResponse.js";
import type { ListRolloutsResponse__Output } from "../gen/tardis/v1/ListRolloutsResponse.js";
import type { Rollout__Output } from "../gen/tardis/v1/Rollout.js";
import type { RolloutHistory__Output } from "../gen/tardis/v1/RolloutHistory.js";
import { revisionOf } from "../rollouts/index.js";
import { badInput, CliError, EXIT } from "./exit-codes.js";
import { type OutputFormat, outputFormat, printObject, printRows } from "./output.js";

/** Connection flags of the commands that talk to the API. */
interface ApiFlags {
  server?: string;
  token?: string;
  tokenFile?: string;
  ca?: string;
  output: string;
}

const TERMINAL = new Set(["PROMOTED", "ABORTED", "DEGRADED"]);

function phaseOf(r: Rollout__Output): string {
  return String(r.phase).replace(/^ROLLOUT_PHASE_/, "");
}

/** Read and validate a Rollout file; exit 2 with `file:line:col` messages when it is malformed. */
async function readRolloutFile(file: string) {
  const path = resolve(file);
  const loaded = documentsOfKind(await loadConfigFile(path), "Rollout");
  if (!loaded.ok) throw badInput(formatConfigErrors(loaded.errors));
  if (loaded.documents.length !== 1) {
    throw badInput(`${file}: expected one Rollout document, found ${loaded.documents.length}`);
  }
  const doc = loaded.documents[0];
  if (doc === undefined) throw badInput(`${file}: no Rollout document`);
  return { path, doc: doc.config, text: readFileSync(path, "utf8") };
}

function connect(flags: ApiFlags): ApiClient {
  let token = flags.token ?? process.env.TARDIS_API_TOKEN;
  if (!token && flags.tokenFile) {
    token = readFileSync(flags.tokenFile, "utf8").split(/\r?\n/)[0]?.trim();
  }
  return new ApiClient({
    address: flags.server ?? process.env.TARDIS_API ?? "127.0.0.1:7070",
    token: token || undefined,
    caFile: flags.ca,
  });
}

/** API errors → exit codes: bad input and unknown names 2, the rest 1. */
function apiError(error: unknown, address: string): never {
  if (error instanceof ApiCallError) {
    const lines = [error.details, ...error.violations.map((v) => `  ${v.field}: ${v.description}`)];
    if (error.code === "INVALID_ARGUMENT" || error.code === "NOT_FOUND") {
      throw badInput(lines.join("\n"));
    }
    if (error.code === "UNAVAILABLE") {
      throw new CliError(
        EXIT.FAILED,
        `${error.details} (is \`tardis serve\` running at ${address}?)`,
      );
    }
    throw new CliError(EXIT.FAILED, `${error.code}: ${error.details}`);
  }
  throw error;
}

function time(ts: Rollout__Output["since"]): string {
  const ms = millis(ts);
  return ms === 0 ? "-" : new Date(ms).toISOString();
}

function statusRow(r: Rollout__Output): Record<string, unknown> {
  return {
    name: r.name,
    revision: `r${r.revisionNumber} ${r.revision.slice(0, 12)}`,
    phase: phaseOf(r),
    reason: r.reason,
    message: r.message,
    step: `${Math.min(r.step + 1, r.steps)}/${r.steps}${r.stepKind ? ` (${r.stepKind})` : ""}`,
    weight: `${r.weight}%${r.appliedWeight == null ? " (not applied yet)" : ""}`,
    baseline: r.baseline,
    candidate: r.candidate,
    failed: r.failed,
    inconclusive: r.inconclusive,
    since: time(r.since),
    ...(r.resumeAt ? { resumeAt: time(r.resumeAt) } : {}),
    ...(r.watchUntil ? { watchUntil: time(r.watchUntil) } : {}),
    ...(r.waitingFor ? { waitingFor: r.waitingFor } : {}),
  };
}

function printStatus(format: OutputFormat, r: Rollout__Output): void {
  printObject(
    format,
    format === "table" ? statusRow(r) : (r as unknown as Record<string, unknown>),
  );
}

/** Register the `rollout` command group. */
export function registerRollout(
  program: Command,
  run: (action: () => Promise<number>) => Promise<void>,
): void {
  const rollout = program
    .command("rollout")
    .description("progressive delivery of a variant: validate, apply, status, history, …");

  rollout
    .command("validate")
    .description("check a Rollout file offline (no server needed); exit 2 when malformed")
    .requiredOption("-f, --file <file>", "Rollout YAML")
    .action((opts: { file: string }) =>
      run(async () => {
        const { doc, path } = await readRolloutFile(opts.file);
        process.stdout.write(
          `${path}: valid Rollout ${doc.metadata.name} (revision ${revisionOf(doc.metadata.name, doc.spec).slice(0, 12)}, ${doc.spec.steps.length} steps)\n`,
        );
        return EXIT.OK;
      }),
    );

  const withApi = (cmd: Command): Command =>
    cmd
      .option(
        "--server <host:port>",
        "ControlPlane API address ($TARDIS_API, default 127.0.0.1:7070)",
      )
      .option("--token <token>", "bearer token ($TARDIS_API_TOKEN)")
      .option("--token-file <file>", "file whose first line is the bearer token")
      .option("--ca <file>", "PEM CA certificate of a TLS API")
      .option("-o, --output <format>", "table, json or yaml", "table");

  const api = async <T>(flags: ApiFlags, body: (client: ApiClient) => Promise<T>): Promise<T> => {
    const client = connect(flags);
    try {
      return await body(client);
    } catch (error) {
      return apiError(error, flags.server ?? process.env.TARDIS_API ?? "127.0.0.1:7070");
    } finally {
      client.close();
    }
  };

  withApi(
    rollout
      .command("apply")
      .description("apply a Rollout file (a new revision when the spec changed)")
      .requiredOption("-f, --file <file>", "Rollout YAML")
      .option("--wait", "wait until PROMOTED (exit 0), ABORTED/DEGRADED (exit 1) or a manual pause")
      .option("--timeout <seconds>", "with --wait: give up after this long (exit 3)"),
  ).action((opts: ApiFlags & { file: string; wait?: boolean; timeout?: string }) =>
    run(async () => {
      const format = outputFormat(opts.output);
      const { text } = await readRolloutFile(opts.file);
      return api(opts, async (client) => {
        const reply = await client.call<ApplyRolloutResponse__Output>("applyRollout", {
          specYaml: text,
        });
        const applied = reply.rollout as Rollout__Output;
        process.stderr.write(
          `${reply.newRevision ? "applied new" : "unchanged"} revision r${applied.revisionNumber} of ${applied.name}\n`,
        );
        if (!opts.wait) {
          printStatus(format, applied);
          return EXIT.OK;
        }
        const until = opts.timeout ? Date.now() + Number(opts.timeout) * 1000 : Infinity;
        let last = "";
        for (;;) {
          const r = await client.call<Rollout__Output>("getRollout", { name: applied.name });
          const line = `${phaseOf(r)} step ${Math.min(r.step + 1, r.steps)}/${r.steps} weight ${r.weight}% ${r.reason}`;
          if (line !== last) process.stderr.write(`${line}\n`);
          last = line;
          const phase = phaseOf(r);
          const manualPause = phase === "PAUSED" && !r.resumeAt;
          if (TERMINAL.has(phase) || manualPause) {
            printStatus(format, r);
            if (manualPause) {
              process.stderr.write(`paused: ${r.message} (tardis rollout resume ${r.name})\n`);
              return EXIT.OK;
            }
            return phase === "PROMOTED" ? EXIT.OK : EXIT.FAILED;
          }
          if (Date.now() > until) {
            printStatus(format, r);
            return EXIT.TIMEOUT;
          }
          await new Promise((done) => setTimeout(done, 1000));
        }
      });
    }),
  );

  withApi(rollout.command("status [name]").description("status of one rollout, or of all")).action(
    (name: string | undefined, opts: ApiFlags) =>
      run(async () => {
        const format = outputFormat(opts.output);
        return api(opts, async (client) => {
          if (name) {
            printStatus(format, await client.call<Rollout__Output>("getRollout", { name }));
            return EXIT.OK;
          }
          const list = await client.call<ListRolloutsResponse__Output>("listRollouts", {});
          if (format !== "table") {
            printObject(format, { rollouts: list.rollouts });
            return EXIT.OK;
          }
          printRows(format, list.rollouts, [
            { header: "NAME", cell: (r) => r.name },
            { header: "REVISION", cell: (r) => `r${r.revisionNumber}` },
            { header: "PHASE", cell: phaseOf },
            { header: "STEP", cell: (r) => `${Math.min(r.step + 1, r.steps)}/${r.steps}` },
            { header: "WEIGHT", cell: (r) => `${r.weight}%` },
            { header: "REASON", cell: (r) => r.reason },
          ]);
          return EXIT.OK;
        });
      }),
  );

  withApi(
    rollout
      .command("history <name>")
      .description("revisions, phase/weight history and the decision log (every gate's values)"),
  ).action((name: string, opts: ApiFlags) =>
    run(async () => {
      const format = outputFormat(opts.output);
      return api(opts, async (client) => {
        const h = await client.call<RolloutHistory__Output>("getRolloutHistory", { name });
        if (format !== "table") {
          printObject(format, h as unknown as Record<string, unknown>);
          return EXIT.OK;
        }
        printRows(format, h.revisions, [
          { header: "REVISION", cell: (r) => `r${r.number} ${r.revision.slice(0, 12)}` },
          { header: "APPLIED", cell: (r) => time(r.appliedAt) },
          { header: "PROMOTED", cell: (r) => time(r.promotedAt) },
        ]);
        printRows(format, h.entries, [
          { header: "TIME", cell: (e) => time(e.time) },
          { header: "PHASE", cell: (e) => String(e.phase).replace(/^ROLLOUT_PHASE_/, "") },
          { header: "STEP", cell: (e) => String(e.step) },
          { header: "WEIGHT", cell: (e) => `${e.weight}%` },
          { header: "REASON", cell: (e) => e.reason },
          { header: "MESSAGE", cell: (e) => e.message },
        ]);
        printRows(format, h.decisions, [
          { header: "TIME", cell: (d) => time(d.time) },
          { header: "STEP", cell: (d) => `${d.context} ${d.step}` },
          { header: "GATE", cell: (d) => d.gate },
          { header: "OUTCOME", cell: (d) => String(d.outcome).replace(/^GATE_OUTCOME_/, "") },
          {
            header: "MEASURED",
            cell: (d) =>
              Object.entries(d.measured)
                .map(([k, v]) => `${k}=${Number.isInteger(v) ? v : Number(v).toPrecision(4)}`)
                .join(" "),
          },
          { header: "MESSAGE", cell: (d) => d.message },
        ]);
        return EXIT.OK;
      });
    }),
  );

  const command = (
    verb: "promote" | "abort" | "pause" | "resume",
    method: "promoteRollout" | "abortRollout" | "pauseRollout" | "resumeRollout",
    description: string,
  ): void => {
    withApi(rollout.command(`${verb} <name>`).description(description))
      .option("-m, --message <text>", "why (shown in status and history)")
      .action((name: string, opts: ApiFlags & { message?: string }) =>
        run(async () => {
          const format = outputFormat(opts.output);
          return api(opts, async (client) => {
            const r = await client.call<Rollout__Output>(method, {
              name,
              ...(opts.message ? { message: opts.message } : {}),
            });
            printStatus(format, r);
            return EXIT.OK;
          });
        }),
      );
  };
  command("promote", "promoteRollout", "skip the remaining steps: the candidate gets all traffic");
  command("abort", "abortRollout", "send all traffic back to the baseline and stop");
  command("pause", "pauseRollout", "hold a progressing rollout until resumed");
  command("resume", "resumeRollout", "continue a paused rollout");

  withApi(
    rollout
      .command("rollback <name>")
      .description("serve an earlier promoted revision's candidate again, at once")
      .requiredOption("--to <revision>", "revision hash, unique prefix, or number (2 or r2)"),
  ).action((name: string, opts: ApiFlags & { to: string }) =>
    run(async () => {
      const format = outputFormat(opts.output);
      return api(opts, async (client) => {
        printStatus(
          format,
          await client.call<Rollout__Output>("rollbackRollout", { name, toRevision: opts.to }),
        );
        return EXIT.OK;
      });
    }),
  );
}
