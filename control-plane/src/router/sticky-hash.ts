/**
 * Sticky buckets: a session (or tenant) id hashes to a fixed point in [0, 100) per rollout
 * revision, so its requests keep reaching the same variant (and its warm prefix cache) for as long
 * as the split does not move that point to another variant.
 */

import { createHash } from "node:crypto";

/** 2^48: the first 6 bytes of the digest read as an integer. */
const SPAN = 2 ** 48;

/** A stable point in [0, 100) for `key` within `scope` (sha256 of `${scope}:${key}`). */
export function stickyBucket(scope: string, key: string): number {
  const digest = createHash("sha256").update(`${scope}:${key}`).digest();
  return (digest.readUIntBE(0, 6) / SPAN) * 100;
}
