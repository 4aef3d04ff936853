/**
 * Job states and the transitions between them (CONTROL-PLANE.md):
 * QUEUED → RUNNING → SUCCEEDED | FAILED | CANCELLED, with CANCELLING between RUNNING and CANCELLED.
 * RUNNING → RUNNING is a resume (a new attempt after a worker or control-plane crash).
 */

export const JOB_STATES = [
  "QUEUED",
  "RUNNING",
  "CANCELLING",
  "SUCCEEDED",
  "FAILED",
  "CANCELLED",
] as const;

/** One of {@link JOB_STATES}. */
export type JobState = (typeof JOB_STATES)[number];

const NEXT: Record<JobState, readonly JobState[]> = {
  QUEUED: ["RUNNING", "CANCELLED", "FAILED"],
  RUNNING: ["RUNNING", "CANCELLING", "SUCCEEDED", "FAILED", "CANCELLED"],
  // A job asked to stop may still finish first: the worker's terminal event decides.
  CANCELLING: ["CANCELLED", "SUCCEEDED", "FAILED"],
  SUCCEEDED: [],
  FAILED: [],
  CANCELLED: [],
};

/** True for SUCCEEDED, FAILED and CANCELLED. */
export function isTerminal(state: JobState): boolean {
  return NEXT[state].length === 0;
}

/** Whether `from → to` is allowed. */
export function canTransition(from: JobState, to: JobState): boolean {
  return NEXT[from].includes(to);
}
