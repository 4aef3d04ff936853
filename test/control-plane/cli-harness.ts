/**
 * Run the real `tardis` CLI (control-plane/bin/tardis.js) in a child process with its own state
 * folder, and read that folder's SQLite store directly to wait for job events.
 */

import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const BIN = join(REPO_ROOT, "control-plane", "bin", "tardis.js");
export const TINY_GPT2 = join(REPO_ROOT, "models", "tardis-tiny-gpt2");

/** A finished CLI run. */
export interface CliResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** A running CLI process whose output is collected. */
export interface CliProcess {
  readonly child: ChildProcess;
  readonly done: Promise<CliResult>;
}

/** A temporary TARDIS_HOME with helpers to run the CLI against it. */
export class Sandbox {
  readonly home: string;
  private readonly children: ChildProcess[] = [];

  constructor() {
    this.home = mkdtempSync(join(tmpdir(), "tardis-cli-"));
  }

  /** Start `tardis ARGS…` (no shell). */
  spawn(args: readonly string[]): CliProcess {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd: REPO_ROOT,
      env: { ...process.env, TARDIS_HOME: this.home, TARDIS_WORKER: "", FORCE_COLOR: "0" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.children.push(child);
    let stdout = "";
    let stderr = "";
    child.stdout?.on("data", (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr?.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    const done = new Promise<CliResult>((resolve) => {
      child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr }));
    });
    return { child, done };
  }

  /** Run `tardis ARGS…` to completion. */
  run(args: readonly string[]): Promise<CliResult> {
    return this.spawn(args).done;
  }

  /** Write a file into the sandbox; returns its path. */
  write(name: string, text: string): string {
    const file = join(this.home, name);
    writeFileSync(file, text);
    return file;
  }

  /** Query the sandbox's store (read-only, a fresh connection each time). */
  query<T>(sql: string, ...params: unknown[]): T[] {
    const db = new Database(join(this.home, "tardis.db"), { readonly: true, fileMustExist: true });
    try {
      return db.prepare(sql).all(...params) as T[];
    } finally {
      db.close();
    }
  }

  /** Poll the store until `sql` returns a row (or fail after `timeoutMs`). */
  async waitFor<T>(sql: string, params: unknown[], timeoutMs: number): Promise<T> {
    const until = Date.now() + timeoutMs;
    while (Date.now() < until) {
      try {
        const rows = this.query<T>(sql, ...params);
        if (rows[0] !== undefined) return rows[0];
      } catch {
        // the database may not exist yet
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error(
      `timed out after ${timeoutMs} ms waiting for: ${sql} ${JSON.stringify(params)}`,
    );
  }

  /** SIGKILL CLI processes still running and every worker group the store records; delete the folder. */
  cleanup(): void {
    for (const child of this.children) {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    }
    try {
      for (const { pid } of this.query<{ pid: number }>("SELECT pid FROM workers")) {
        try {
          process.kill(-pid, "SIGKILL");
        } catch {}
      }
    } catch {}
    rmSync(this.home, { recursive: true, force: true });
  }
}

/** A CalibrationJob YAML for the tiny GPT-2 with small, fast settings. */
export function tinyJobYaml(options: {
  name: string;
  calibTokens: number;
  batchSize: number;
  modelPath?: string;
}): string {
  return [
    "apiVersion: tardis/v1",
    "kind: CalibrationJob",
    "metadata:",
    `  name: ${options.name}`,
    "spec:",
    "  model:",
    `    path: ${options.modelPath ?? TINY_GPT2}`,
    "  dataset:",
    "    builtin: lee",
    "  method:",
    `    calibTokens: ${options.calibTokens}`,
    "    heldoutTokens: 512",
    "    seqLen: 64",
    `    batchSize: ${options.batchSize}`,
    "    groupSize: 32",
    "    histogramBins: 128",
    "",
  ].join("\n");
}
