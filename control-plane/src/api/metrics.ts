/**
 * Prometheus text metrics over node:http (loopback by default): jobs by state, rollout phase and
 * weight, gate results, per-variant routed request latency and fallback rate.
 */

import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { JobStore } from "../jobs/job-store.js";
import { PHASES, type RolloutChange, type RolloutEngine } from "../rollouts/index.js";

const JOB_STATES = ["QUEUED", "RUNNING", "CANCELLING", "SUCCEEDED", "FAILED", "CANCELLED"];

/** The control plane's metrics. */
export class ApiMetrics {
  readonly registry = new Registry();
  private readonly gateResults: Counter<"rollout" | "gate" | "outcome">;
  private readonly requests: Counter<"variant" | "outcome">;
  private readonly latency: Histogram<"variant">;
  private readonly ttft: Histogram<"variant">;
  private readonly fallback: Histogram<"variant">;
  private server: Server | undefined;

  constructor(jobs: JobStore, engine: RolloutEngine) {
    const registers = [this.registry];
    new Gauge({
      name: "tardis_jobs",
      help: "Jobs by state.",
      labelNames: ["state"],
      registers,
      collect() {
        const counts = new Map<string, number>(JOB_STATES.map((s) => [s, 0]));
        for (const job of jobs.list()) counts.set(job.state, (counts.get(job.state) ?? 0) + 1);
        for (const [state, n] of counts) this.set({ state }, n);
      },
    });
    new Gauge({
      name: "tardis_rollout_phase",
      help: "1 for the phase each rollout is in, 0 for the others.",
      labelNames: ["rollout", "phase"],
      registers,
      collect() {
        this.reset();
        for (const s of engine.list()) {
          for (const phase of PHASES)
            this.set({ rollout: s.name, phase }, s.phase === phase ? 1 : 0);
        }
      },
    });
    new Gauge({
      name: "tardis_rollout_candidate_weight_percent",
      help: "Percent of a rollout's traffic the router sends to the candidate.",
      labelNames: ["rollout"],
      registers,
      collect() {
        this.reset();
        for (const s of engine.list()) this.set({ rollout: s.name }, s.appliedWeight ?? s.weight);
      },
    });
    new Gauge({
      name: "tardis_rollout_step",
      help: "0-based index of the current step of each rollout.",
      labelNames: ["rollout"],
      registers,
      collect() {
        this.reset();
        for (const s of engine.list()) this.set({ rollout: s.name }, s.step);
      },
    });
    this.gateResults = new Counter({
      name: "tardis_rollout_gate_results_total",
      help: "Gate evaluations by outcome (successful, failed, inconclusive, error).",
      labelNames: ["rollout", "gate", "outcome"],
      registers,
    });
    this.requests = new Counter({
      name: "tardis_generate_requests_total",
      help: "Routed Generate requests by variant and outcome (ok, error, cancelled).",
      labelNames: ["variant", "outcome"],
      registers,
    });
    this.latency = new Histogram({
      name: "tardis_generate_duration_seconds",
      help: "Routed Generate wall time by variant.",
      labelNames: ["variant"],
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.ttft = new Histogram({
      name: "tardis_generate_ttft_seconds",
      help: "Time to first token of routed Generate requests by variant.",
      labelNames: ["variant"],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    });
    this.fallback = new Histogram({
      name: "tardis_generate_fallback_rate",
      help: "Per-request FFN fallback rate of routed Generate requests by variant.",
      labelNames: ["variant"],
      buckets: [0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1],
      registers,
    });
    engine.subscribe((change) => this.onRollout(change));
  }

  private onRollout(change: RolloutChange): void {
    for (const d of change.decisions) {
      this.gateResults.inc({ rollout: change.status.name, gate: d.gate, outcome: d.outcome });
    }
  }

  /** One routed request finished. */
  observeRequest(
    variant: string,
    outcome: "ok" | "error" | "cancelled",
    seconds: number,
    usage?: { ttftSeconds?: number; fallbackRate?: number },
  ): void {
    this.requests.inc({ variant, outcome });
    if (outcome !== "ok") return;
    this.latency.observe({ variant }, seconds);
    if (usage?.ttftSeconds !== undefined) this.ttft.observe({ variant }, usage.ttftSeconds);
    if (usage?.fallbackRate !== undefined) this.fallback.observe({ variant }, usage.fallbackRate);
  }

  /** Serve GET /metrics on host:port (port 0: any free one); returns the bound address. */
  async listen(host: string, port: number): Promise<string> {
    const server = createServer((req, res) => {
      if (req.method !== "GET" || (req.url ?? "/").split("?")[0] !== "/metrics") {
        res.writeHead(404, { "content-type": "text/plain" }).end("try GET /metrics\n");
        return;
      }
      this.registry.metrics().then(
        (text) => res.writeHead(200, { "content-type": this.registry.contentType }).end(text),
        (error: unknown) => res.writeHead(500).end(String(error)),
      );
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => resolve());
    });
    const a = server.address() as AddressInfo;
    return `${a.family === "IPv6" ? `[${a.address}]` : a.address}:${a.port}`;
  }

  async close(): Promise<void> {
    const server = this.server;
    if (server === undefined) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
