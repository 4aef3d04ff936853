/**
 * The CLI against a real `python -m tardis.worker` process (started and supervised by the CLI):
 * a job reaches SUCCEEDED and registers its variant; Ctrl-C cancels the job on the worker; a
 * control plane killed mid-job is resumed by the next one and finishes the job exactly once.
 */

import { existsSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it, vi } from "vitest";
import { REPO_ROOT, Sandbox, tinyJobYaml } from "./cli-harness.js";

// A worker start (torch import) plus a tiny calibration: tens of seconds on two shared cores.
vi.setConfig({ testTimeout: 240_000 });

if (!existsSync(join(REPO_ROOT, ".venv", "bin", "python"))) {
  throw new Error(
    "these tests run the Python worker from <repo>/.venv: run bash scripts/setup.sh first",
  );
}

const sandbox = new Sandbox();
afterAll(() => sandbox.cleanup());

interface JobRow {
  id: string;
  state: string;
  reason: string;
  attempts: number;
  variant_id: string | null;
}

interface EventRow {
  seq: number;
  type: string;
  data: string;
}

function events(jobId: string): { seq: number; type: string; data: Record<string, unknown> }[] {
  return sandbox
    .query<EventRow>("SELECT seq, type, data FROM job_events WHERE job_id = ? ORDER BY seq", jobId)
    .map((e) => ({
      seq: e.seq,
      type: e.type,
      data: JSON.parse(e.data) as Record<string, unknown>,
    }));
}

function jobNamed(name: string): JobRow {
  const [job] = sandbox.query<JobRow>("SELECT * FROM jobs WHERE name = ?", name);
  if (!job) throw new Error(`no job named ${name}`);
  return job;
}

function workerPids(): number[] {
  return sandbox.query<{ pid: number }>("SELECT pid FROM workers").map((w) => w.pid);
}

describe("tardis calibrate against a real worker", () => {
  it("a job submitted through the CLI reaches SUCCEEDED and its variant is listed with metrics", async () => {
    const file = sandbox.write(
      "ok.yaml",
      tinyJobYaml({ name: "ok", calibTokens: 1024, batchSize: 8 }),
    );
    const r = await sandbox.run(["calibrate", "-f", file, "-o", "json"]);
    expect(r.code, r.stderr).toBe(0);
    const summary = JSON.parse(r.stdout) as { job: string; state: string; variant: string };
    expect(summary.state).toBe("SUCCEEDED");

    const job = jobNamed("ok");
    expect(job).toMatchObject({
      id: summary.job,
      state: "SUCCEEDED",
      attempts: 1,
      variant_id: summary.variant,
    });
    const history = events(job.id);
    expect(history.map((e) => e.seq)).toEqual(history.map((_, i) => i + 1));
    const states = history.filter((e) => e.type === "state").map((e) => e.data.state);
    expect(states).toEqual(["QUEUED", "RUNNING", "SUCCEEDED"]);
    expect(history.filter((e) => e.type === "layer")).toHaveLength(6); // tardis-tiny-gpt2 has 6 FFNs

    const ls = await sandbox.run(["variants", "ls", "-o", "json"]);
    expect(ls.code).toBe(0);
    const variants = JSON.parse(ls.stdout) as {
      id: string;
      jobId: string;
      family: string;
      path: string;
      metrics: Record<string, number>;
    }[];
    expect(variants).toHaveLength(1);
    const [v] = variants;
    expect(v).toMatchObject({ id: summary.variant, jobId: job.id, family: "gpt2" });
    expect(v?.id).toMatch(/^[0-9a-f]{64}$/);
    expect(existsSync(join(v?.path ?? "", "manifest.json"))).toBe(true);
    expect(v?.metrics.ffnReductionPaper).toBeGreaterThan(0);
    expect(v?.metrics.measuredFallbackRate).toBeGreaterThan(0);
    expect(v?.metrics.measuredFallbackRate).toBeLessThan(1);
    expect(v?.metrics.predictorRecallMean).toBeGreaterThan(0.9);
    expect(workerPids()).toEqual([]); // the command's worker was stopped with it
  });

  it("Ctrl-C on calibrate cancels the job on the worker and exits 130", async () => {
    const file = sandbox.write(
      "sigint.yaml",
      tinyJobYaml({ name: "sigint", calibTokens: 16384, batchSize: 1 }),
    );
    const cli = sandbox.spawn(["calibrate", "-f", file]);
    await sandbox.waitFor(
      "SELECT j.id FROM jobs j JOIN job_events e ON e.job_id = j.id WHERE j.name = ? AND e.type = 'progress' AND json_extract(e.data, '$.phase') != 'load'",
      ["sigint"],
      120_000,
    );
    const [worker] = workerPids();
    cli.child.kill("SIGINT");
    const r = await cli.done;
    expect(r.code, r.stderr).toBe(130);
    expect(r.stderr).toContain("cancelling the job on the worker");

    const job = jobNamed("sigint");
    expect(job.state).toBe("CANCELLED");
    const history = events(job.id);
    const states = history.filter((e) => e.type === "state").map((e) => e.data.state);
    expect(states).toEqual(["QUEUED", "RUNNING", "CANCELLING", "CANCELLED"]);
    // The `cancelled` event comes from the worker: it stopped the job, not just the CLI.
    const cancelled = history.filter((e) => e.type === "cancelled");
    expect(cancelled).toHaveLength(1);
    expect(String(cancelled[0]?.data.reason)).toContain("SIGINT");
    expect(workerPids()).toEqual([]);
    expect(worker === undefined || !isAlive(worker)).toBe(true);
  });

  it("a control plane killed mid-job is resumed by the next one and finishes the job exactly once", async () => {
    const file = sandbox.write(
      "crash.yaml",
      tinyJobYaml({ name: "crash", calibTokens: 1536, batchSize: 2 }),
    );
    const cli = sandbox.spawn(["calibrate", "-f", file]);
    // Kill once the first passes are checkpointed. (Each job here calibrates on a different number
    // of tokens: identical settings would give an identical artifact, hence the same variant id.)
    await sandbox.waitFor(
      "SELECT j.id FROM jobs j JOIN job_events e ON e.job_id = j.id WHERE j.name = ? AND e.type = 'progress' AND json_extract(e.data, '$.phase') = 'histograms'",
      ["crash"],
      180_000,
    );
    cli.child.kill("SIGKILL");
    const killed = await cli.done;
    expect(killed.signal).toBe("SIGKILL");
    const orphan = jobNamed("crash");
    expect(orphan.state).toBe("RUNNING");

    const resumed = await sandbox.run(["jobs", "resume", "-o", "json"]);
    expect(resumed.code, resumed.stderr).toBe(0);

    const job = jobNamed("crash");
    expect(job).toMatchObject({ state: "SUCCEEDED", attempts: 2 });
    const history = events(job.id);
    expect(history.map((e) => e.seq)).toEqual(history.map((_, i) => i + 1));
    const states = history
      .filter((e) => e.type === "state")
      .map((e) => `${e.data.state}/${e.data.reason}`);
    expect(states).toEqual([
      "QUEUED/Submitted",
      "RUNNING/Started",
      "RUNNING/Resumed",
      "SUCCEEDED/Completed",
    ]);
    const started = history.filter((e) => e.type === "started");
    expect(started.map((e) => e.data.resumed)).toEqual([false, true]);
    // Passes finished before the kill were restored from the worker's checkpoints, not run again.
    const phases = (attempt: number): Set<unknown> =>
      new Set(
        history
          .filter((e) => e.type === "progress" && e.data.attempt === attempt)
          .map((e) => e.data.phase),
      );
    expect(phases(1)).toContain("moments");
    expect(phases(2)).not.toContain("moments");
    expect(phases(2)).toContain("heldout");
    expect(history.filter((e) => e.type === "completed")).toHaveLength(1);
    const variants = sandbox.query<{ id: string }>(
      "SELECT id FROM variants WHERE job_id = ?",
      job.id,
    );
    expect(variants).toEqual([{ id: job.variant_id }]);
    expect(workerPids()).toEqual([]); // the dead control plane's worker was shut down too
  });

  it("a worker killed mid-job is restarted by the supervisor and the job resumes from its checkpoints", async () => {
    const file = sandbox.write(
      "worker-crash.yaml",
      tinyJobYaml({ name: "worker-crash", calibTokens: 1280, batchSize: 2 }),
    );
    const cli = sandbox.spawn(["calibrate", "-f", file, "-o", "json"]);
    await sandbox.waitFor(
      "SELECT j.id FROM jobs j JOIN job_events e ON e.job_id = j.id WHERE j.name = ? AND e.type = 'progress' AND json_extract(e.data, '$.phase') = 'histograms'",
      ["worker-crash"],
      180_000,
    );
    const [first] = workerPids();
    expect(first).toBeDefined();
    process.kill(-(first as number), "SIGKILL");
    const r = await cli.done;
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain("worker exited");

    const job = jobNamed("worker-crash");
    expect(job).toMatchObject({ state: "SUCCEEDED", attempts: 2 });
    const history = events(job.id);
    const started = history.filter((e) => e.type === "started");
    expect(started.map((e) => e.data.resumed)).toEqual([false, true]);
    expect(history.filter((e) => e.type === "completed")).toHaveLength(1);
    expect(sandbox.query("SELECT id FROM variants WHERE job_id = ?", job.id)).toHaveLength(1);
    expect(isAlive(first as number)).toBe(false);
    expect(workerPids()).toEqual([]);
  });
});

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
