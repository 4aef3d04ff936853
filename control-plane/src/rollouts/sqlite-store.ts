/**
 * {@link RolloutStore} on SQLite (better-sqlite3, WAL). The tables are all named `rollout_*` and
 * migrated through their own `rollout_schema_migrations` table, so they can share the control
 * plane's database file with the job store (which versions itself with `PRAGMA user_version`).
 */

import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import type { GateName } from "../config/index.js";
import type { LayerCheck } from "./gates.js";
import type { MeasurementContext, Phase, RolloutState } from "./machine.js";
import type { RolloutSpec } from "./revision.js";
import {
  type RevisionRecord,
  type RolloutCommit,
  type RolloutStore,
  StaleStateError,
  type StoredDecision,
  type StoredHistoryEntry,
  type StoredRollout,
} from "./store.js";

/** Schema steps, applied in order and recorded in rollout_schema_migrations. Append only. */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE rollout_revisions (
     name        TEXT NOT NULL,
     revision    TEXT NOT NULL,               -- content hash of the spec
     number      INTEGER NOT NULL,
     spec        TEXT NOT NULL,               -- JSON, defaults filled in
     applied_at  INTEGER NOT NULL,            -- ms since the epoch
     promoted_at INTEGER,
     PRIMARY KEY (name, revision),
     UNIQUE (name, number)
   );
   CREATE TABLE rollout_states (
     name       TEXT PRIMARY KEY,
     revision   TEXT NOT NULL,
     phase      TEXT NOT NULL,
     state      TEXT NOT NULL,                -- JSON RolloutState
     version    INTEGER NOT NULL,
     updated_at INTEGER NOT NULL
   );
   CREATE TABLE rollout_history (
     name     TEXT NOT NULL,
     seq      INTEGER NOT NULL,
     at       INTEGER NOT NULL,
     revision TEXT NOT NULL,
     phase    TEXT NOT NULL,
     reason   TEXT NOT NULL,
     message  TEXT NOT NULL,
     step     INTEGER NOT NULL,
     weight   INTEGER NOT NULL,
     PRIMARY KEY (name, seq)
   );
   CREATE TABLE rollout_decisions (
     seq         INTEGER PRIMARY KEY AUTOINCREMENT,
     name        TEXT NOT NULL,
     revision    TEXT NOT NULL,
     at          INTEGER NOT NULL,
     step        INTEGER NOT NULL,
     context     TEXT NOT NULL,               -- analysis | watch
     measurement INTEGER NOT NULL,
     gate        TEXT NOT NULL,
     outcome     TEXT NOT NULL,               -- successful | failed | inconclusive | error
     measured    TEXT NOT NULL,               -- JSON {name: number}; non-finite as strings
     thresholds  TEXT NOT NULL,               -- JSON {name: number}
     message     TEXT NOT NULL,
     layers      TEXT                         -- JSON LayerCheck[] (fallbackRate gate)
   );
   CREATE INDEX rollout_decisions_by_name ON rollout_decisions (name, seq);`,
];

/** The rollout store on an open better-sqlite3 database. */
export class SqliteRolloutStore implements RolloutStore {
  /** Open (creating and migrating) the database file; the store closes it on {@link close}. */
  static open(file: string): SqliteRolloutStore {
    if (file !== ":memory:") mkdirSync(dirname(file), { recursive: true });
    const db = new Database(file);
    db.pragma("journal_mode = WAL");
    db.pragma("busy_timeout = 10000");
    return new SqliteRolloutStore(db, true);
  }

  /** Use a database someone else opened (and closes); the rollout tables are migrated now. */
  constructor(
    readonly db: Database.Database,
    private readonly owned = false,
  ) {
    migrate(db);
  }

  /** Close the database if this store opened it. */
  close(): void {
    if (this.owned) this.db.close();
  }

  putRevision(name: string, revision: string, spec: RolloutSpec, at: number): RevisionRecord {
    return this.db
      .transaction(() => {
        const existing = this.findByHash(name, revision);
        if (existing !== undefined) return existing;
        const row = this.db
          .prepare(
            "SELECT COALESCE(MAX(number), 0) + 1 AS next FROM rollout_revisions WHERE name = ?",
          )
          .get(name) as { next: number };
        this.db
          .prepare(
            "INSERT INTO rollout_revisions (name, revision, number, spec, applied_at) VALUES (?, ?, ?, ?, ?)",
          )
          .run(name, revision, row.next, JSON.stringify(spec), at);
        return { name, revision, number: row.next, spec, appliedAt: at, promotedAt: null };
      })
      .immediate();
  }

  findRevision(name: string, ref: string): RevisionRecord | undefined {
    const number = /^r?(\d+)$/.exec(ref);
    if (number !== null) {
      const row = this.db
        .prepare("SELECT * FROM rollout_revisions WHERE name = ? AND number = ?")
        .get(name, Number(number[1])) as RevisionRow | undefined;
      if (row !== undefined) return toRevision(row);
    }
    const rows = this.db
      .prepare("SELECT * FROM rollout_revisions WHERE name = ? AND revision LIKE ? || '%'")
      .all(name, ref) as RevisionRow[];
    return rows.length === 1 && rows[0] !== undefined ? toRevision(rows[0]) : undefined;
  }

  revisions(name: string): RevisionRecord[] {
    const rows = this.db
      .prepare("SELECT * FROM rollout_revisions WHERE name = ? ORDER BY number")
      .all(name) as RevisionRow[];
    return rows.map(toRevision);
  }

  get(name: string): StoredRollout | undefined {
    const row = this.db
      .prepare("SELECT state, version FROM rollout_states WHERE name = ?")
      .get(name) as { state: string; version: number } | undefined;
    if (row === undefined) return undefined;
    return { state: JSON.parse(row.state) as RolloutState, version: row.version };
  }

  names(): string[] {
    const rows = this.db.prepare("SELECT name FROM rollout_states ORDER BY name").all() as {
      name: string;
    }[];
    return rows.map((row) => row.name);
  }

  commit(change: RolloutCommit): number {
    const { state } = change;
    return this.db
      .transaction(() => {
        const current = this.db
          .prepare("SELECT version FROM rollout_states WHERE name = ?")
          .get(state.name) as { version: number } | undefined;
        if ((current?.version ?? null) !== change.expectedVersion) {
          throw new StaleStateError(
            `rollout ${state.name} changed since it was read (version ${current?.version ?? "none"}, expected ${change.expectedVersion ?? "none"})`,
          );
        }
        const version = (current?.version ?? 0) + 1;
        const now = Date.now();
        this.db
          .prepare(
            `INSERT INTO rollout_states (name, revision, phase, state, version, updated_at)
             VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET revision = excluded.revision, phase = excluded.phase,
               state = excluded.state, version = excluded.version, updated_at = excluded.updated_at`,
          )
          .run(state.name, state.revision, state.phase, JSON.stringify(state), version, now);
        if (state.phase === "PROMOTED") {
          this.db
            .prepare(
              "UPDATE rollout_revisions SET promoted_at = ? WHERE name = ? AND revision = ? AND promoted_at IS NULL",
            )
            .run(state.since, state.name, state.revision);
        }
        const last = this.db
          .prepare("SELECT COALESCE(MAX(seq), 0) AS seq FROM rollout_history WHERE name = ?")
          .get(state.name) as { seq: number };
        const insertHistory = this.db.prepare(
          `INSERT INTO rollout_history (name, seq, at, revision, phase, reason, message, step, weight)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        );
        change.history.forEach((entry, i) => {
          insertHistory.run(
            state.name,
            last.seq + i + 1,
            entry.at,
            entry.revision,
            entry.phase,
            entry.reason,
            entry.message,
            entry.step,
            entry.weight,
          );
        });
        const insertDecision = this.db.prepare(
          `INSERT INTO rollout_decisions (name, revision, at, step, context, measurement, gate,
             outcome, measured, thresholds, message, layers)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        );
        for (const d of change.decisions) {
          insertDecision.run(
            state.name,
            d.revision,
            d.at,
            d.step,
            d.context,
            d.measurement,
            d.gate,
            d.outcome,
            encodeNumbers(d.measured),
            encodeNumbers(d.thresholds),
            d.message,
            d.layers === undefined ? null : JSON.stringify(d.layers),
          );
        }
        return version;
      })
      .immediate();
  }

  history(name: string, afterSeq = 0): StoredHistoryEntry[] {
    const rows = this.db
      .prepare("SELECT * FROM rollout_history WHERE name = ? AND seq > ? ORDER BY seq")
      .all(name, afterSeq) as HistoryRow[];
    return rows.map((row) => ({
      seq: row.seq,
      at: row.at,
      revision: row.revision,
      phase: row.phase as Phase,
      reason: row.reason,
      message: row.message,
      step: row.step,
      weight: row.weight,
    }));
  }

  decisions(
    name: string,
    options: { revision?: string; afterSeq?: number } = {},
  ): StoredDecision[] {
    const rows = this.db
      .prepare(
        `SELECT * FROM rollout_decisions WHERE name = ? AND seq > ? AND (? IS NULL OR revision = ?)
         ORDER BY seq`,
      )
      .all(
        name,
        options.afterSeq ?? 0,
        options.revision ?? null,
        options.revision ?? null,
      ) as DecisionRow[];
    return rows.map((row) => {
      const decision: StoredDecision = {
        seq: row.seq,
        rollout: row.name,
        revision: row.revision,
        at: row.at,
        step: row.step,
        context: row.context as MeasurementContext,
        measurement: row.measurement,
        gate: row.gate as GateName,
        outcome: row.outcome as StoredDecision["outcome"],
        measured: decodeNumbers(row.measured),
        thresholds: decodeNumbers(row.thresholds),
        message: row.message,
      };
      return row.layers === null
        ? decision
        : { ...decision, layers: JSON.parse(row.layers) as LayerCheck[] };
    });
  }

  private findByHash(name: string, revision: string): RevisionRecord | undefined {
    const row = this.db
      .prepare("SELECT * FROM rollout_revisions WHERE name = ? AND revision = ?")
      .get(name, revision) as RevisionRow | undefined;
    return row === undefined ? undefined : toRevision(row);
  }
}

interface RevisionRow {
  name: string;
  revision: string;
  number: number;
  spec: string;
  applied_at: number;
  promoted_at: number | null;
}

interface HistoryRow {
  seq: number;
  at: number;
  revision: string;
  phase: string;
  reason: string;
  message: string;
  step: number;
  weight: number;
}

interface DecisionRow {
  seq: number;
  name: string;
  revision: string;
  at: number;
  step: number;
  context: string;
  measurement: number;
  gate: string;
  outcome: string;
  measured: string;
  thresholds: string;
  message: string;
  layers: string | null;
}

function migrate(db: Database.Database): void {
  db.exec(
    "CREATE TABLE IF NOT EXISTS rollout_schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
  );
  db.transaction(() => {
    const row = db
      .prepare("SELECT COALESCE(MAX(version), 0) AS version FROM rollout_schema_migrations")
      .get() as { version: number };
    for (let i = row.version; i < MIGRATIONS.length; i++) {
      db.exec(MIGRATIONS[i] as string);
      db.prepare("INSERT INTO rollout_schema_migrations (version, applied_at) VALUES (?, ?)").run(
        i + 1,
        new Date().toISOString(),
      );
    }
  }).immediate();
}

function toRevision(row: RevisionRow): RevisionRecord {
  return {
    name: row.name,
    revision: row.revision,
    number: row.number,
    spec: JSON.parse(row.spec) as RolloutSpec,
    appliedAt: row.applied_at,
    promotedAt: row.promoted_at,
  };
}

/** JSON of a number map; ±Infinity and NaN (an exploded perplexity) survive as strings. */
function encodeNumbers(values: Readonly<Record<string, number>>): string {
  return JSON.stringify(values, (_key, value: unknown) =>
    typeof value === "number" && !Number.isFinite(value) ? String(value) : value,
  );
}

function decodeNumbers(text: string): Record<string, number> {
  const raw = JSON.parse(text) as Record<string, number | string>;
  return Object.fromEntries(Object.entries(raw).map(([k, v]) => [k, Number(v)]));
}
