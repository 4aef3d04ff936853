/**
 * The tardis.v1 and grpc.health.v1 definitions, loaded at runtime by @grpc/proto-loader (protobufjs)
 * with the same options `npm run gen` gives proto-loader-gen-types, so the generated types in
 * src/gen/ describe exactly the objects this loader produces.
 */

import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import type { ProtoGrpcType as ControlPlaneProto } from "../gen/control_plane.js";
import type { ProtoGrpcType as HealthProto } from "../gen/health.js";
import type { ProtoGrpcType as WorkerProto } from "../gen/worker.js";

const require = createRequire(import.meta.url);

/** Folder holding protos/tardis/v1 (the repository's contract). */
export const PROTOS_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "../../../protos");

const HEALTH_PROTOS_DIR = join(dirname(require.resolve("grpc-health-check/package.json")), "proto");

/** Loader options; keep in step with control-plane/scripts/gen-proto-types.ts. */
export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTOS_DIR, HEALTH_PROTOS_DIR],
};

let loaded: (WorkerProto & HealthProto) | undefined;
let controlPlaneLoaded: ControlPlaneProto | undefined;

/** The loaded packages (client constructors and message types), loaded once per process. */
export function protos(): WorkerProto & HealthProto {
  if (loaded === undefined) {
    const definition = protoLoader.loadSync(
      ["tardis/v1/worker.proto", "health/v1/health.proto"],
      LOADER_OPTIONS,
    );
    loaded = grpc.loadPackageDefinition(definition) as unknown as WorkerProto & HealthProto;
  }
  return loaded;
}

/** The ControlPlane service (tardis/v1/control_plane.proto) and its messages, loaded once. */
export function controlPlaneProtos(): ControlPlaneProto {
  if (controlPlaneLoaded === undefined) {
    controlPlaneDefinition_ = protoLoader.loadSync(
      ["tardis/v1/control_plane.proto"],
      LOADER_OPTIONS,
    );
    controlPlaneLoaded = grpc.loadPackageDefinition(
      controlPlaneDefinition_,
    ) as unknown as ControlPlaneProto;
  }
  return controlPlaneLoaded;
}

let controlPlaneDefinition_: protoLoader.PackageDefinition | undefined;

/** The package definition of control_plane.proto (for server reflection). */
export function controlPlaneDefinition(): protoLoader.PackageDefinition {
  controlPlaneProtos();
  return controlPlaneDefinition_ as protoLoader.PackageDefinition;
}
