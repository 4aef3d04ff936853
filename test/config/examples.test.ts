import { readdirSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { loadConfigFile } from "../../control-plane/src/config/index.js";

const CONFIGS = new URL("../../configs/", import.meta.url);
const EXAMPLES = readdirSync(CONFIGS).filter((name) => /\.ya?ml$/.test(name));
const SCHEMA_FILE = {
  CalibrationJob: "calibration-job.schema.json",
  Deployment: "deployment.schema.json",
  Rollout: "rollout.schema.json",
} as const;

describe("example configs in configs/", () => {
  it("include a calibration job, a deployment and a rollout", async () => {
    const kinds = new Set<string>();
    for (const name of EXAMPLES) {
      const result = await loadConfigFile(new URL(name, CONFIGS).pathname);
      if (result.ok) for (const loaded of result.documents) kinds.add(loaded.config.kind);
    }
    expect([...kinds].sort()).toEqual(["CalibrationJob", "Deployment", "Rollout"]);
    expect(EXAMPLES).toContain("quickstart.yaml");
  });

  it.each(EXAMPLES)("%s loads without errors", async (name) => {
    const result = await loadConfigFile(new URL(name, CONFIGS).pathname);
    expect(result.ok ? [] : result.errors.map(String)).toEqual([]);
  });

  it.each(EXAMPLES)("%s names the JSON Schema of its kind for editors", async (name) => {
    const result = await loadConfigFile(new URL(name, CONFIGS).pathname);
    const kind = result.ok ? result.documents[0]?.config.kind : undefined;
    expect(kind).toBeDefined();
    if (kind === undefined) return;
    const text = readFileSync(new URL(name, CONFIGS), "utf8");
    expect(text).toContain(
      `# yaml-language-server: $schema=../control-plane/schema/${SCHEMA_FILE[kind]}`,
    );
  });

  it("the quickstart compares against Wanda and keeps every method parameter at its default", async () => {
    const result = await loadConfigFile(new URL("quickstart.yaml", CONFIGS).pathname);
    const job = result.ok ? result.documents[0]?.config : undefined;
    expect(job?.kind).toBe("CalibrationJob");
    if (job?.kind !== "CalibrationJob") return;
    expect(job.spec.evaluation?.baselines).toContain("wanda");
    const { foldMethod } = await import("../../control-plane/src/config/schema/calibration-job.js");
    expect(job.spec.method).toEqual(foldMethod.parse({}));
  });
});
