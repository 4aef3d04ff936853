/**
 * Domain errors → gRPC status codes, with `google.rpc.Status` details (a `google.rpc.BadRequest`
 * whose field violations name the offending field) in the `grpc-status-details-bin` trailer.
 * The two small messages are encoded by hand (protobuf wire format) to avoid another dependency.
 */

import * as grpc from "@grpc/grpc-js";
import { type ConfigError, formatConfigErrors, formatKeyPath } from "../config/index.js";
import { RolloutError } from "../rollouts/index.js";
import { InvalidSplitError, NoRouteError, VariantNotLoadedError } from "../router/index.js";
import { WorkerCallError } from "../workers/worker-client.js";

/** One invalid field: its key path and what was expected (with file:line:col for YAML). */
export interface FieldViolation {
  readonly field: string;
  readonly description: string;
}

/** An error the API answers with a given status code (and field violations). */
export class ApiError extends Error {
  override readonly name = "ApiError";

  constructor(
    readonly code: grpc.status,
    message: string,
    readonly violations: readonly FieldViolation[] = [],
  ) {
    super(message);
  }
}

/** INVALID_ARGUMENT from config-loader errors: one violation per error, the message one a line. */
export function invalidConfig(errors: readonly ConfigError[]): ApiError {
  return new ApiError(
    grpc.status.INVALID_ARGUMENT,
    formatConfigErrors(errors),
    errors.map((e) => ({
      field: formatKeyPath(e.path),
      description: `${e.file}:${e.line}:${e.col}: ${e.message}`,
    })),
  );
}

/** INVALID_ARGUMENT naming one request field. */
export function invalidField(field: string, description: string): ApiError {
  return new ApiError(grpc.status.INVALID_ARGUMENT, `${field}: ${description}`, [
    { field, description },
  ]);
}

/** The status a thrown value maps to. */
export function toServiceError(error: unknown): Partial<grpc.ServiceError> & {
  code: grpc.status;
  details: string;
} {
  let code: grpc.status = grpc.status.INTERNAL;
  let violations: readonly FieldViolation[] = [];
  const message = error instanceof Error ? error.message : String(error);
  if (error instanceof ApiError) {
    code = error.code;
    violations = error.violations;
  } else if (error instanceof RolloutError) {
    code = grpc.status[error.code];
  } else if (error instanceof WorkerCallError) {
    code =
      (grpc.status as unknown as Record<string, grpc.status>)[error.code] ?? grpc.status.UNKNOWN;
  } else if (error instanceof VariantNotLoadedError || error instanceof NoRouteError) {
    code = grpc.status.UNAVAILABLE;
  } else if (error instanceof InvalidSplitError) {
    code = grpc.status.INVALID_ARGUMENT;
  }
  const details = error instanceof WorkerCallError ? error.details : message;
  const metadata = new grpc.Metadata();
  metadata.set("grpc-status-details-bin", encodeStatus(code, details, violations));
  return { code, details, metadata };
}

// ---- protobuf wire format (google.rpc.Status, google.protobuf.Any, google.rpc.BadRequest) ----

function varint(n: number): Buffer {
  const bytes: number[] = [];
  let v = n >>> 0;
  while (v > 0x7f) {
    bytes.push((v & 0x7f) | 0x80);
    v >>>= 7;
  }
  bytes.push(v);
  return Buffer.from(bytes);
}

function lengthDelimited(field: number, payload: Buffer): Buffer {
  return Buffer.concat([varint((field << 3) | 2), varint(payload.length), payload]);
}

function stringField(field: number, text: string): Buffer {
  return lengthDelimited(field, Buffer.from(text, "utf8"));
}

/** A google.rpc.Status message; with violations, one google.rpc.BadRequest detail. */
export function encodeStatus(
  code: number,
  message: string,
  violations: readonly FieldViolation[],
): Buffer {
  const parts = [Buffer.concat([varint(1 << 3), varint(code)]), stringField(2, message)];
  if (violations.length > 0) {
    const badRequest = Buffer.concat(
      violations.map((v) =>
        lengthDelimited(1, Buffer.concat([stringField(1, v.field), stringField(2, v.description)])),
      ),
    );
    const any = Buffer.concat([
      stringField(1, "type.googleapis.com/google.rpc.BadRequest"),
      lengthDelimited(2, badRequest),
    ]);
    parts.push(lengthDelimited(3, any));
  }
  return Buffer.concat(parts);
}

/** Field violations in a `grpc-status-details-bin` value (for clients and tests). */
export function decodeViolations(bin: Buffer): FieldViolation[] {
  const out: FieldViolation[] = [];
  for (const [field, value] of fields(bin)) {
    if (field !== 3 || !Buffer.isBuffer(value)) continue;
    const any = new Map(fields(value));
    const typeUrl = any.get(1);
    const body = any.get(2);
    if (!Buffer.isBuffer(typeUrl) || !Buffer.isBuffer(body)) continue;
    if (!typeUrl.toString().endsWith("google.rpc.BadRequest")) continue;
    for (const [f, violation] of fields(body)) {
      if (f !== 1 || !Buffer.isBuffer(violation)) continue;
      const v = new Map(fields(violation));
      out.push({
        field: String(v.get(1) ?? ""),
        description: String(v.get(2) ?? ""),
      });
    }
  }
  return out;
}

function* fields(buf: Buffer): Generator<[number, Buffer | number]> {
  let i = 0;
  const read = (): number => {
    let result = 0;
    let shift = 0;
    for (;;) {
      const byte = buf[i++] ?? 0;
      result += (byte & 0x7f) * 2 ** shift;
      if ((byte & 0x80) === 0) return result;
      shift += 7;
    }
  };
  while (i < buf.length) {
    const key = read();
    const wire = key & 7;
    if (wire === 0) yield [key >>> 3, read()];
    else if (wire === 2) {
      const len = read();
      yield [key >>> 3, buf.subarray(i, i + len)];
      i += len;
    } else return;
  }
}
