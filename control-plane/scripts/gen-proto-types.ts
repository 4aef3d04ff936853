/**
 * Generate the TypeScript types of protos/ (tardis.v1 and grpc.health.v1) into
 * control-plane/src/gen/ with proto-loader-gen-types, using the same options the runtime loader uses
 * (control-plane/src/workers/proto.ts). The folder is rebuilt from scratch; never edit it by hand.
 */

import { execFileSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const out = join(root, "control-plane/src/gen");
const require = createRequire(import.meta.url);
const healthProto = join(dirname(require.resolve("grpc-health-check/package.json")), "proto");
const bin = join(
  dirname(require.resolve("@grpc/proto-loader/package.json")),
  "build/bin/proto-loader-gen-types.js",
);

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
execFileSync(
  process.execPath,
  [
    bin,
    "--longs=String",
    "--enums=String",
    "--defaults",
    "--oneofs",
    "--grpcLib=@grpc/grpc-js",
    "-I",
    "protos",
    "-I",
    healthProto,
    "-O",
    out,
    "tardis/v1/worker.proto",
    "tardis/v1/control_plane.proto",
    "health/v1/health.proto",
  ],
  { stdio: "inherit", cwd: root },
);
// The generator writes extension-less relative imports; NodeNext ESM needs them to name the .js file.
for (const entry of readdirSync(out, { recursive: true, withFileTypes: true })) {
  if (!entry.isFile() || !entry.name.endsWith(".ts")) continue;
  const file = join(entry.parentPath, entry.name);
  const text = readFileSync(file, "utf8");
  writeFileSync(file, text.replace(/from '(\.{1,2}\/[^']+)'/g, "from '$1.js'"));
}
