/**
 * `tardis serve -f deployment.yaml`: the ControlPlane gRPC API (with health, reflection, bearer
 * auth, TLS when configured), the worker processes the Deployment names (supervised), the rollout
 * engine (continuing every rollout where it was) and the Prometheus metrics endpoint. SIGINT or
 * SIGTERM drains: NOT_SERVING, calls in flight finish, workers get SIGTERM.
 */

import { join, resolve } from "node:path";
import type { Command } from "commander";
import { resolveToken } from "../api/auth.js";
import type { FleetMember } from "../api/fleet.js";
import { ControlPlaneServer } from "../api/server.js";
import {
  applyOverrides,
  type Deployment,
  documentsOfKind,
  flagName,
  formatConfigErrors,
  loadConfigFile,
  OVERRIDES,
  parseListenAddress,
} from "../config/index.js";
import { WorkerSupervisor } from "../workers/supervisor.js";
import { remoteWorker, supervisedWorker } from "../workers/worker-handle.js";
import {
  type GlobalOptions,
  openContext,
  REPO_ROOT,
  reapOrphanWorkers,
  workerPython,
} from "./context.js";
import { badInput, CliError, EXIT } from "./exit-codes.js";

const DEPLOYMENT_FLAGS = OVERRIDES.filter((o) => o.kind === "Deployment");

/** Read a Deployment file with flag and environment overrides; exit-2 errors. */
export async function loadDeployment(
  file: string,
  flags: Record<string, string | undefined>,
): Promise<Deployment> {
  const loaded = documentsOfKind(await loadConfigFile(file), "Deployment");
  if (!loaded.ok) throw badInput(formatConfigErrors(loaded.errors));
  const doc = loaded.documents[0];
  if (doc === undefined || loaded.documents.length !== 1) {
    throw badInput(`${file}: expected one Deployment document`);
  }
  const overridden = applyOverrides(doc.config, { flags, env: process.env });
  if (!overridden.ok) throw badInput(formatConfigErrors(overridden.errors));
  return overridden.config;
}

/** Register `tardis serve`. */
export function registerServe(
  program: Command,
  run: (action: () => Promise<number>) => Promise<void>,
): void {
  const cmd = program
    .command("serve")
    .description(
      "run the ControlPlane gRPC API and the workers of a Deployment until Ctrl-C / SIGTERM",
    )
    .requiredOption("-f, --file <file>", "Deployment YAML")
    .option(
      "--metrics-listen <host:port>",
      'Prometheus endpoint (GET /metrics); "off" for none',
      "127.0.0.1:9464",
    )
    .option("--eval-max-tokens <n>", "tokens of the eval set the accuracy gate scores", "4096")
    .option("--grace <seconds>", "drain time of calls and workers on shutdown", "30");
  for (const o of DEPLOYMENT_FLAGS) {
    cmd.option(`${flagName(o)} <value>`, `override ${o.path.join(".")} ($${o.env})`);
  }
  cmd.action((opts: Record<string, string | undefined>) =>
    run(async () => {
      const global = program.opts<GlobalOptions>();
      const flags: Record<string, string | undefined> = {};
      for (const o of DEPLOYMENT_FLAGS) flags[o.option] = opts[o.option];
      const deployment = await loadDeployment(resolve(String(opts.file)), flags);
      const api = deployment.spec.api;
      let token: string | undefined;
      try {
        token = resolveToken(api.auth);
      } catch (error) {
        throw badInput(error instanceof Error ? error.message : String(error));
      }
      const metricsListen = opts.metricsListen === "off" ? null : String(opts.metricsListen);
      if (metricsListen !== null && parseListenAddress(metricsListen)?.kind !== "tcp") {
        throw badInput(`--metrics-listen ${metricsListen}: expected host:port or "off"`);
      }
      const evalMaxTokens = Number(opts.evalMaxTokens);
      if (!Number.isInteger(evalMaxTokens) || evalMaxTokens < 16) {
        throw badInput(`--eval-max-tokens ${opts.evalMaxTokens}: expected an integer ≥ 16`);
      }
      const graceS = Number(opts.grace ?? 30);
      const ctx = openContext(global);
      const say = (line: string): void => {
        process.stderr.write(`${line}\n`);
      };
      const members: FleetMember[] = [];
      const remote = global.worker ?? process.env.TARDIS_WORKER;
      try {
        if (remote) {
          // Someone else runs the workers (one address, or several comma-separated).
          remote.split(",").forEach((address, i) => {
            members.push({
              id: `remote-${i}`,
              pool: "remote",
              engine: "hf",
              device: "",
              handle: remoteWorker(address.trim()),
            });
          });
        } else {
          await reapOrphanWorkers(ctx);
          for (const pool of deployment.spec.workers) {
            for (let i = 0; i < pool.count; i++) {
              members.push(startPoolWorker(ctx, pool, i, graceS, say));
            }
          }
        }
        const server = new ControlPlaneServer({
          db: ctx.db,
          home: ctx.home,
          workers: members,
          listen: api.listen,
          token,
          tls: api.tls,
          metricsListen,
          accuracy: { maxTokens: evalMaxTokens },
          log: ctx.log,
        });
        say(`starting ${members.length} worker(s)…`);
        await Promise.all(
          members.map((m) =>
            m.supervisor
              ? m.supervisor.start().catch((error: unknown) => {
                  throw new CliError(
                    EXIT.FAILED,
                    `worker ${m.id} did not start: ${error instanceof Error ? error.message : String(error)} (log: ${join(ctx.home, "logs", "tardis.log")})`,
                  );
                })
              : Promise.resolve(),
          ),
        );
        await server.start();
        say(
          `tardis serve: API on ${server.address}${api.tls ? " (TLS)" : ""}${token ? " (bearer token)" : ""}` +
            `${server.metricsAddress ? `, metrics on http://${server.metricsAddress}/metrics` : ""}; Ctrl-C to stop`,
        );
        await new Promise<void>((done) => {
          process.once("SIGINT", () => done());
          process.once("SIGTERM", () => done());
        });
        say("draining…");
        await server.stop(graceS * 1000);
        return EXIT.OK;
      } finally {
        await Promise.all(members.map((m) => m.handle.close().catch(() => {})));
        ctx.close();
      }
    }),
  );
}

/** One supervised worker of a pool: port = pool port + i (0 stays 0: any free port). */
function startPoolWorker(
  ctx: ReturnType<typeof openContext>,
  pool: Deployment["spec"]["workers"][number],
  index: number,
  graceS: number,
  say: (line: string) => void,
): FleetMember {
  const id = `${pool.name}-${index}`;
  const address = parseListenAddress(pool.listen);
  const listen =
    address?.kind === "tcp" && address.port !== 0
      ? `${address.host}:${address.port + index}`
      : pool.listen;
  let recorded: number | undefined;
  const supervisor: WorkerSupervisor = new WorkerSupervisor({
    python: workerPython(),
    cwd: join(REPO_ROOT, "python-worker"),
    jobsDir: join(ctx.home, "jobs"),
    device: pool.device,
    listen,
    graceS,
    onLog: (line) => ctx.log.info({ worker: id, pid: supervisor.pid }, line),
    onState: (state, detail) => {
      ctx.log.info({ worker: id, state }, detail);
      if (state === "READY" && supervisor.pid !== undefined) {
        if (recorded !== undefined) ctx.workers.remove(recorded);
        recorded = supervisor.pid;
        ctx.workers.add({
          pid: supervisor.pid,
          ownerPid: process.pid,
          address: detail,
          telemetry: supervisor.telemetryEndpoint,
          mode: "ephemeral",
        });
        say(`worker ${id} ready at ${detail} (pid ${supervisor.pid})`);
      } else if (state === "RESTARTING" || state === "FAILED") {
        say(`worker ${id} ${state.toLowerCase()}${detail ? `: ${detail}` : ""}`);
      }
    },
  });
  const handle = supervisedWorker(supervisor, () => {
    if (recorded !== undefined) ctx.workers.remove(recorded);
  });
  return { id, pool: pool.name, engine: pool.engine, device: pool.device, handle, supervisor };
}
