/**
 * The control plane's SQLite database (better-sqlite3, WAL): one file under the state folder,
 * migrated forward on open. Jobs, their events, variants and supervised workers live here.
 */

import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";

/** An open database. */
export type Db = Database.Database;

/** Schema steps, applied in order; `PRAGMA user_version` records how many ran. Append only. */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE jobs (
     id          TEXT PRIMARY KEY,
     kind        TEXT NOT NULL,              -- calibrate | evaluate
     name        TEXT NOT NULL,
     request_id  TEXT UNIQUE,                -- idempotent submission
     state       TEXT NOT NULL,
     reason      TEXT NOT NULL,
     message     TEXT NOT NULL,
     since       TEXT NOT NULL,
     spec        TEXT NOT NULL,              -- JSON: what to run (worker request fields)
     attempts    INTEGER NOT NULL DEFAULT 0, -- Calibrate/Evaluate calls made so far
     owner_pid   INTEGER,                    -- control-plane process running it now
     variant_id  TEXT,
     result      TEXT,                       -- JSON: metrics / comparison of the finished job
     created_at  TEXT NOT NULL
   );
   CREATE TABLE job_events (
     job_id  TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
     seq     INTEGER NOT NULL,               -- job-level, monotonic across attempts
     time    TEXT NOT NULL,
     type    TEXT NOT NULL,                  -- state | started | progress | layer | completed | failed | cancelled
     data    TEXT NOT NULL,
     PRIMARY KEY (job_id, seq)
   );
   CREATE TABLE variants (
     id          TEXT PRIMARY KEY,           -- artifact content hash (manifest variant_id)
     name        TEXT NOT NULL,
     job_id      TEXT NOT NULL,              -- lineage: the job that made it
     path        TEXT NOT NULL,
     base_path   TEXT NOT NULL,
     family      TEXT NOT NULL,
     method      TEXT NOT NULL,              -- JSON
     metrics     TEXT NOT NULL,              -- JSON
     comparison  TEXT NOT NULL DEFAULT '[]', -- JSON: last evaluation's rows
     state       TEXT NOT NULL DEFAULT 'REGISTERED',
     created_at  TEXT NOT NULL
   );
   CREATE TABLE workers (
     pid        INTEGER PRIMARY KEY,         -- also its process group id
     owner_pid  INTEGER NOT NULL,            -- control-plane process supervising it
     address    TEXT NOT NULL,
     telemetry  TEXT NOT NULL,
     mode       TEXT NOT NULL,               -- ephemeral (one command) | service (tardis worker start)
     started_at TEXT NOT NULL
   );`,
];

/** Open (creating if needed) and migrate the database at `file`. */
export function openDatabase(file: string): Db {
  mkdirSync(dirname(file), { recursive: true });
  const db = new Database(file);
  db.pragma("journal_mode = WAL");
  db.pragma("foreign_keys = ON");
  db.pragma("busy_timeout = 10000");
  const version = Number(db.pragma("user_version", { simple: true }));
  for (let i = version; i < MIGRATIONS.length; i++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[i] as string);
      db.pragma(`user_version = ${i + 1}`);
    }).immediate();
  }
  return db;
}
