/**
 * Where rollouts live between (and across) control-plane runs: revisions, the current state of
 * each rollout, its history and its decision log. The engine depends on this interface only;
 * sqlite-store.ts is the implementation.
 */

import type { Decision, HistoryEntry, RolloutState } from "./machine.js";
import type { RolloutSpec } from "./revision.js";

/** One immutable applied spec. */
export interface RevisionRecord {
  readonly name: string;
  /** Content hash (revision.ts). */
  readonly revision: string;
  /** 1, 2, … in order of first application, per rollout name. */
  readonly number: number;
  readonly spec: RolloutSpec;
  readonly appliedAt: number;
  /** When this revision first reached PROMOTED; rollback only targets promoted revisions. */
  readonly promotedAt: number | null;
}

/** A rollout's current state and its optimistic-concurrency version. */
export interface StoredRollout {
  readonly state: RolloutState;
  readonly version: number;
}

/** A history entry with its per-rollout sequence number. */
export interface StoredHistoryEntry extends HistoryEntry {
  readonly seq: number;
}

/** A decision with its store-wide sequence number. */
export interface StoredDecision extends Decision {
  readonly seq: number;
  readonly rollout: string;
}

/** Everything one transition changes, written in one transaction. */
export interface RolloutCommit {
  readonly state: RolloutState;
  /** The version read before the transition; null when the rollout is new. */
  readonly expectedVersion: number | null;
  readonly history: readonly HistoryEntry[];
  readonly decisions: readonly Decision[];
}

/** Persistence of rollouts. Every method is synchronous (one local SQLite file). */
export interface RolloutStore {
  /** Record a revision (no-op when the same name and hash exist) and return it. */
  putRevision(name: string, revision: string, spec: RolloutSpec, at: number): RevisionRecord;
  /** A revision by hash, unique hash prefix, or number ("3" or "r3"). */
  findRevision(name: string, ref: string): RevisionRecord | undefined;
  revisions(name: string): RevisionRecord[];
  get(name: string): StoredRollout | undefined;
  names(): string[];
  /** Write a transition; throws {@link StaleStateError} when someone else wrote first. */
  commit(change: RolloutCommit): number;
  history(name: string, afterSeq?: number): StoredHistoryEntry[];
  decisions(name: string, options?: { revision?: string; afterSeq?: number }): StoredDecision[];
}

/** Another engine (or call) changed the rollout since it was read. */
export class StaleStateError extends Error {
  override readonly name = "StaleStateError";
}
