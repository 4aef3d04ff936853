/**
 * Revisions: every applied Rollout spec is immutable and named by its content hash (sha256 of the
 * spec as canonical JSON, keys sorted), so re-applying the same spec names the same revision.
 */

import { createHash } from "node:crypto";
import type { Rollout } from "../config/index.js";

/** The spec part of a Rollout document. */
export type RolloutSpec = Rollout["spec"];

/** Characters of the sha256 hex digest kept as the revision id. */
const REVISION_CHARS = 16;

/** Content hash of a rollout's name and spec (defaults filled in). */
export function revisionOf(name: string, spec: RolloutSpec): string {
  const digest = createHash("sha256").update(canonicalJson({ name, spec })).digest("hex");
  return digest.slice(0, REVISION_CHARS);
}

/** JSON with object keys sorted at every level, so equal values give equal text. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return Object.fromEntries(entries.map(([k, v]) => [k, sortKeys(v)]));
  }
  return value;
}
