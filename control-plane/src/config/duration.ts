/**
 * Durations in configs are strings such as "30s", "10m", "1h30m" or "500ms" (Argo Rollouts style),
 * never bare numbers, so that a unit is always written down.
 */

/** Hours, minutes, seconds, milliseconds, each optional but in this order; at least one. */
export const DURATION_PATTERN = /^(?=\d)(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$/;

/** Milliseconds in a duration string; throws on a malformed one (validate with the schema first). */
export function durationToMs(text: string): number {
  const match = DURATION_PATTERN.exec(text);
  if (match === null) {
    throw new RangeError(
      `not a duration: ${JSON.stringify(text)} (expected e.g. "30s", "10m", "1h30m")`,
    );
  }
  const [, h, m, s, ms] = match;
  const num = (part: string | undefined): number => (part === undefined ? 0 : Number(part));
  return ((num(h) * 60 + num(m)) * 60 + num(s)) * 1000 + num(ms);
}
