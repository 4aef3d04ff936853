/**
 * `tardis serve` on its own: starts the workers its Deployment names, serves the API with the
 * token, lists the workers, reports metrics, and on SIGTERM drains and stops its workers. Plus the
 * offline `rollout validate` and bad-input paths (no server, no worker).
 */

import { existsSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it, vi } from "vitest";
import { encodeStatus } from "../../control-plane/src/api/errors.js";
import { ApiClient, decodeViolations } from "../../control-plane/src/api/index.js";
import type { ListWorkersResponse__Output } from "../../control-plane/src/gen/tardis/v1/ListWorkersResponse.js";
import { makeTemp, REPO_ROOT, removeTemp, runCli, waitFor, write } from "./harness.js";

vi.setConfig({ testTimeout: 180_000 });

const root = makeTemp();
afterAll(() => removeTemp(root));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("tardis rollout validate (offline)", () => {
  it("accepts the example rollout and rejects a malformed one with file:line:col (exit 2)", async () => {
    const ok = await runCli([
      "rollout",
      "validate",
      "-f",
      join(REPO_ROOT, "configs", "rollout.yaml"),
    ]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toContain("valid Rollout tiny-gpt2-tardis");
    const bad = write(
      root,
      "bad-rollout.yaml",
      [
        "apiVersion: tardis/v1",
        "kind: Rollout",
        "metadata: { name: x }",
        "spec:",
        "  baseline: a",
        "  candidate: b",
        "  steps:",
        "    - setWeight: 10",
        "    - analysis: { gates: [latency] }",
        "",
      ].join("\n"),
    );
    const r = await runCli(["rollout", "validate", "-f", bad]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${bad}:9:`);
    expect(r.stderr).toContain("spec.steps[1].analysis");
  });

  it("encodes field violations as google.rpc.BadRequest status details", () => {
    const bin = encodeStatus(3, "bad", [
      { field: "spec.steps[2].analysis.interval", description: "f.yaml:3:4: expected a duration" },
    ]);
    expect(decodeViolations(bin)).toEqual([
      { field: "spec.steps[2].analysis.interval", description: "f.yaml:3:4: expected a duration" },
    ]);
  });
});

describe("tardis serve", () => {
  it.skipIf(!existsSync(join(REPO_ROOT, ".venv", "bin", "python")))(
    "starts the Deployment's worker, serves the API with its token, drains on SIGTERM",
    async () => {
      const { spawn } = await import("node:child_process");
      const deployment = write(
        root,
        "deployment.yaml",
        [
          "apiVersion: tardis/v1",
          "kind: Deployment",
          "metadata: { name: serve-test }",
          "spec:",
          "  api:",
          "    listen: 127.0.0.1:0",
          `    auth: { tokenFile: ${write(root, "token", "file-token\n")} }`,
          "  workers:",
          "    - { name: cpu, device: cpu, listen: 127.0.0.1:0, count: 1 }",
          "",
        ].join("\n"),
      );
      const child = spawn(
        process.execPath,
        [
          join(REPO_ROOT, "control-plane", "bin", "tardis.js"),
          "--home",
          join(root, "home"),
          "serve",
          "-f",
          deployment,
          "--metrics-listen",
          "127.0.0.1:0",
          "--grace",
          "5",
        ],
        {
          cwd: REPO_ROOT,
          env: { ...process.env, TARDIS_WORKER: "" },
          stdio: ["ignore", "ignore", "pipe"],
        },
      );
      let stderr = "";
      child.stderr?.on("data", (d: Buffer) => {
        stderr += d.toString();
      });
      const exited = new Promise<number | null>((r) => child.on("close", (code) => r(code)));
      try {
        const address = await waitFor(
          "the API line",
          () => /API on (\S+?)[,\s]/.exec(stderr)?.[1],
          150_000,
        );
        const metrics = /metrics on (http:\/\/\S+\/metrics)/.exec(stderr)?.[1];
        expect(metrics).toBeDefined();
        const api = new ApiClient({ address, token: "file-token" });
        try {
          const workers = await waitFor(
            "a healthy worker",
            async () => {
              const r = await api.call<ListWorkersResponse__Output>("listWorkers", {});
              return r.workers[0]?.healthy ? r : undefined;
            },
            30_000,
          );
          expect(workers.workers).toHaveLength(1);
          expect(workers.workers[0]).toMatchObject({
            id: "cpu-0",
            healthy: true,
            state: "serving",
          });
          const pid = workers.workers[0]?.pid ?? 0;
          expect(pid).toBeGreaterThan(0);
          expect(alive(pid)).toBe(true);
          const text = await (await fetch(metrics as string)).text();
          expect(text).toContain('tardis_jobs{state="QUEUED"} 0');

          child.kill("SIGTERM");
          expect(await exited).toBe(0);
          await waitFor("the worker to stop", () => (alive(pid) ? undefined : true), 15_000);
        } finally {
          api.close();
        }
      } finally {
        child.kill("SIGKILL");
      }
    },
  );

  it("fails fast with exit 2 when the token variable is empty", async () => {
    const deployment = write(
      root,
      "no-token.yaml",
      [
        "apiVersion: tardis/v1",
        "kind: Deployment",
        "metadata: { name: t }",
        "spec:",
        "  api: { listen: 127.0.0.1:0, auth: { tokenEnv: TARDIS_TEST_EMPTY_TOKEN } }",
        "  workers: [{ name: cpu, listen: 127.0.0.1:0 }]",
        "",
      ].join("\n"),
    );
    const r = await runCli(["--home", join(root, "h2"), "serve", "-f", deployment], {
      TARDIS_TEST_EMPTY_TOKEN: "",
    });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("TARDIS_TEST_EMPTY_TOKEN");
  });
});
