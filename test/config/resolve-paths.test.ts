import { describe, expect, it } from "vitest";
import {
  formatKeyPath,
  PATH_FIELDS,
  parseConfigText,
  renderJsonSchemas,
  resolveConfigPaths,
} from "../../control-plane/src/config/index.js";
import { CALIBRATION_HEAD, yamlLines } from "./yaml-text.js";

/** Key paths of every field whose description says it is a local path, from the JSON Schema. */
function describedPathFields(schema: unknown, path: string[] = []): string[] {
  if (schema === null || typeof schema !== "object") return [];
  const node = schema as { description?: string; properties?: Record<string, unknown> };
  const here = node.description?.includes("(a local path") ? [formatKeyPath(path)] : [];
  const below = Object.entries(node.properties ?? {}).flatMap(([key, child]) =>
    describedPathFields(child, [...path, key]),
  );
  return [...here, ...below];
}

describe("relative paths", () => {
  it("are resolved against the config file's folder, and absolute paths are kept", () => {
    const result = parseConfigText(
      yamlLines(
        ...CALIBRATION_HEAD.slice(0, 7),
        "  dataset: {path: ../data/calib.txt}",
        "  output: {dir: /var/tardis}",
      ),
      "job.yaml",
      { baseDir: "/home/me/configs" },
    );
    const job = result.ok ? result.documents[0]?.config : undefined;
    expect(job?.kind).toBe("CalibrationJob");
    if (job?.kind !== "CalibrationJob") return;
    expect(job.spec.model.path).toBe("/home/me/configs/model");
    expect(job.spec.dataset.path).toBe("/home/me/data/calib.txt");
    expect(job.spec.output?.dir).toBe("/var/tardis");
  });

  it("are left as written when no folder is given", () => {
    const result = parseConfigText(yamlLines(...CALIBRATION_HEAD), "job.yaml");
    const job = result.ok ? result.documents[0]?.config : undefined;
    expect(job?.kind === "CalibrationJob" && job.spec.model.path).toBe("./model");
    if (job !== undefined) expect(resolveConfigPaths(job, "/x")).not.toBe(job);
  });

  it("PATH_FIELDS lists exactly the fields the schema documents as local paths", () => {
    const schemas = renderJsonSchemas();
    const files = {
      CalibrationJob: "calibration-job.schema.json",
      Deployment: "deployment.schema.json",
      Rollout: "rollout.schema.json",
    } as const;
    for (const [kind, file] of Object.entries(files) as [keyof typeof files, string][]) {
      const documented = describedPathFields(JSON.parse(schemas[file] ?? "{}")).sort();
      expect(documented, kind).toEqual(PATH_FIELDS[kind].map(formatKeyPath).sort());
    }
  });
});
