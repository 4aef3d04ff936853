import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import {
  revisionOf,
  SqliteRolloutStore,
  StaleStateError,
} from "../../control-plane/src/rollouts/index.js";
import { ALL_GATES, rolloutDoc, startHarness, tempDb } from "./harness.js";

describe("rollout store (SQLite)", () => {
  it("names a revision by the content of its spec, whatever the key order", () => {
    const a = rolloutDoc({ steps: [{ setWeight: 10 }], gates: ALL_GATES });
    const entries = Object.entries(a.spec).reverse();
    const reordered = Object.fromEntries(entries) as typeof a.spec;
    expect(Object.keys(reordered)).not.toEqual(Object.keys(a.spec));
    expect(revisionOf("r", reordered)).toBe(revisionOf("r", a.spec));
    expect(revisionOf("r", { ...a.spec, failureLimit: 1 })).not.toBe(revisionOf("r", a.spec));
    expect(revisionOf("other", a.spec)).not.toBe(revisionOf("r", a.spec));
  });

  it("shares a database with other tables, migrating only its own rollout_* tables", () => {
    const file = tempDb();
    const other = new Database(file);
    other.exec("CREATE TABLE jobs (id TEXT PRIMARY KEY)");
    other.pragma("user_version = 1");
    const store = new SqliteRolloutStore(other);
    new SqliteRolloutStore(other); // migrating twice is a no-op
    expect(other.pragma("user_version", { simple: true })).toBe(1);
    const tables = other
      .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
      .all()
      .map((row) => (row as { name: string }).name)
      .filter((name) => name !== "sqlite_sequence");
    expect(tables).toEqual([
      "jobs",
      "rollout_decisions",
      "rollout_history",
      "rollout_revisions",
      "rollout_schema_migrations",
      "rollout_states",
    ]);
    store.close(); // not owned: the database stays open
    expect(other.open).toBe(true);
    other.close();
  });

  it("refuses a write based on a stale version", async () => {
    const h = startHarness(tempDb());
    await h.engine.apply(
      rolloutDoc({ steps: [{ setWeight: 10 }, { pause: {} }], gates: ALL_GATES }),
    );
    await h.engine.idle();
    const stored = h.store.get("tiny-gpt2-tardis");
    if (stored === undefined) throw new Error("missing");
    const write = { state: stored.state, history: [], decisions: [] };
    h.store.commit({ ...write, expectedVersion: stored.version });
    expect(() => h.store.commit({ ...write, expectedVersion: stored.version })).toThrow(
      StaleStateError,
    );
    h.store.close();
  });

  it("keeps non-finite measured values in the decision log", async () => {
    const h = startHarness(tempDb());
    h.measurements.accuracySample = {
      samples: 300,
      baselinePerplexity: 30,
      candidatePerplexity: Number.POSITIVE_INFINITY,
    };
    await h.engine.apply(
      rolloutDoc({
        steps: [{ setWeight: 10 }, { analysis: { gates: ["accuracy"] } }],
        gates: { accuracy: { evalSet: { builtin: "lee" }, maxPerplexityRatio: 1.1 } },
      }),
    );
    await h.engine.idle();
    const [decision] = h.engine.decisions("tiny-gpt2-tardis");
    expect(decision?.outcome).toBe("failed");
    expect(decision?.measured.candidatePerplexity).toBe(Number.POSITIVE_INFINITY);
    expect(decision?.measured.perplexityRatio).toBe(Number.POSITIVE_INFINITY);
    h.store.close();
  });
});
