/** Exit codes of `tardis` (documented in control-plane/README.md). */

export const EXIT = {
  /** Success. */
  OK: 0,
  /** The job or call failed (worker error, job FAILED or CANCELLED by someone else). */
  FAILED: 1,
  /** Bad input: malformed YAML, a missing path, an unknown id, a bad flag. Nothing was started. */
  BAD_INPUT: 2,
  /** A `--timeout` ran out (the job was cancelled). */
  TIMEOUT: 3,
  /** Interrupted by SIGINT (Ctrl-C); a running job was cancelled on the worker first. */
  INTERRUPTED: 130,
} as const;

/** An error that ends the command with a given exit code and a message for the user. */
export class CliError extends Error {
  constructor(
    readonly exitCode: number,
    message: string,
  ) {
    super(message);
    this.name = "CliError";
  }
}

/** Bad input (exit 2). */
export function badInput(message: string): CliError {
  return new CliError(EXIT.BAD_INPUT, message);
}
