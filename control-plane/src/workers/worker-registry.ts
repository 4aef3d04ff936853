/**
 * Supervised workers recorded in the store, so a control plane that was killed leaves no stray
 * worker behind: the next one finds workers whose owner is dead and shuts them down.
 */

import { isAlive } from "../jobs/job-store.js";
import type { Db } from "../store/database.js";

/** A recorded worker process. */
export interface WorkerRecord {
  readonly pid: number;
  readonly ownerPid: number;
  readonly address: string;
  readonly telemetry: string;
  readonly mode: "ephemeral" | "service";
  readonly startedAt: string;
}

/** Worker records over one database. */
export class WorkerRegistry {
  constructor(private readonly db: Db) {}

  /** Record a started worker. */
  add(w: Omit<WorkerRecord, "startedAt">): void {
    this.db
      .prepare(
        "INSERT OR REPLACE INTO workers (pid, owner_pid, address, telemetry, mode, started_at) VALUES (?, ?, ?, ?, ?, ?)",
      )
      .run(w.pid, w.ownerPid, w.address, w.telemetry, w.mode, new Date().toISOString());
  }

  /** Forget a worker. */
  remove(pid: number): void {
    this.db.prepare("DELETE FROM workers WHERE pid = ?").run(pid);
  }

  /** Recorded workers whose process is alive (dead ones are forgotten on the way). */
  alive(): WorkerRecord[] {
    const rows = this.db
      .prepare<
        [],
        {
          pid: number;
          owner_pid: number;
          address: string;
          telemetry: string;
          mode: string;
          started_at: string;
        }
      >("SELECT * FROM workers")
      .all();
    const out: WorkerRecord[] = [];
    for (const r of rows) {
      if (!isAlive(r.pid)) {
        this.remove(r.pid);
        continue;
      }
      out.push({
        pid: r.pid,
        ownerPid: r.owner_pid,
        address: r.address,
        telemetry: r.telemetry,
        mode: r.mode as WorkerRecord["mode"],
        startedAt: r.started_at,
      });
    }
    return out;
  }
}
