/**
 * Supervise one Python worker process: start it (execa) in its own process group, detect readiness
 * by watching grpc.health.v1, forward its log lines, restart it with backoff when it dies, and on
 * shutdown signal the whole group (SIGTERM, then SIGKILL after the grace period).
 */

import { execa } from "execa";
import pRetry from "p-retry";
import { WorkerClient } from "./worker-client.js";

/** How to run `python -m tardis.worker`. */
export interface WorkerLaunch {
  readonly python: string;
  /** Working directory (python-worker/, so the package imports even when not installed). */
  readonly cwd: string;
  readonly jobsDir: string;
  readonly device?: string;
  /** Seconds the worker drains on SIGTERM (its --grace). */
  readonly graceS?: number;
  /** gRPC listen address; port 0 (default) lets the worker pick a free one. */
  readonly listen?: string;
  /** ZeroMQ endpoint to bind; default a free loopback port. */
  readonly telemetry?: string;
  /** Receives each log line of the worker (stdout and stderr), in order. */
  readonly onLog?: (line: string) => void;
  /** Told about starts, exits and restarts. */
  readonly onState?: (state: WorkerState, detail: string) => void;
  readonly readyTimeoutMs?: number;
  /** Restarts after an unexpected exit before giving up. */
  readonly maxRestarts?: number;
}

/** Lifecycle of the supervised process. */
export type WorkerState =
  | "STARTING"
  | "READY"
  | "EXITED"
  | "RESTARTING"
  | "STOPPING"
  | "STOPPED"
  | "FAILED";

// "tardis worker serving on 127.0.0.1:50551 (device cpu, telemetry tcp://127.0.0.1:5555, jobs …)"
const SERVING_LINE = /serving on (\S+) \(device \S+, telemetry (\S+?),/;

interface Running {
  readonly pid: number;
  readonly exited: Promise<void>;
  address?: string;
  telemetry?: string;
}

/** One supervised worker. */
export class WorkerSupervisor {
  private current: Running | undefined;
  private stopping = false;
  private readyWaiters: Array<() => void> = [];
  private failure: Error | undefined;
  private client_: WorkerClient | undefined;
  /** Unexpected exits so far. */
  restarts = 0;

  constructor(private readonly launch: WorkerLaunch) {}

  /** Process id (= process group id) of the running worker. */
  get pid(): number | undefined {
    return this.current?.pid;
  }

  /** ZeroMQ endpoint of the running worker ("" when telemetry is off). */
  get telemetryEndpoint(): string {
    return this.current?.telemetry ?? "";
  }

  /** Client of the running worker (a new one after each restart). */
  client(): WorkerClient {
    if (this.client_ === undefined) throw new Error("the worker is not ready");
    return this.client_;
  }

  /** Start the worker and wait until it is SERVING; retries a failed start with backoff. */
  async start(): Promise<void> {
    await pRetry(() => this.startOnce(), {
      retries: 2,
      minTimeout: 500,
      shouldRetry: () => !this.stopping,
    });
  }

  /** Resolves when a worker is SERVING (at once if it is); rejects when it cannot be restarted. */
  ready(signal?: AbortSignal): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.client_ !== undefined) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const onAbort = (): void => reject(signal?.reason ?? new Error("aborted"));
      signal?.addEventListener("abort", onAbort, { once: true });
      this.readyWaiters.push(() => {
        signal?.removeEventListener("abort", onAbort);
        if (this.failure) reject(this.failure);
        else resolve();
      });
    });
  }

  private notifyReady(): void {
    const waiters = this.readyWaiters;
    this.readyWaiters = [];
    for (const waiter of waiters) waiter();
  }

  private async startOnce(): Promise<void> {
    const l = this.launch;
    l.onState?.("STARTING", "");
    const args = ["-m", "tardis.worker", "--listen", l.listen ?? "127.0.0.1:0"];
    args.push("--telemetry", l.telemetry ?? "tcp://127.0.0.1:*", "--jobs-dir", l.jobsDir);
    args.push("--device", l.device ?? "cpu", "--grace", String(l.graceS ?? 30));
    const child = execa(l.python, args, {
      cwd: l.cwd,
      detached: true, // its own process group: shutdown signals reach every child it starts
      stdin: "ignore",
      all: true,
      buffer: false,
      reject: false,
      env: { PYTHONUNBUFFERED: "1" },
    });
    if (child.pid === undefined) {
      await child;
      throw new Error(
        `cannot start ${l.python}: is the virtualenv set up (bash scripts/setup.sh)?`,
      );
    }
    let announce: (where: { address: string; telemetry: string }) => void = () => {};
    const announced = new Promise<{ address: string; telemetry: string }>((resolve) => {
      announce = resolve;
    });
    const exited = (async () => {
      for await (const line of child.iterable({ from: "all" })) {
        const text = String(line);
        const match = SERVING_LINE.exec(text);
        if (match?.[1] && match[2]) announce({ address: match[1], telemetry: match[2] });
        l.onLog?.(text);
      }
      await child;
    })();
    const running: Running = { pid: child.pid, exited };
    this.current = running;
    const timeoutMs = l.readyTimeoutMs ?? 180_000;
    const outcome = await Promise.race([
      announced,
      exited.then(() => "exited" as const),
      sleep(timeoutMs).then(() => "timeout" as const),
    ]);
    if (outcome === "exited" || outcome === "timeout") {
      this.killGroup("SIGKILL");
      throw new Error(
        outcome === "exited"
          ? `the worker exited during startup (exit code ${(await child).exitCode}); see its log`
          : `the worker did not start serving within ${timeoutMs / 1000} s`,
      );
    }
    running.address = outcome.address;
    running.telemetry = outcome.telemetry === "off" ? "" : outcome.telemetry;
    const client = new WorkerClient(outcome.address);
    while ((await client.health().catch(() => "UNKNOWN")) !== "SERVING") await sleep(200);
    this.client_ = client;
    l.onState?.("READY", outcome.address);
    this.notifyReady();
    void exited.then(() => this.onExit(running));
  }

  private onExit(running: Running): void {
    if (this.current !== running) return;
    this.client_?.close();
    this.client_ = undefined;
    if (this.stopping) return;
    this.restarts += 1;
    const max = this.launch.maxRestarts ?? 5;
    this.launch.onState?.("EXITED", `unexpected exit (restart ${this.restarts}/${max})`);
    if (this.restarts > max) {
      this.failure = new Error(`the worker exited ${this.restarts} times; giving up`);
      this.launch.onState?.("FAILED", this.failure.message);
      this.notifyReady();
      return;
    }
    this.launch.onState?.("RESTARTING", "");
    pRetry(() => this.startOnce(), {
      retries: 4,
      minTimeout: 1_000,
      factor: 2,
      shouldRetry: () => !this.stopping,
    }).catch((error: unknown) => {
      this.failure = error instanceof Error ? error : new Error(String(error));
      this.launch.onState?.("FAILED", this.failure.message);
      this.notifyReady();
    });
  }

  /** Send `signal` to the worker's whole process group (tests use SIGKILL to simulate a crash). */
  killGroup(signal: NodeJS.Signals): void {
    const pid = this.current?.pid;
    if (pid === undefined) return;
    try {
      process.kill(-pid, signal);
    } catch {}
  }

  /** Graceful shutdown: SIGTERM to the group, SIGKILL after the grace period plus a margin. */
  async stop(): Promise<void> {
    this.stopping = true;
    const running = this.current;
    this.client_?.close();
    this.client_ = undefined;
    if (running === undefined) return;
    this.launch.onState?.("STOPPING", "");
    this.killGroup("SIGTERM");
    const graceMs = ((this.launch.graceS ?? 30) + 5) * 1000;
    const done = await Promise.race([
      running.exited.then(() => true),
      sleep(graceMs).then(() => false),
    ]);
    if (!done) this.killGroup("SIGKILL");
    await running.exited.catch(() => {});
    this.launch.onState?.("STOPPED", "");
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
