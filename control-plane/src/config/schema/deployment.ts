/**
 * `kind: Deployment` — what `tardis serve` runs: the ControlPlane API, its auth, the worker pools and
 * where telemetry is published.
 */

import { z } from "zod";
import { isLoopback, parseListenAddress, ZMQ_ENDPOINT_PATTERN } from "../listen-address.js";
import { document, exactlyOneOf, listenAddress, localPath, objectName } from "./common.js";

/** Default ControlPlane API address: loopback only, so nothing is exposed by accident. */
export const DEFAULT_API_LISTEN = "127.0.0.1:7070";

/** Default ZeroMQ telemetry endpoint the workers publish on. */
export const DEFAULT_TELEMETRY_ENDPOINT = "tcp://127.0.0.1:5556";

const tokenSource = exactlyOneOf(["tokenEnv", "tokenFile"]);

const apiSection = z
  .strictObject({
    listen: listenAddress
      .default(DEFAULT_API_LISTEN)
      .describe("Address of the ControlPlane gRPC API; loopback by default."),
    auth: z
      .strictObject({
        tokenEnv: z
          .string()
          .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, { error: "expected an environment variable name" })
          .optional()
          .describe("Name of the environment variable holding the bearer token."),
        tokenFile: localPath("File holding the bearer token (first line)").optional(),
      })
      .refine(tokenSource.check, { error: tokenSource.error })
      .meta(tokenSource.jsonSchema)
      .optional()
      .describe("Bearer-token auth: exactly one of tokenEnv or tokenFile. Required off loopback."),
    tls: z
      .strictObject({
        certFile: localPath("PEM certificate chain"),
        keyFile: localPath("PEM private key"),
      })
      .optional()
      .describe("Serve TLS with this certificate; plaintext when absent."),
  })
  .describe("The ControlPlane gRPC API.");

const workerPool = z
  .strictObject({
    name: objectName.describe("Name of the pool, unique in this deployment."),
    engine: z
      .enum(["hf", "vllm"])
      .default("hf")
      .describe('Inference engine of each worker: "hf" (transformers) or "vllm".'),
    device: z
      .string()
      .regex(/^(cpu|cuda(:\d+)?)$/, { error: 'expected "cpu", "cuda" or "cuda:N"' })
      .default("cpu")
      .describe('Device of each worker: "cpu", "cuda" or "cuda:N".'),
    listen: listenAddress.describe(
      "gRPC address of the first worker; worker i of the pool listens on port + i.",
    ),
    count: z.int().min(1).max(64).default(1).describe("Number of workers in the pool."),
  })
  .describe("A pool of identical workers.");

/** A parsed worker pool, defaults filled in. */
export type WorkerPool = z.output<typeof workerPool>;

const deploymentSpec = z
  .strictObject({
    api: apiSection.prefault({}),
    workers: z.array(workerPool).min(1).describe("Worker pools; at least one."),
    telemetry: z
      .strictObject({
        endpoint: z
          .string()
          .regex(ZMQ_ENDPOINT_PATTERN, {
            error:
              'expected a ZeroMQ endpoint such as "tcp://127.0.0.1:5556" or "ipc:///tmp/tardis"',
          })
          .default(DEFAULT_TELEMETRY_ENDPOINT)
          .describe(
            "ZeroMQ endpoint workers publish telemetry on (PUB) and the control plane reads.",
          ),
      })
      .prefault({})
      .describe("Telemetry (progress, per-layer fallback rates, tokens/s)."),
  })
  .superRefine((spec, ctx) => {
    const api = parseListenAddress(spec.api.listen);
    if (api !== undefined && !isLoopback(api) && spec.api.auth === undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["api"],
        message: `expected api.auth (tokenEnv or tokenFile): ${spec.api.listen} is not a loopback address`,
      });
    }
    checkPools(spec.workers, ctx);
  })
  .describe("The API, its workers and telemetry.");

/** Pool names must be unique, and no two workers (pool port + i) may share a TCP port on one host. */
function checkPools(pools: readonly WorkerPool[], ctx: z.RefinementCtx): void {
  const names = new Set<string>();
  const taken = new Map<string, string>();
  pools.forEach((pool, index) => {
    if (names.has(pool.name)) {
      ctx.addIssue({
        code: "custom",
        path: ["workers", index, "name"],
        message: "expected a pool name not used by an earlier pool",
      });
    }
    names.add(pool.name);
    const address = parseListenAddress(pool.listen);
    if (address?.kind !== "tcp" || address.port === 0) return;
    if (address.port + pool.count - 1 > 65535) {
      ctx.addIssue({
        code: "custom",
        path: ["workers", index, "listen"],
        message: `expected port + count - 1 <= 65535 (${pool.count} workers from port ${address.port})`,
      });
      return;
    }
    for (let i = 0; i < pool.count; i++) {
      const slot = `${address.host}:${address.port + i}`;
      const owner = taken.get(slot);
      if (owner !== undefined) {
        ctx.addIssue({
          code: "custom",
          path: ["workers", index, "listen"],
          message: `expected ports no other pool uses (${slot} belongs to pool "${owner}")`,
        });
        return;
      }
      taken.set(slot, pool.name);
    }
  });
}

/** Schema of a whole `kind: Deployment` document. */
export const deploymentDocument = document("Deployment", deploymentSpec).describe(
  "The API server and the worker processes `tardis serve` runs.",
);

/** A parsed Deployment, defaults filled in. */
export type Deployment = z.output<typeof deploymentDocument>;
