/**
 * A small promise client of the ControlPlane API for the CLI and tests: the bearer token goes in
 * each call's metadata (plaintext loopback channels cannot carry call credentials), TLS when a CA
 * file is given.
 */

import { readFileSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";
import type { ControlPlaneClient } from "../gen/tardis/v1/ControlPlane.js";
import { controlPlaneProtos } from "../workers/proto.js";
import { decodeViolations, type FieldViolation } from "./errors.js";

/** How to reach the API. */
export interface ApiClientOptions {
  readonly address: string;
  readonly token?: string | undefined;
  /** PEM CA certificate for a TLS API; plaintext when absent. */
  readonly caFile?: string | undefined;
}

/** A failed API call: status code name, message and field violations. */
export class ApiCallError extends Error {
  override readonly name = "ApiCallError";

  constructor(
    readonly code: string,
    readonly details: string,
    readonly violations: readonly FieldViolation[],
  ) {
    super(`${code}: ${details}`);
  }
}

export function toApiCallError(error: unknown): ApiCallError {
  const e = error as Partial<grpc.ServiceError>;
  if (typeof e?.code !== "number") {
    return new ApiCallError("UNKNOWN", error instanceof Error ? error.message : String(error), []);
  }
  const bin = e.metadata?.get("grpc-status-details-bin")[0];
  return new ApiCallError(
    grpc.status[e.code] ?? String(e.code),
    e.details ?? "",
    Buffer.isBuffer(bin) ? decodeViolations(bin) : [],
  );
}

type UnaryMethod = (
  request: object,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  callback: (error: grpc.ServiceError | null, value?: unknown) => void,
) => grpc.ClientUnaryCall;

/** A ControlPlane client. */
export class ApiClient {
  readonly raw: ControlPlaneClient;

  constructor(private readonly options: ApiClientOptions) {
    const credentials =
      options.caFile === undefined
        ? grpc.credentials.createInsecure()
        : grpc.credentials.createSsl(readFileSync(options.caFile));
    this.raw = new (controlPlaneProtos().tardis.v1.ControlPlane)(options.address, credentials);
  }

  /** Metadata with the bearer token (when there is one). */
  metadata(): grpc.Metadata {
    const md = new grpc.Metadata();
    if (this.options.token) md.set("authorization", `Bearer ${this.options.token}`);
    return md;
  }

  /** Call a unary method by its (camelCase) name. */
  call<T>(
    method: keyof ControlPlaneClient & string,
    request: object,
    timeoutMs = 30_000,
  ): Promise<T> {
    const fn = (this.raw as unknown as Record<string, UnaryMethod>)[method];
    if (typeof fn !== "function") throw new Error(`no method ${method}`);
    return new Promise<T>((resolve, reject) => {
      fn.call(
        this.raw,
        request,
        this.metadata(),
        { deadline: Date.now() + timeoutMs },
        (error, value) => (error ? reject(toApiCallError(error)) : resolve(value as T)),
      );
    });
  }

  close(): void {
    this.raw.close();
  }
}
