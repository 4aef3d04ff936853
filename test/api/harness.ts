/**
 * One real `python -m tardis.worker` shared by the API tests, tiny variants calibrated on it, a
 * state folder whose registry knows them, and helpers to run `tardis serve` as a child process.
 */

import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { FoldConfig } from "../../control-plane/src/gen/tardis/v1/FoldConfig.js";
import { openDatabase } from "../../control-plane/src/store/database.js";
import { VariantRegistry } from "../../control-plane/src/variants/registry.js";
import { WorkerSupervisor } from "../../control-plane/src/workers/supervisor.js";

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const TINY_GPT2 = join(REPO_ROOT, "models", "tardis-tiny-gpt2");
const BIN = join(REPO_ROOT, "control-plane", "bin", "tardis.js");

/** A calibrated variant as the registry needs it. */
export interface MadeVariant {
  readonly id: string;
  readonly name: string;
  readonly path: string;
  readonly basePath: string;
  readonly family: string;
}

/** Start a supervised worker on CPU (its own temp jobs folder). */
export async function startWorker(root: string, log: string[]): Promise<WorkerSupervisor> {
  const worker = new WorkerSupervisor({
    python: join(REPO_ROOT, ".venv", "bin", "python"),
    cwd: join(REPO_ROOT, "python-worker"),
    jobsDir: join(root, "worker-jobs"),
    graceS: 2,
    onLog: (line) => {
      log.push(line);
      if (log.length > 400) log.splice(0, 200);
    },
  });
  await worker.start();
  return worker;
}

/** Calibrate the tiny GPT-2 on the worker (small, fast settings) and return the variant. */
export async function calibrate(
  worker: WorkerSupervisor,
  root: string,
  name: string,
  dataset: { builtin: string } | { path: string },
  config: FoldConfig,
): Promise<MadeVariant> {
  const client = worker.client();
  const events = client.calibrate({
    jobId: `api-test-${name}`,
    model: { path: TINY_GPT2 },
    dataset,
    config: {
      calibTokens: "512",
      heldoutTokens: "256",
      seqLen: 64,
      batchSize: 4,
      groupSize: 32,
      histogramBins: 32,
      // Round-to-nearest predictor: a few seconds per variant on CPU (GPTQ takes several times longer).
      predictorMethod: "rtn",
      ...config,
    },
    outputPath: join(root, "variants", name),
  });
  for await (const event of events) {
    if (event.event === "completed") {
      const m = event.completed?.manifest;
      if (!m) throw new Error(`calibration ${name} completed without a manifest`);
      return { id: m.variantId, name, path: m.path, basePath: m.basePath, family: m.family };
    }
    if (event.event === "failed" || event.event === "cancelled") {
      throw new Error(`calibration ${name} ended ${event.event}: ${JSON.stringify(event.failed)}`);
    }
  }
  throw new Error(`calibration ${name} ended without a terminal event`);
}

/** Register variants in the store of state folder `home`. */
export function register(home: string, variants: readonly MadeVariant[]): void {
  mkdirSync(home, { recursive: true });
  const db = openDatabase(join(home, "tardis.db"));
  try {
    const registry = new VariantRegistry(db);
    for (const v of variants) {
      registry.register({ ...v, jobId: `api-test-${v.name}`, method: {}, metrics: {} });
    }
  } finally {
    db.close();
  }
}

/** A temp folder removed by {@link removeTemp}. */
export function makeTemp(): string {
  return mkdtempSync(join(tmpdir(), "tardis-api-"));
}

export function removeTemp(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/** A Rollout YAML. */
export function rolloutYaml(
  name: string,
  baseline: string,
  candidate: string,
  steps: readonly string[],
  gates: readonly string[] = [],
): string {
  return [
    "apiVersion: tardis/v1",
    "kind: Rollout",
    "metadata:",
    `  name: ${name}`,
    "spec:",
    `  baseline: ${baseline}`,
    `  candidate: ${candidate}`,
    "  steps:",
    ...steps.map((s) => `    - ${s}`),
    "  gates:",
    ...(gates.length > 0 ? gates.map((g) => `    ${g}`) : ["    {}"]),
    "  watchWindow: 0s",
    "",
  ].join("\n");
}

/** A running `tardis serve` child. */
export interface ServeProcess {
  readonly child: ChildProcess;
  readonly address: Promise<string>;
  readonly exited: Promise<number | null>;
  stderr(): string;
}

/** Start `tardis --home HOME --worker ADDR serve -f FILE` with the API token in the environment. */
export function startServe(home: string, workerAddress: string, file: string, token: string) {
  const child = spawn(
    process.execPath,
    [
      BIN,
      "--home",
      home,
      "--worker",
      workerAddress,
      "serve",
      "-f",
      file,
      "--metrics-listen",
      "off",
      "--eval-max-tokens",
      "256",
    ],
    {
      cwd: REPO_ROOT,
      env: { ...process.env, TARDIS_API_TOKEN: token, FORCE_COLOR: "0" },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  let err = "";
  let found: (address: string) => void = () => {};
  const address = new Promise<string>((resolve_, reject) => {
    found = resolve_;
    child.on("close", (code) => reject(new Error(`tardis serve exited (${code}): ${err}`)));
  });
  address.catch(() => {});
  child.stderr?.on("data", (d: Buffer) => {
    err += d.toString();
    const match = /API on (\S+?)[,\s]/.exec(err);
    if (match?.[1]) found(match[1]);
  });
  child.stdout?.resume();
  const exited = new Promise<number | null>((r) => child.on("close", (code) => r(code)));
  return { child, address, exited, stderr: () => err } satisfies ServeProcess;
}

/** Run the CLI to completion. */
export function runCli(
  args: readonly string[],
  env: Record<string, string> = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...env, FORCE_COLOR: "0" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout?.on("data", (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr?.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  return new Promise((r) => child.on("close", (code) => r({ code, stdout, stderr })));
}

/** Write a file under `dir`; returns its path. */
export function write(dir: string, name: string, text: string): string {
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}

/** Poll `check` until it returns a value (not undefined) or time runs out. */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined> | T | undefined,
  timeoutMs: number,
): Promise<T> {
  const until = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < until) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ""}`);
}
