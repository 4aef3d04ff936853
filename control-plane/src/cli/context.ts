/**
 * What every command shares: where state lives (TARDIS_HOME), the store, the logger, and how to get
 * a worker: `--worker ADDR`, a running `tardis worker start` service, or one started for this
 * command (supervised, stopped at the end). Workers left by a killed control plane are shut down.
 */

import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import pino, { type Logger } from "pino";
import { isAlive, JobStore } from "../jobs/job-store.js";
import { type Db, openDatabase } from "../store/database.js";
import { VariantRegistry } from "../variants/registry.js";
import { WorkerSupervisor } from "../workers/supervisor.js";
import { remoteWorker, supervisedWorker, type WorkerHandle } from "../workers/worker-handle.js";
import { WorkerRegistry } from "../workers/worker-registry.js";
import { CliError, EXIT } from "./exit-codes.js";

/** The repository root (this file is control-plane/src/cli/context.ts). */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");

/** Global options every command accepts. */
export interface GlobalOptions {
  readonly home?: string;
  readonly worker?: string;
  readonly verbose?: boolean;
}

/** Opened state of one command. */
export interface Context {
  readonly home: string;
  readonly db: Db;
  readonly jobs: JobStore;
  readonly variants: VariantRegistry;
  readonly workers: WorkerRegistry;
  readonly log: Logger;
  close(): void;
}

/** Open the state folder (TARDIS_HOME, default <repo>/.tardis) and its database. */
/** Run `fn` with a context opened from `options`, closing it afterwards (also when `fn` throws). */
export async function withContext<T>(
  options: GlobalOptions,
  fn: (ctx: Context) => Promise<T>,
): Promise<T> {
  const ctx = openContext(options);
  try {
    return await fn(ctx);
  } finally {
    ctx.close();
  }
}

export function openContext(options: GlobalOptions): Context {
  const home = resolve(options.home ?? process.env.TARDIS_HOME ?? join(REPO_ROOT, ".tardis"));
  const db = openDatabase(join(home, "tardis.db"));
  const destination = options.verbose
    ? pino.destination({ dest: 2, sync: true })
    : pino.destination({ dest: join(home, "logs", "tardis.log"), sync: true, mkdir: true });
  const log = pino(
    { level: process.env.TARDIS_LOG_LEVEL ?? "info", base: { pid: process.pid } },
    destination,
  );
  return {
    home,
    db,
    jobs: new JobStore(db),
    variants: new VariantRegistry(db),
    workers: new WorkerRegistry(db),
    log,
    close: () => db.close(),
  };
}

/** The Python that runs the worker: TARDIS_PYTHON, else the project virtualenv. */
export function workerPython(): string {
  const python = process.env.TARDIS_PYTHON ?? join(REPO_ROOT, ".venv", "bin", "python");
  if (!existsSync(python)) {
    throw new CliError(
      EXIT.FAILED,
      `the worker's Python ${python} does not exist: run bash scripts/setup.sh (or set TARDIS_PYTHON)`,
    );
  }
  return python;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Shut down ephemeral workers whose control plane died (SIGTERM to the group, SIGKILL after 20 s). */
export async function reapOrphanWorkers(ctx: Context): Promise<void> {
  for (const w of ctx.workers.alive()) {
    if (isAlive(w.ownerPid)) continue;
    ctx.log.warn({ worker: w.pid }, "stopping a worker left by a control plane that exited");
    try {
      process.kill(-w.pid, "SIGTERM");
    } catch {}
    for (let i = 0; i < 100 && isAlive(w.pid); i++) await sleep(200);
    if (isAlive(w.pid)) {
      try {
        process.kill(-w.pid, "SIGKILL");
      } catch {}
    }
    ctx.workers.remove(w.pid);
  }
}

/** Options of {@link acquireWorker}. */
export interface AcquireOptions {
  /** Print worker lifecycle lines (starting, ready, restarting) to stderr. */
  readonly announce?: (line: string) => void;
  readonly mode?: "ephemeral" | "service";
  readonly graceS?: number;
}

/** A worker for this command: --worker / TARDIS_WORKER, a live service worker, or a new one. */
export async function acquireWorker(
  ctx: Context,
  global: GlobalOptions,
  options: AcquireOptions = {},
): Promise<WorkerHandle> {
  const address = global.worker ?? process.env.TARDIS_WORKER;
  if (address) return remoteWorker(address);
  await reapOrphanWorkers(ctx);
  if (options.mode !== "service") {
    const service = ctx.workers.alive().find((w) => w.mode === "service" && isAlive(w.ownerPid));
    if (service) {
      options.announce?.(`using the worker of \`tardis worker start\` at ${service.address}`);
      return remoteWorker(service.address, service.telemetry);
    }
  }
  let recorded: number | undefined;
  const supervisor: WorkerSupervisor = new WorkerSupervisor({
    python: workerPython(),
    cwd: join(REPO_ROOT, "python-worker"),
    jobsDir: join(ctx.home, "jobs"),
    graceS: options.graceS ?? 30,
    onLog: (line) => ctx.log.info({ worker: supervisor.pid }, line),
    onState: (state, detail) => {
      ctx.log.info({ worker: supervisor.pid, state }, detail);
      if (state === "READY" && supervisor.pid !== undefined) {
        if (recorded !== undefined) ctx.workers.remove(recorded);
        recorded = supervisor.pid;
        ctx.workers.add({
          pid: supervisor.pid,
          ownerPid: process.pid,
          address: detail,
          telemetry: supervisor.telemetryEndpoint,
          mode: options.mode ?? "ephemeral",
        });
        options.announce?.(`worker ready at ${detail} (pid ${supervisor.pid})`);
      } else if (state === "RESTARTING" || state === "EXITED" || state === "FAILED") {
        options.announce?.(`worker ${state.toLowerCase()}${detail ? `: ${detail}` : ""}`);
      }
    },
  });
  options.announce?.("starting a worker (python -m tardis.worker)…");
  try {
    await supervisor.start();
  } catch (error) {
    await supervisor.stop();
    throw new CliError(
      EXIT.FAILED,
      `the worker did not start: ${error instanceof Error ? error.message : String(error)} (log: ${join(ctx.home, "logs", "tardis.log")})`,
    );
  }
  return Object.assign(
    supervisedWorker(supervisor, () => {
      if (recorded !== undefined) ctx.workers.remove(recorded);
    }),
    { supervisor },
  );
}
