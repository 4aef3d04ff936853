/** The job store and variant registry on a real SQLite file: transitions, seq, ownership, idempotence. */

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { JobStore, TransitionError } from "../../control-plane/src/jobs/job-store.js";
import { canTransition, JOB_STATES } from "../../control-plane/src/jobs/state-machine.js";
import { type Db, openDatabase } from "../../control-plane/src/store/database.js";
import { VariantRegistry } from "../../control-plane/src/variants/registry.js";

let dir: string;
let db: Db;
let jobs: JobStore;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "tardis-store-"));
  db = openDatabase(join(dir, "tardis.db"));
  jobs = new JobStore(db);
});
afterEach(() => {
  db.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("job store", () => {
  it("walks QUEUED → RUNNING → CANCELLING → CANCELLED with reason, message and a gapless seq", () => {
    const { job } = jobs.create({
      kind: "calibrate",
      name: "a",
      spec: (id) => ({ out: `/v/${id}` }),
    });
    expect(job).toMatchObject({
      state: "QUEUED",
      reason: "Submitted",
      spec: { out: `/v/${job.id}` },
    });
    jobs.appendEvent(job.id, "progress", { step: 1 });
    jobs.transition(job.id, "RUNNING", "Started");
    jobs.transition(job.id, "CANCELLING", "CancelRequested", "Ctrl-C");
    const done = jobs.transition(job.id, "CANCELLED", "Cancelled", "Ctrl-C");
    expect(done).toMatchObject({
      state: "CANCELLED",
      reason: "Cancelled",
      message: "Ctrl-C",
      ownerPid: null,
    });
    const events = jobs.events(job.id);
    expect(events.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(events.map((e) => e.type)).toEqual(["state", "progress", "state", "state", "state"]);
    expect(jobs.events(job.id, 3).map((e) => e.seq)).toEqual([4, 5]);
  });

  it("refuses transitions out of terminal states and skips of RUNNING", () => {
    const { job } = jobs.create({ kind: "calibrate", name: "b", spec: {} });
    expect(() => jobs.transition(job.id, "SUCCEEDED", "Completed")).toThrow(TransitionError);
    jobs.transition(job.id, "RUNNING", "Started");
    jobs.transition(job.id, "FAILED", "INTERNAL", "boom");
    expect(() => jobs.transition(job.id, "RUNNING", "Resumed")).toThrow(TransitionError);
    for (const to of JOB_STATES) expect(canTransition("FAILED", to)).toBe(false);
    expect(jobs.get(job.id)?.state).toBe("FAILED");
  });

  it("returns the first job for a repeated request id", () => {
    const first = jobs.create({ kind: "calibrate", name: "c", spec: {}, requestId: "r-1" });
    const again = jobs.create({ kind: "calibrate", name: "c", spec: {}, requestId: "r-1" });
    expect(first.created).toBe(true);
    expect(again).toMatchObject({ created: false, job: { id: first.job.id } });
    expect(jobs.list()).toHaveLength(1);
  });

  it("lets one live process own a job; a dead owner's job is an orphan anyone may claim", () => {
    const { job } = jobs.create({ kind: "calibrate", name: "d", spec: {} });
    expect(jobs.claim(job.id, process.pid)?.ownerPid).toBe(process.pid);
    expect(jobs.claim(job.id, process.ppid)).toBeUndefined(); // owned by a live process
    expect(jobs.orphans()).toEqual([]);
    db.prepare("UPDATE jobs SET owner_pid = ? WHERE id = ?").run(2 ** 22 + 12345, job.id); // no such pid
    expect(jobs.orphans().map((j) => j.id)).toEqual([job.id]);
    expect(jobs.claim(job.id, process.ppid)?.ownerPid).toBe(process.ppid);
  });
});

describe("variant registry", () => {
  it("registers a content hash once, keeps lineage, and merges evaluation metrics", () => {
    const variants = new VariantRegistry(db);
    const v = {
      id: "ab".repeat(32),
      name: "tiny",
      jobId: "cal-tiny-1",
      path: "/v/1",
      basePath: "/m",
      family: "gpt2",
      method: { coverage: 0.9 },
      metrics: { ffnReductionPaper: 0.8 },
    };
    expect(variants.register(v).created).toBe(true);
    expect(variants.register({ ...v, jobId: "cal-tiny-2" })).toMatchObject({
      created: false,
      variant: { jobId: "cal-tiny-1" },
    });
    const evaluated = variants.recordEvaluation(v.id, { perplexityRatio: 1.1 }, [
      { name: "dense" },
    ]);
    expect(evaluated.metrics).toEqual({ ffnReductionPaper: 0.8, perplexityRatio: 1.1 });
    expect(variants.get("abab")?.id).toBe(v.id);
    expect(variants.get("tiny")?.id).toBe(v.id);
    expect(variants.remove(v.id)).toBe(true);
    expect(variants.list()).toEqual([]);
  });
});
