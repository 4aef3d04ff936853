/**
 * The API over TLS (a throwaway self-signed certificate), and server reflection listing the
 * ControlPlane service without a token. No worker needed: the fleet is empty.
 */

import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type ApiCallError,
  ApiClient,
  ControlPlaneServer,
} from "../../control-plane/src/api/index.js";
import type { ListRolloutsResponse__Output } from "../../control-plane/src/gen/tardis/v1/ListRolloutsResponse.js";
import { type Db, openDatabase } from "../../control-plane/src/store/database.js";
import { makeTemp, removeTemp } from "./harness.js";

const root = makeTemp();
const cert = join(root, "cert.pem");
const key = join(root, "key.pem");
let db: Db;
let server: ControlPlaneServer;

beforeAll(async () => {
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      key,
      "-out",
      cert,
      "-days",
      "1",
    ].concat(["-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"]),
    { stdio: "ignore" },
  );
  db = openDatabase(join(root, "tardis.db"));
  server = new ControlPlaneServer({
    db,
    home: root,
    workers: [],
    listen: "127.0.0.1:0",
    token: "tls-token",
    tls: { certFile: cert, keyFile: key },
    metricsListen: null,
  });
  await server.start();
});

afterAll(async () => {
  await server?.stop(500);
  db?.close();
  removeTemp(root);
});

describe("ControlPlane API transport", () => {
  it("serves TLS with the configured certificate; the token is still required", async () => {
    const client = new ApiClient({ address: server.address, token: "tls-token", caFile: cert });
    const plain = new ApiClient({ address: server.address, token: "tls-token" });
    const anonymous = new ApiClient({ address: server.address, caFile: cert });
    try {
      const list = await client.call<ListRolloutsResponse__Output>("listRollouts", {});
      expect(list.rollouts).toEqual([]);
      const refused = (await plain
        .call("listRollouts", {}, 3_000)
        .catch((e: unknown) => e)) as ApiCallError;
      expect(refused.code).toBe("UNAVAILABLE");
      const unauthenticated = (await anonymous
        .call("listRollouts", {})
        .catch((e: unknown) => e)) as ApiCallError;
      expect(unauthenticated.code).toBe("UNAUTHENTICATED");
    } finally {
      client.close();
      plain.close();
      anonymous.close();
    }
  });

  it("lists tardis.v1.ControlPlane through server reflection without a token", async () => {
    const require = createRequire(import.meta.url);
    const dir = join(dirname(require.resolve("@grpc/reflection/package.json")), "build", "proto");
    const definition = protoLoader.loadSync("grpc/reflection/v1/reflection.proto", {
      includeDirs: [dir],
      keepCase: false,
      oneofs: true,
    });
    const pkg = grpc.loadPackageDefinition(definition) as unknown as {
      grpc: { reflection: { v1: { ServerReflection: grpc.ServiceClientConstructor } } };
    };
    const client = new pkg.grpc.reflection.v1.ServerReflection(
      server.address,
      grpc.credentials.createSsl(readFileSync(cert)),
    );
    const services = await new Promise<string[]>((resolve, reject) => {
      const call = (
        client as unknown as {
          serverReflectionInfo(): grpc.ClientDuplexStream<
            object,
            { listServicesResponse?: { service: { name: string }[] } }
          >;
        }
      ).serverReflectionInfo();
      call.on("data", (reply: { listServicesResponse?: { service: { name: string }[] } }) => {
        resolve((reply.listServicesResponse?.service ?? []).map((s) => s.name));
        call.end();
      });
      call.on("error", reject);
      call.write({ listServices: "" });
    });
    client.close();
    expect(services).toContain("tardis.v1.ControlPlane");
  });
});
