/**
 * The thin transport layer to one worker: deadlines, cancellation (AbortSignal), keepalive and
 * status-code mapping. Callers get plain message objects and {@link WorkerCallError} values; no raw
 * grpc object leaves this file.
 */

import * as grpc from "@grpc/grpc-js";
import type { HealthClient } from "../gen/grpc/health/v1/Health.js";
import type { HealthCheckResponse__Output } from "../gen/grpc/health/v1/HealthCheckResponse.js";
import type { CalibrateRequest } from "../gen/tardis/v1/CalibrateRequest.js";
import type { CancelJobResponse__Output } from "../gen/tardis/v1/CancelJobResponse.js";
import type { DescribeResponse__Output } from "../gen/tardis/v1/DescribeResponse.js";
import type { EvaluateRequest } from "../gen/tardis/v1/EvaluateRequest.js";
import type { GenerateChunk__Output } from "../gen/tardis/v1/GenerateChunk.js";
import type { GenerateRequest } from "../gen/tardis/v1/GenerateRequest.js";
import type { JobEvent__Output } from "../gen/tardis/v1/JobEvent.js";
import type { LoadVariantRequest } from "../gen/tardis/v1/LoadVariantRequest.js";
import type { LoadVariantResponse__Output } from "../gen/tardis/v1/LoadVariantResponse.js";
import type { StatsResponse__Output } from "../gen/tardis/v1/StatsResponse.js";
import type { WorkerServiceClient } from "../gen/tardis/v1/WorkerService.js";
import { protos } from "./proto.js";

/**
 * Channel options. The worker accepts pings every ≥ 10 s (worker.proto); 30 s leaves margin, and
 * pinging without calls keeps an idle stream between calibration steps alive.
 */
const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  "grpc.keepalive_time_ms": 30_000,
  "grpc.keepalive_timeout_ms": 20_000,
  "grpc.keepalive_permit_without_calls": 1,
  "grpc.max_receive_message_length": 64 * 1024 * 1024,
  "grpc.max_send_message_length": 64 * 1024 * 1024,
};

/** Per-call settings: a deadline and/or a signal that cancels the call. */
export interface CallOptions {
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

/** A failed call: the gRPC status name ("NOT_FOUND", "UNAVAILABLE" …) and the worker's message. */
export class WorkerCallError extends Error {
  constructor(
    readonly code: string,
    readonly details: string,
  ) {
    super(`${code}: ${details}`);
    this.name = "WorkerCallError";
  }

  /** The worker went away or is restarting: the call may succeed on a (restarted) worker. */
  get transient(): boolean {
    return ["UNAVAILABLE", "RESOURCE_EXHAUSTED", "CANCELLED", "UNKNOWN", "INTERNAL"].includes(
      this.code,
    );
  }
}

function toCallError(error: unknown): WorkerCallError {
  if (error instanceof WorkerCallError) return error;
  const e = error as Partial<grpc.ServiceError>;
  if (typeof e?.code === "number") {
    return new WorkerCallError(grpc.status[e.code] ?? String(e.code), e.details ?? String(error));
  }
  return new WorkerCallError("UNKNOWN", error instanceof Error ? error.message : String(error));
}

function callOptions(options: CallOptions): grpc.CallOptions {
  return options.timeoutMs === undefined ? {} : { deadline: Date.now() + options.timeoutMs };
}

/** A client of one worker address (host:port). */
export class WorkerClient {
  private readonly service: WorkerServiceClient;
  private readonly healthClient: HealthClient;

  constructor(readonly address: string) {
    const p = protos();
    this.service = new p.tardis.v1.WorkerService(
      address,
      grpc.credentials.createInsecure(),
      CHANNEL_OPTIONS,
    );
    this.healthClient = new p.grpc.health.v1.Health(
      address,
      grpc.credentials.createInsecure(),
      CHANNEL_OPTIONS,
    );
  }

  /** Close both channels. */
  close(): void {
    this.service.close();
    this.healthClient.close();
  }

  private unary<T>(
    start: (
      options: grpc.CallOptions,
      done: (error: grpc.ServiceError | null, value?: T) => void,
    ) => grpc.ClientUnaryCall,
    options: CallOptions,
  ): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const call = start(callOptions(options), (error, value) => {
        options.signal?.removeEventListener("abort", abort);
        if (error) reject(toCallError(error));
        else resolve(value as T);
      });
      const abort = (): void => call.cancel();
      options.signal?.addEventListener("abort", abort, { once: true });
    });
  }

  private async *stream<T>(call: grpc.ClientReadableStream<T>, options: CallOptions) {
    const abort = (): void => call.cancel();
    if (options.signal?.aborted) call.cancel();
    options.signal?.addEventListener("abort", abort, { once: true });
    try {
      for await (const message of call) yield message as T;
    } catch (error) {
      throw toCallError(error);
    } finally {
      options.signal?.removeEventListener("abort", abort);
      call.cancel(); // no-op after the stream ended; ends it when the consumer stops early
    }
  }

  /** grpc.health.v1 status of the whole server ("SERVING", "NOT_SERVING" …). */
  async health(options: CallOptions = { timeoutMs: 2_000 }): Promise<string> {
    const reply = await this.unary<HealthCheckResponse__Output>(
      (o, done) => this.healthClient.check({ service: "" }, o, done),
      options,
    );
    return String(reply?.status ?? "UNKNOWN");
  }

  /** What the worker is and runs now. */
  describe(options: CallOptions = { timeoutMs: 10_000 }): Promise<DescribeResponse__Output> {
    return this.unary((o, done) => this.service.describe({}, o, done), options);
  }

  /** Start (or resume) a calibration job; its events, ending with exactly one terminal event. */
  calibrate(
    request: CalibrateRequest,
    options: CallOptions = {},
  ): AsyncGenerator<JobEvent__Output> {
    return this.stream(this.service.calibrate(request, callOptions(options)), options);
  }

  /** Start an evaluation job; its events, ending with exactly one terminal event. */
  evaluate(request: EvaluateRequest, options: CallOptions = {}): AsyncGenerator<JobEvent__Output> {
    return this.stream(this.service.evaluate(request, callOptions(options)), options);
  }

  /** Ask a running job to stop; false when it had already finished. */
  async cancelJob(
    jobId: string,
    reason: string,
    options: CallOptions = { timeoutMs: 10_000 },
  ): Promise<boolean> {
    const reply = await this.unary<CancelJobResponse__Output>(
      (o, done) => this.service.cancelJob({ jobId, reason }, o, done),
      options,
    );
    return Boolean(reply?.cancelling);
  }

  /** Load a variant artifact into an engine (idempotent per variant id). */
  loadVariant(
    request: LoadVariantRequest,
    options: CallOptions = { timeoutMs: 300_000 },
  ): Promise<LoadVariantResponse__Output> {
    return this.unary((o, done) => this.service.loadVariant(request, o, done), options);
  }

  /** Generated tokens, one chunk each, then a final chunk with usage. */
  generate(
    request: GenerateRequest,
    options: CallOptions = {},
  ): AsyncGenerator<GenerateChunk__Output> {
    return this.stream(this.service.generate(request, callOptions(options)), options);
  }

  /** Live engine counters of loaded variants. */
  stats(
    variantId = "",
    options: CallOptions = { timeoutMs: 10_000 },
  ): Promise<StatsResponse__Output> {
    return this.unary((o, done) => this.service.stats({ variantId }, o, done), options);
  }
}
