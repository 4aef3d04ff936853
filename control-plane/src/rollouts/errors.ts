/** Domain errors of rollouts, each with the gRPC status code the API should answer with. */

/** gRPC status names the rollout operations can fail with. */
export type RolloutErrorCode = "NOT_FOUND" | "FAILED_PRECONDITION" | "INVALID_ARGUMENT" | "ABORTED";

/** A rollout operation that cannot be done, with what to do instead. */
export class RolloutError extends Error {
  override readonly name = "RolloutError";

  constructor(
    readonly code: RolloutErrorCode,
    message: string,
  ) {
    super(message);
  }
}
