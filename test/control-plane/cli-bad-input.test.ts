/** Bad input fails fast with exit code 2 and a message naming the place, before any worker starts. */

import { afterAll, describe, expect, it, vi } from "vitest";
import { Sandbox, TINY_GPT2, tinyJobYaml } from "./cli-harness.js";

// Each case starts the CLI (tsx transpiles on start): seconds on two busy cores.
vi.setConfig({ testTimeout: 60_000 });
const sandbox = new Sandbox();
afterAll(() => sandbox.cleanup());

describe("tardis calibrate with bad input", () => {
  it("a value of the wrong type exits 2 with file:line:col and the key", async () => {
    const file = sandbox.write(
      "wrong-type.yaml",
      tinyJobYaml({ name: "x", calibTokens: 2048, batchSize: 8 }).replace(
        "batchSize: 8",
        "batchSize: eight",
      ),
    );
    const r = await sandbox.run(["calibrate", "-f", file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${file}:14:16: spec.method.batchSize:`);
  });

  it("an unknown key exits 2 with file:line:col and a suggestion", async () => {
    const file = sandbox.write(
      "unknown-key.yaml",
      tinyJobYaml({ name: "x", calibTokens: 2048, batchSize: 8 }).replace("seqLen:", "seqLength:"),
    );
    const r = await sandbox.run(["calibrate", "-f", file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(
      new RegExp(
        `${file}:13:5: spec\\.method\\.seqLength: unknown key \\(did you mean "seqLen"\\?\\)`,
      ),
    );
  });

  it("bad indentation exits 2 with file:line:col of the YAML syntax error", async () => {
    const file = sandbox.write(
      "indent.yaml",
      tinyJobYaml({ name: "x", calibTokens: 2048, batchSize: 8 }).replace(
        "    builtin: lee",
        "  builtin: lee\n     oops: 1",
      ),
    );
    const r = await sandbox.run(["calibrate", "-f", file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(new RegExp(`${file.replace(/[.]/g, "\\.")}:\\d+:\\d+: `));
  });

  it("a missing model path exits 2 naming the path, and no job or worker is created", async () => {
    const missing = `${TINY_GPT2}-does-not-exist`;
    const file = sandbox.write(
      "missing-model.yaml",
      tinyJobYaml({ name: "x", calibTokens: 2048, batchSize: 8, modelPath: missing }),
    );
    const r = await sandbox.run(["calibrate", "-f", file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`model path ${missing} does not exist`);
    const jobs = await sandbox.run(["jobs", "ls", "-o", "json"]);
    expect(JSON.parse(jobs.stdout)).toEqual([]);
  });

  it("a missing model path given by --model-path is named too", async () => {
    const file = sandbox.write(
      "ok.yaml",
      tinyJobYaml({ name: "x", calibTokens: 2048, batchSize: 8 }),
    );
    const r = await sandbox.run(["calibrate", "-f", file, "--model-path", "no/such/model"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/model path \S*no\/such\/model does not exist/);
  });

  it("an unknown job id and an unknown -o format are bad input", async () => {
    expect((await sandbox.run(["jobs", "show", "no-such-job"])).code).toBe(2);
    expect((await sandbox.run(["jobs", "ls", "-o", "xml"])).code).toBe(2);
    expect((await sandbox.run(["no-such-command"])).code).toBe(2);
  });
});
