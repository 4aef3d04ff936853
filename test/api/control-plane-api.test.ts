/**
 * The ControlPlane gRPC API against one real CPU worker (tardis-tiny-gpt2 variants calibrated in
 * setup): a good candidate is promoted, a miscalibrated one is aborted by its gate with traffic
 * back on the baseline, routing matches the weights and is sticky, a `tardis serve` killed
 * mid-rollout resumes in the right step, and auth / malformed specs get the right status codes.
 */

import { existsSync } from "node:fs";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { ApiCallError, ApiClient } from "../../control-plane/src/api/client.js";
import { remoteWorkerMember } from "../../control-plane/src/api/index.js";
import { ControlPlaneServer } from "../../control-plane/src/api/server.js";
import type { Job__Output } from "../../control-plane/src/gen/tardis/v1/Job.js";
import type { JobUpdate__Output } from "../../control-plane/src/gen/tardis/v1/JobUpdate.js";
import type { Rollout__Output } from "../../control-plane/src/gen/tardis/v1/Rollout.js";
import type { RolloutHistory__Output } from "../../control-plane/src/gen/tardis/v1/RolloutHistory.js";
import type { RoutedGenerateChunk__Output } from "../../control-plane/src/gen/tardis/v1/RoutedGenerateChunk.js";
import {
  stickyBucket,
  type TrafficSplit,
  variantForBucket,
} from "../../control-plane/src/router/index.js";
import { type Db, openDatabase } from "../../control-plane/src/store/database.js";
import { protos } from "../../control-plane/src/workers/proto.js";
import type { WorkerSupervisor } from "../../control-plane/src/workers/supervisor.js";
import {
  calibrate,
  type MadeVariant,
  makeTemp,
  REPO_ROOT,
  register,
  removeTemp,
  rolloutYaml,
  runCli,
  startServe,
  startWorker,
  waitFor,
  write,
} from "./harness.js";

vi.setConfig({ testTimeout: 180_000, hookTimeout: 240_000 });

if (!existsSync(join(REPO_ROOT, ".venv", "bin", "python"))) {
  throw new Error("these tests run the Python worker from <repo>/.venv: run bash scripts/setup.sh");
}

const TOKEN = "s3cret-token";
const root = makeTemp();
const home = join(root, "home");
const workerLog: string[] = [];
let worker: WorkerSupervisor;
let base: MadeVariant;
let good: MadeVariant;
let bad: MadeVariant;
let db: Db;
let server: ControlPlaneServer;
let api: ApiClient;

const GATES = [
  "accuracy:",
  "  evalSet: { builtin: lee }",
  "  maxPerplexityRatio: 1.2",
  "  minSamples: 100",
  "fallbackRate:",
  "  envelopeFactor: 3",
];

beforeAll(async () => {
  worker = await startWorker(root, workerLog);
  // Baseline and good candidate: calibrated on the Lee news corpus. The broken candidate is
  // calibrated on one repeated sentence with tight ranges and median margins: on news text its
  // perplexity is ~1.3× the baseline's (gate: ≤ 1.2×; the good candidate is ~0.95×), and its live
  // fallback rate on real prompts is ~4× the small rate its calibration measured (gate: ≤ 3×; the
  // good candidate is ~1.1×).
  const repeated = write(
    root,
    "repeated.txt",
    `${"the cat sat on the mat. ".repeat(300)}\n`.repeat(3),
  );
  base = await calibrate(worker, root, "base", { builtin: "lee" }, { coverage: 0.9 });
  good = await calibrate(worker, root, "good", { builtin: "lee" }, { coverage: 0.85 });
  bad = await calibrate(
    worker,
    root,
    "bad",
    { path: repeated },
    { coverage: 0.999, marginPolicy: "quantile", marginQuantile: 0.5 },
  );
  register(home, [base, good, bad]);
  db = openDatabase(join(home, "tardis.db"));
  server = new ControlPlaneServer({
    db,
    home,
    workers: [remoteWorkerMember("w0", worker.client().address)],
    listen: "127.0.0.1:0",
    token: TOKEN,
    metricsListen: "127.0.0.1:0",
    accuracy: { maxTokens: 256 },
  });
  await server.start();
  api = new ApiClient({ address: server.address, token: TOKEN });
});

afterAll(async () => {
  api?.close();
  await server?.stop(1_000);
  db?.close();
  await worker?.stop();
  removeTemp(root);
});

function phase(r: Rollout__Output): string {
  return String(r.phase).replace("ROLLOUT_PHASE_", "");
}

function status(name: string): Promise<Rollout__Output> {
  return api.call<Rollout__Output>("getRollout", { name });
}

function waitPhase(name: string, want: string, step?: number, timeoutMs = 120_000) {
  return waitFor(
    `${name} ${want}${step === undefined ? "" : ` at step ${step}`}`,
    async () => {
      const r = await status(name);
      if (phase(r) === want && (step === undefined || r.step === step)) return r;
      if (phase(r) !== want && ["ABORTED", "DEGRADED"].includes(phase(r)) && want !== phase(r)) {
        throw new Error(`${name} is ${phase(r)}: ${r.reason} ${r.message}`);
      }
      return undefined;
    },
    timeoutMs,
  );
}

/** One routed Generate: its chunks (first carries variant, worker, revision). */
function generate(
  request: Record<string, unknown>,
  client: ApiClient = api,
  deadlineMs = 60_000,
): Promise<RoutedGenerateChunk__Output[]> {
  return new Promise((resolve, reject) => {
    const call = client.raw.generate(request, client.metadata(), {
      deadline: Date.now() + deadlineMs,
    });
    const chunks: RoutedGenerateChunk__Output[] = [];
    call.on("data", (c: RoutedGenerateChunk__Output) => chunks.push(c));
    call.on("error", reject);
    call.on("end", () => resolve(chunks));
  });
}

/** Sessions the current split sends to `variant` (ask the router; it is deterministic). */
function sessionsFor(rollout: string, variant: string, n: number): string[] {
  const out: string[] = [];
  for (let i = 0; out.length < n && i < 10_000; i++) {
    const route = server.router.route({ rollout, sessionId: `${rollout}-s${i}` });
    route.release();
    if (route.variant === variant) out.push(`${rollout}-s${i}`);
  }
  return out;
}

describe("ControlPlane API", () => {
  it("rejects calls without the right bearer token (UNAUTHENTICATED); health needs none", async () => {
    const anonymous = new ApiClient({ address: server.address });
    const wrong = new ApiClient({ address: server.address, token: "nope" });
    try {
      for (const client of [anonymous, wrong]) {
        const error = await client.call("listRollouts", {}).catch((e: unknown) => e);
        expect(error).toBeInstanceOf(ApiCallError);
        expect((error as ApiCallError).code).toBe("UNAUTHENTICATED");
        const gen = await generate({ prompt: "x" }, client).catch((e: unknown) => e);
        expect((gen as grpc.ServiceError).code).toBe(grpc.status.UNAUTHENTICATED);
      }
      const health = new (protos().grpc.health.v1.Health)(
        server.address,
        grpc.credentials.createInsecure(),
      );
      const reply = await new Promise<{ status: string }>((resolve, reject) =>
        health.check({ service: "tardis.v1.ControlPlane" }, (e, r) =>
          e ? reject(e) : resolve(r as { status: string }),
        ),
      );
      health.close();
      expect(reply.status).toBe("SERVING");
    } finally {
      anonymous.close();
      wrong.close();
    }
  });

  it("answers a malformed rollout spec with INVALID_ARGUMENT naming the field", async () => {
    const yaml = rolloutYaml("broken", base.id, good.id, ["setWeight: 10", "setWeight: fifty"]);
    const error = (await api
      .call("applyRollout", { specYaml: yaml })
      .catch((e: unknown) => e)) as ApiCallError;
    expect(error.code).toBe("INVALID_ARGUMENT");
    expect(error.details).toContain("spec.steps[1].setWeight");
    expect(error.violations[0]?.field).toBe("spec.steps[1].setWeight");
    expect(error.violations[0]?.description).toMatch(/^<spec_yaml>:\d+:\d+: expected a number/);

    const unknown = rolloutYaml("ghost", base.id, "no-such-variant", ["setWeight: 10"]);
    const missing = (await api
      .call("applyRollout", { specYaml: unknown })
      .catch((e: unknown) => e)) as ApiCallError;
    expect(missing.code).toBe("NOT_FOUND");
    expect(missing.violations[0]?.field).toBe("spec.candidate");
    const none = (await status("ghost").catch((e: unknown) => e)) as ApiCallError;
    expect(none.code).toBe("NOT_FOUND");
  });

  it("promotes a good candidate; 1,000 routing decisions match the weight, sessions are sticky", async () => {
    const yaml = rolloutYaml(
      "good",
      base.id,
      good.id,
      [
        "setWeight: 30",
        "pause: {}",
        "analysis: { gates: [accuracy, fallbackRate], count: 1, interval: 1s }",
        "setWeight: 100",
      ],
      GATES,
    );
    const applied = await api.call<{ rollout: Rollout__Output; newRevision: boolean }>(
      "applyRollout",
      { specYaml: yaml },
    );
    expect(applied.newRevision).toBe(true);
    const paused = await waitPhase("good", "PAUSED", 1);
    expect(paused.weight).toBe(30);
    expect(paused.appliedWeight).toBe(30);

    // 1,000 sessions: each goes where its sticky bucket falls in the split in force (the candidate owns the
    // top 30 buckets), and the candidate's share is the weight ± 6 points. The buckets hash the revision, which
    // hashes this run's variant ids, so the share varies from run to run (binomial: σ ≈ 1.45 points).
    const split = server.router.split("good");
    expect(split?.weights.map((w) => w.weight)).toEqual([70, 30]);
    let candidate = 0;
    let expected = 0;
    const first = new Map<string, string>();
    for (let i = 0; i < 1000; i++) {
      const route = server.router.route({ rollout: "good", sessionId: `user-${i}` });
      route.release();
      first.set(`user-${i}`, route.variant);
      if (route.variant === good.id) candidate++;
      const want = variantForBucket(
        split as TrafficSplit,
        stickyBucket(split?.revision ?? "", `user-${i}`),
      );
      expect(route.variant).toBe(want);
      if (want === good.id) expected++;
    }
    expect(candidate).toBe(expected);
    expect(Math.abs(candidate / 10 - 30)).toBeLessThanOrEqual(6);
    // The same session always reaches the same variant within the step.
    for (let i = 0; i < 1000; i += 7) {
      const route = server.router.route({ rollout: "good", sessionId: `user-${i}` });
      route.release();
      expect(route.variant).toBe(first.get(`user-${i}`));
    }

    // Real routed requests through the API: sticky, streamed from the worker, and they give the
    // candidate live fallback counters for its gate.
    const sessions = [...sessionsFor("good", good.id, 2), ...sessionsFor("good", base.id, 1)];
    for (const [index, session] of sessions.entries()) {
      const seen = new Set<string>();
      for (let k = 0; k < 2; k++) {
        const chunks = await generate({
          rollout: "good",
          sessionId: session,
          prompt: "The government said on Tuesday that",
          maxNewTokens: 8,
        });
        expect(chunks.length).toBeGreaterThan(1);
        expect(chunks[0]?.revision).toBe(paused.revision);
        expect(chunks.at(-1)?.chunk?.finishReason).not.toBe("");
        seen.add(chunks[0]?.variantId ?? "");
      }
      expect([...seen]).toEqual([index < 2 ? good.id : base.id]);
    }

    // A deadline reaches the worker call.
    const late = (await generate(
      { rollout: "good", sessionId: sessions[0], prompt: "Once", maxNewTokens: 2000 },
      api,
      300,
    ).catch((e: unknown) => e)) as grpc.ServiceError;
    expect(late.code).toBe(grpc.status.DEADLINE_EXCEEDED);

    await api.call("resumeRollout", { name: "good" });
    const promoted = await waitPhase("good", "PROMOTED");
    expect(promoted.weight).toBe(100);
    expect(server.router.split("good")?.weights).toEqual([
      { variant: base.id, weight: 0 },
      { variant: good.id, weight: 100 },
    ]);
    const history = await api.call<RolloutHistory__Output>("getRolloutHistory", { name: "good" });
    const accuracy = history.decisions.find((d) => d.gate === "accuracy");
    expect(accuracy?.outcome).toBe("GATE_OUTCOME_SUCCESSFUL");
    expect(accuracy?.measured.perplexityRatio).toBeGreaterThan(0);
    expect(accuracy?.measured.samples).toBeGreaterThanOrEqual(100);
    const fallback = history.decisions.find((d) => d.gate === "fallbackRate");
    expect(fallback?.outcome).toBe("GATE_OUTCOME_SUCCESSFUL");
    expect(fallback?.layers.length).toBeGreaterThan(0);
    expect(history.revisions[0]?.promotedAt).not.toBeNull();

    const metrics = await (await fetch(`http://${server.metricsAddress}/metrics`)).text();
    expect(metrics).toContain('tardis_rollout_phase{rollout="good",phase="PROMOTED"} 1');
    expect(metrics).toContain(`tardis_generate_requests_total{variant="${good.id}",outcome="ok"}`);
    expect(metrics).toMatch(
      /tardis_rollout_gate_results_total\{rollout="good",gate="accuracy",outcome="successful"\} 1/,
    );
  });

  it("aborts a broken candidate by its accuracy and fallback gates: traffic back on the baseline, values logged", async () => {
    // Referenced by name and id prefix: the API pins the full ids in the revision.
    const yaml = rolloutYaml(
      "bad",
      "base",
      bad.id.slice(0, 12),
      ["setWeight: 50", "pause: {}", "analysis: { count: 1, interval: 1s }", "setWeight: 100"],
      GATES,
    );
    const applied = await api.call<{ rollout: Rollout__Output }>("applyRollout", {
      specYaml: yaml,
    });
    expect(applied.rollout).toMatchObject({ baseline: base.id, candidate: bad.id });
    await waitPhase("bad", "PAUSED", 1);
    for (const session of sessionsFor("bad", bad.id, 3)) {
      const chunks = await generate({
        rollout: "bad",
        sessionId: session,
        prompt: "Shares of the bank fell sharply after the report",
        maxNewTokens: 12,
      });
      expect(chunks[0]?.variantId).toBe(bad.id);
    }
    await api.call("resumeRollout", { name: "bad" });
    const aborted = await waitPhase("bad", "ABORTED");
    expect(aborted.reason).toBe("GateFailed");
    expect(aborted.weight).toBe(0);
    expect(server.router.split("bad")?.weights).toEqual([
      { variant: base.id, weight: 100 },
      { variant: bad.id, weight: 0 },
    ]);
    // Every session is back on the baseline.
    for (const session of sessionsFor("bad", base.id, 1).concat(["bad-s0", "bad-s1", "bad-s2"])) {
      const chunks = await generate({
        rollout: "bad",
        sessionId: session,
        prompt: "Hi",
        maxNewTokens: 2,
      });
      expect(chunks[0]?.variantId).toBe(base.id);
    }
    const history = await api.call<RolloutHistory__Output>("getRolloutHistory", { name: "bad" });
    const fallback = history.decisions.find((d) => d.gate === "fallbackRate");
    expect(fallback?.outcome).toBe("GATE_OUTCOME_FAILED");
    expect(fallback?.measured.worstRatio).toBeGreaterThan(3);
    expect(fallback?.thresholds.envelopeFactor).toBe(3);
    expect(fallback?.layers.some((l) => !l.withinEnvelope)).toBe(true);
    const accuracy = history.decisions.find((d) => d.gate === "accuracy");
    expect(accuracy?.outcome).toBe("GATE_OUTCOME_FAILED");
    expect(accuracy?.measured.perplexityRatio).toBeGreaterThan(1.2);
    expect(accuracy?.measured.candidatePerplexity).toBeGreaterThan(
      accuracy?.measured.baselinePerplexity ?? Infinity,
    );
    expect(accuracy?.thresholds.maxPerplexityRatio).toBe(1.2);
    expect(history.entries.at(-1)?.reason).toBe("GateFailed");
  });

  it("a cancelled Generate cancels the worker call and frees its slot", async () => {
    // Counted relative to before: an earlier request of this file may have been cancelled too.
    const cancelledCount = async (): Promise<number> => {
      const text = await (await fetch(`http://${server.metricsAddress}/metrics`)).text();
      const line = `tardis_generate_requests_total{variant="${good.id}",outcome="cancelled"} `;
      const found = text.split("\n").find((l) => l.startsWith(line));
      return found === undefined ? 0 : Number(found.slice(line.length));
    };
    const before = await cancelledCount();
    const started = Date.now();
    const outcome = await new Promise<grpc.ServiceError>((resolve) => {
      const call = api.raw.generate(
        { rollout: "good", sessionId: "cancel-me", prompt: "The", maxNewTokens: 200 },
        api.metadata(),
      );
      call.on("data", () => call.cancel());
      call.on("error", resolve);
    });
    expect(outcome.code).toBe(grpc.status.CANCELLED);
    await waitFor(
      "the route to be released",
      () => (server.router.inFlight("w0") === 0 ? true : undefined),
      5_000,
    );
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(await cancelledCount()).toBe(before + 1);
  });

  it("`tardis serve` killed mid-rollout and restarted resumes in the right step", async () => {
    const home2 = join(root, "home2");
    register(home2, [base, good]);
    const deployment = write(
      root,
      "deployment.yaml",
      [
        "apiVersion: tardis/v1",
        "kind: Deployment",
        "metadata: { name: test }",
        "spec:",
        "  api:",
        "    listen: 127.0.0.1:0",
        "    auth: { tokenEnv: TARDIS_API_TOKEN }",
        "  workers:",
        "    - { name: cpu, listen: 127.0.0.1:0 }",
        "",
      ].join("\n"),
    );
    const file = write(
      root,
      "restart.yaml",
      rolloutYaml("restart", base.id, good.id, [
        "setWeight: 20",
        "pause: { duration: 6s }",
        "setWeight: 60",
        "pause: {}",
      ]),
    );
    const address = worker.client().address;
    const first = startServe(home2, address, deployment, TOKEN);
    const firstAddress = await first.address;
    const env = { TARDIS_API_TOKEN: TOKEN };
    const apply = await runCli(
      ["rollout", "apply", "-f", file, "--server", firstAddress, "-o", "json"],
      env,
    );
    expect(apply.code, apply.stderr).toBe(0);
    const client1 = new ApiClient({ address: firstAddress, token: TOKEN });
    const inPause = await waitFor(
      "step 1 (the timed pause)",
      async () => {
        const r = await client1.call<Rollout__Output>("getRollout", { name: "restart" });
        return r.step === 1 && phase(r) === "PAUSED" ? r : undefined;
      },
      60_000,
    );
    client1.close();
    expect(inPause.appliedWeight).toBe(20);
    first.child.kill("SIGKILL");
    await first.exited;

    const second = startServe(home2, address, deployment, TOKEN);
    try {
      const secondAddress = await second.address;
      const client2 = new ApiClient({ address: secondAddress, token: TOKEN });
      try {
        const after = await client2.call<Rollout__Output>("getRollout", { name: "restart" });
        expect(after.revisionNumber).toBe(1);
        expect(after.step).toBeGreaterThanOrEqual(1); // not started over
        // The timed pause keeps its deadline; then step 2 sets 60 % and step 3 waits for resume.
        let seen: Rollout__Output | undefined;
        const resumed = await waitFor(
          "step 3 after the restart",
          async () => {
            const r = await client2.call<Rollout__Output>("getRollout", { name: "restart" });
            seen = r;
            return r.step === 3 && phase(r) === "PAUSED" && r.appliedWeight === 60 ? r : undefined;
          },
          60_000,
        ).catch((error: unknown) => {
          // say where it stood and what the server logged (an intermittent failure must be diagnosable)
          throw new Error(
            `${String(error)}; last seen ${JSON.stringify(seen)}; serve stderr: ${second.stderr().slice(-4000)}`,
          );
        });
        expect(resumed.weight).toBe(60);
        const status = await runCli(
          ["rollout", "status", "restart", "--server", secondAddress, "-o", "json"],
          env,
        );
        expect(status.code, status.stderr).toBe(0);
        expect(JSON.parse(status.stdout)).toMatchObject({ name: "restart", step: 3, weight: 60 });
        const history = await client2.call<RolloutHistory__Output>("getRolloutHistory", {
          name: "restart",
        });
        // Applied once: one history entry with reason Applied, steps never went backwards.
        expect(history.entries.filter((e) => e.reason === "Applied")).toHaveLength(1);
        const steps = history.entries.map((e) => e.step);
        expect(steps).toEqual([...steps].sort((a, b) => a - b));
        // Operator commands through the CLI: promote, abort in the wrong phase, rollback.
        const promote = await runCli(
          ["rollout", "promote", "restart", "--server", secondAddress, "-o", "json"],
          env,
        );
        expect(promote.code, promote.stderr).toBe(0);
        await waitFor(
          "PROMOTED",
          async () => {
            const r = await client2.call<Rollout__Output>("getRollout", { name: "restart" });
            return phase(r) === "PROMOTED" && r.appliedWeight === 100 ? r : undefined;
          },
          30_000,
        );
        const abort = await runCli(["rollout", "abort", "restart", "--server", secondAddress], env);
        expect(abort.code).toBe(1);
        expect(abort.stderr).toContain("FAILED_PRECONDITION");
        const rollback = await runCli(
          ["rollout", "rollback", "restart", "--to", "r1", "--server", secondAddress, "-o", "json"],
          env,
        );
        expect(rollback.code, rollback.stderr).toBe(0);
        const missing = await runCli(
          ["rollout", "rollback", "restart", "--to", "r9", "--server", secondAddress],
          env,
        );
        expect(missing.code).toBe(2);
        const log = await runCli(["rollout", "history", "restart", "--server", secondAddress], env);
        expect(log.code, log.stderr).toBe(0);
        expect(log.stdout).toContain("PROMOTED");
        // apply --wait follows a rollout to PROMOTED (exit 0).
        const quick = write(
          root,
          "quick.yaml",
          rolloutYaml("quick", "base", "good", [
            "setWeight: 50",
            "pause: { duration: 1s }",
            "setWeight: 100",
          ]),
        );
        const waited = await runCli(
          [
            "rollout",
            "apply",
            "-f",
            quick,
            "--wait",
            "--timeout",
            "60",
            "--server",
            secondAddress,
            "-o",
            "json",
          ],
          env,
        );
        expect(waited.code, waited.stderr).toBe(0);
        expect(JSON.parse(waited.stdout)).toMatchObject({
          name: "quick",
          phase: "ROLLOUT_PHASE_PROMOTED",
        });
        const noToken = await runCli(["rollout", "status", "restart", "--server", secondAddress], {
          TARDIS_API_TOKEN: "",
        });
        expect(noToken.code).toBe(1);
        expect(noToken.stderr).toContain("UNAUTHENTICATED");
      } finally {
        client2.close();
      }
    } finally {
      second.child.kill("SIGTERM");
      await second.exited;
    }
  });
  it("runs a calibration job submitted through the API, idempotent on request_id, watchable", async () => {
    const yaml = [
      "apiVersion: tardis/v1",
      "kind: CalibrationJob",
      "metadata: { name: api-job }",
      "spec:",
      `  model: { path: ${join(REPO_ROOT, "models", "tardis-tiny-gpt2")} }`,
      "  dataset: { builtin: lee }",
      "  method: { calibTokens: 256, heldoutTokens: 128, seqLen: 64, batchSize: 4, groupSize: 32, histogramBins: 32 }",
      "",
    ].join("\n");
    const job = await api.call<Job__Output>("submitJob", {
      requestId: "req-1",
      calibrationYaml: yaml,
    });
    const again = await api.call<Job__Output>("submitJob", {
      requestId: "req-1",
      calibrationYaml: yaml,
    });
    expect(again.id).toBe(job.id);
    const states = await new Promise<string[]>((resolve, reject) => {
      const seen: string[] = [];
      const call = api.raw.watchJobs({ jobId: job.id, sinceSeq: "0" }, api.metadata());
      call.on("data", (u: JobUpdate__Output) => {
        const state = String(u.job?.state);
        if (seen.at(-1) !== state) seen.push(state);
        if (["JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"].includes(state)) {
          call.cancel();
          resolve(seen);
        }
      });
      call.on("error", (e: grpc.ServiceError) => {
        if (e.code !== grpc.status.CANCELLED) reject(e);
      });
    });
    expect(states.at(-1)).toBe("JOB_STATE_SUCCEEDED");
    const done = await api.call<Job__Output>("getJob", { jobId: job.id });
    expect(done.variantId).not.toBe("");
    const cancel = (await api
      .call("cancelJob", { jobId: job.id })
      .catch((e: unknown) => e)) as ApiCallError;
    expect(cancel.code).toBe("FAILED_PRECONDITION");
    const malformed = (await api
      .call("submitJob", {
        requestId: "req-2",
        calibrationYaml: "apiVersion: tardis/v1\nkind: CalibrationJob\n",
      })
      .catch((e: unknown) => e)) as ApiCallError;
    expect(malformed.code).toBe("INVALID_ARGUMENT");
    const reused = (await api
      .call("submitJob", {
        requestId: "req-1",
        calibrationYaml: yaml.replace("calibTokens: 256", "calibTokens: 512"),
      })
      .catch((e: unknown) => e)) as ApiCallError;
    expect(reused.code).toBe("ALREADY_EXISTS");

    const evaluation = await api.call<Job__Output>("submitJob", {
      requestId: "req-eval",
      evaluate: { variantId: good.id, dataset: { builtin: "lee" }, maxTokens: "128" },
    });
    expect(evaluation.kind).toBe("evaluate");
    const evaluated = await waitFor(
      "the evaluate job",
      async () => {
        const j = await api.call<Job__Output>("getJob", { jobId: evaluation.id });
        return j.state === "JOB_STATE_SUCCEEDED" || j.state === "JOB_STATE_FAILED" ? j : undefined;
      },
      120_000,
    );
    expect(evaluated.state, evaluated.message).toBe("JOB_STATE_SUCCEEDED");
    expect(evaluated.metrics?.perplexityVariant).toBeGreaterThan(0);
  });
});
