/**
 * Jobs in SQLite: the state machine with reason/message/since on every transition, a job-level
 * monotonic event `seq`, and ownership (which control-plane process runs a job) so a job left by a
 * dead process is found and resumed exactly once. State is written before it is acted on.
 */

import { randomUUID } from "node:crypto";
import type { Db } from "../store/database.js";
import { canTransition, isTerminal, type JobState } from "./state-machine.js";

/** A stored job. */
export interface Job {
  readonly id: string;
  readonly kind: "calibrate" | "evaluate";
  readonly name: string;
  readonly requestId: string | null;
  readonly state: JobState;
  readonly reason: string;
  readonly message: string;
  readonly since: string;
  readonly spec: Record<string, unknown>;
  readonly attempts: number;
  readonly ownerPid: number | null;
  readonly variantId: string | null;
  readonly result: Record<string, unknown> | null;
  readonly createdAt: string;
}

/** One stored event of a job. */
export interface JobEventRecord {
  readonly jobId: string;
  readonly seq: number;
  readonly time: string;
  readonly type: string;
  readonly data: Record<string, unknown>;
}

interface JobRow {
  id: string;
  kind: string;
  name: string;
  request_id: string | null;
  state: string;
  reason: string;
  message: string;
  since: string;
  spec: string;
  attempts: number;
  owner_pid: number | null;
  variant_id: string | null;
  result: string | null;
  created_at: string;
}

function toJob(row: JobRow): Job {
  return {
    id: row.id,
    kind: row.kind as Job["kind"],
    name: row.name,
    requestId: row.request_id,
    state: row.state as JobState,
    reason: row.reason,
    message: row.message,
    since: row.since,
    spec: JSON.parse(row.spec) as Record<string, unknown>,
    attempts: row.attempts,
    ownerPid: row.owner_pid,
    variantId: row.variant_id,
    result: row.result === null ? null : (JSON.parse(row.result) as Record<string, unknown>),
    createdAt: row.created_at,
  };
}

/** A transition that the state machine does not allow (a bug, or a race lost to another process). */
export class TransitionError extends Error {}

/** Whether a process id is alive (signal 0 probes without signalling). */
export function isAlive(pid: number | null): boolean {
  if (pid === null) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Job storage over one database. */
export class JobStore {
  constructor(private readonly db: Db) {}

  /** Create a QUEUED job; with a `requestId` seen before, the existing job instead. */
  create(input: {
    kind: Job["kind"];
    name: string;
    /** The spec, or a function of the new job's id (e.g. to name its output folder). */
    spec: Record<string, unknown> | ((id: string) => Record<string, unknown>);
    requestId?: string;
  }): { job: Job; created: boolean } {
    return this.db
      .transaction(() => {
        if (input.requestId !== undefined) {
          const existing = this.db
            .prepare<[string], JobRow>("SELECT * FROM jobs WHERE request_id = ?")
            .get(input.requestId);
          if (existing) return { job: toJob(existing), created: false };
        }
        const id = `${input.kind === "calibrate" ? "cal" : "eval"}-${input.name}-${randomUUID().slice(0, 8)}`;
        const now = new Date().toISOString();
        this.db
          .prepare(
            `INSERT INTO jobs (id, kind, name, request_id, state, reason, message, since, spec, created_at)
             VALUES (?, ?, ?, ?, 'QUEUED', 'Submitted', '', ?, ?, ?)`,
          )
          .run(
            id,
            input.kind,
            input.name,
            input.requestId ?? null,
            now,
            JSON.stringify(typeof input.spec === "function" ? input.spec(id) : input.spec),
            now,
          );
        this.appendEventTx(id, "state", { state: "QUEUED", reason: "Submitted", message: "" });
        return { job: this.mustGet(id), created: true };
      })
      .immediate();
  }

  /** The job with this id (or unique id prefix). */
  get(idOrPrefix: string): Job | undefined {
    const exact = this.db
      .prepare<[string], JobRow>("SELECT * FROM jobs WHERE id = ?")
      .get(idOrPrefix);
    if (exact) return toJob(exact);
    const rows = this.db
      .prepare<[string], JobRow>("SELECT * FROM jobs WHERE id LIKE ? || '%' LIMIT 2")
      .all(idOrPrefix);
    return rows.length === 1 && rows[0] ? toJob(rows[0]) : undefined;
  }

  private mustGet(id: string): Job {
    const job = this.get(id);
    if (!job) throw new Error(`job ${id} does not exist`);
    return job;
  }

  /** Every job, newest first. */
  list(): Job[] {
    return this.db
      .prepare<[], JobRow>("SELECT * FROM jobs ORDER BY created_at DESC, id")
      .all()
      .map(toJob);
  }

  /** Move a job to `to`, recording reason, message and time; other fields may change with it. */
  transition(
    id: string,
    to: JobState,
    reason: string,
    message = "",
    extra: { variantId?: string; result?: Record<string, unknown> } = {},
  ): Job {
    return this.db
      .transaction(() => {
        const job = this.mustGet(id);
        if (!canTransition(job.state, to)) {
          throw new TransitionError(`job ${id}: cannot go from ${job.state} to ${to} (${reason})`);
        }
        const now = new Date().toISOString();
        this.db
          .prepare(
            `UPDATE jobs SET state = ?, reason = ?, message = ?, since = ?,
               variant_id = COALESCE(?, variant_id), result = COALESCE(?, result),
               owner_pid = CASE WHEN ? THEN NULL ELSE owner_pid END
             WHERE id = ?`,
          )
          .run(
            to,
            reason,
            message,
            now,
            extra.variantId ?? null,
            extra.result === undefined ? null : JSON.stringify(extra.result),
            isTerminal(to) ? 1 : 0,
            id,
          );
        this.appendEventTx(id, "state", { state: to, reason, message });
        return this.mustGet(id);
      })
      .immediate();
  }

  /**
   * Take ownership of a job for this process: succeeds when nobody owns it or its owner is dead
   * (a crashed control plane). Returns the job, or undefined when it is terminal or owned by a live
   * process.
   */
  claim(id: string, pid = process.pid): Job | undefined {
    return this.db
      .transaction(() => {
        const job = this.get(id);
        if (!job || isTerminal(job.state)) return undefined;
        if (job.ownerPid !== null && job.ownerPid !== pid && isAlive(job.ownerPid))
          return undefined;
        this.db.prepare("UPDATE jobs SET owner_pid = ? WHERE id = ?").run(pid, job.id);
        return this.mustGet(job.id);
      })
      .immediate();
  }

  /** Give up ownership (the command ends while the job is not terminal, e.g. after --timeout). */
  release(id: string, pid = process.pid): void {
    this.db.prepare("UPDATE jobs SET owner_pid = NULL WHERE id = ? AND owner_pid = ?").run(id, pid);
  }

  /** Jobs not terminal whose owner is gone: what a restarted control plane must resume. */
  orphans(): Job[] {
    return this.list().filter(
      (job) => !isTerminal(job.state) && !(job.ownerPid !== null && isAlive(job.ownerPid)),
    );
  }

  /** Count one more worker call for the job (persisted before the call is made); returns the count. */
  beginAttempt(id: string): number {
    this.db.prepare("UPDATE jobs SET attempts = attempts + 1 WHERE id = ?").run(id);
    return this.mustGet(id).attempts;
  }

  /** Append an event with the next job-level seq. */
  appendEvent(id: string, type: string, data: Record<string, unknown>): number {
    return this.db.transaction(() => this.appendEventTx(id, type, data)).immediate();
  }

  private appendEventTx(id: string, type: string, data: Record<string, unknown>): number {
    const row = this.db
      .prepare<[string], { seq: number | null }>(
        "SELECT MAX(seq) AS seq FROM job_events WHERE job_id = ?",
      )
      .get(id);
    const seq = (row?.seq ?? 0) + 1;
    this.db
      .prepare("INSERT INTO job_events (job_id, seq, time, type, data) VALUES (?, ?, ?, ?, ?)")
      .run(id, seq, new Date().toISOString(), type, JSON.stringify(data));
    return seq;
  }

  /** Events after `sinceSeq`, in order. */
  events(id: string, sinceSeq = 0): JobEventRecord[] {
    return this.db
      .prepare<
        [string, number],
        { job_id: string; seq: number; time: string; type: string; data: string }
      >("SELECT * FROM job_events WHERE job_id = ? AND seq > ? ORDER BY seq")
      .all(id, sinceSeq)
      .map((r) => ({
        jobId: r.job_id,
        seq: r.seq,
        time: r.time,
        type: r.type,
        data: JSON.parse(r.data) as Record<string, unknown>,
      }));
  }
}
