import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ConfigError,
  documentsOfKind,
  formatConfigErrors,
  type LoadResult,
  loadConfigFile,
  parseConfigText,
} from "../../control-plane/src/config/index.js";
import { CALIBRATION_HEAD, yamlLines } from "./yaml-text.js";

/** The errors of a result that must have failed, as `file:line:col: path: message` lines. */
function errorLines(result: LoadResult): string[] {
  if (result.ok) throw new Error("expected the config to be rejected, but it loaded");
  return result.errors.map(String);
}

function parse(...lines: string[]): string[] {
  return errorLines(parseConfigText(yamlLines(...lines), "job.yaml"));
}

describe("schema errors point at file:line:col and the key path", () => {
  it("a value of the wrong type is reported at the value", () => {
    expect(parse(...CALIBRATION_HEAD, "  method:", "    coverage: high")).toEqual([
      'job.yaml:11:15: spec.method.coverage: expected a number, got string "high"',
    ]);
  });

  it("an unknown key is reported at the key, with the keys that are allowed and a suggestion", () => {
    expect(parse(...CALIBRATION_HEAD, "  method:", "    seqLen: 128", "    covrage: 0.9")).toEqual([
      'job.yaml:12:5: spec.method.covrage: unknown key (did you mean "coverage"?); expected one of: ' +
        "coverage, predictorBits, predictorMethod, groupSize, marginPolicy, targetRecall, marginQuantile, bandTolerance, foldFraction, " +
        "calibTokens, heldoutTokens, seqLen, batchSize, prefill, histogramBins, clipSearch",
    ]);
  });

  it("a missing required key is reported at the mapping it belongs in", () => {
    expect(parse(...CALIBRATION_HEAD.slice(0, 7))).toEqual([
      "job.yaml:6:3: spec.dataset: missing required key (expected a mapping)",
    ]);
  });

  it("a missing key of a nested flow mapping is reported at that mapping's brace", () => {
    expect(
      parse(...CALIBRATION_HEAD.slice(0, 5), "  model: {}", ...CALIBRATION_HEAD.slice(7)),
    ).toEqual(["job.yaml:6:10: spec.model.path: missing required key (expected a string)"]);
  });

  it("an empty value is reported at its key", () => {
    expect(parse(...CALIBRATION_HEAD, "  output:", "    dir:")).toEqual([
      "job.yaml:11:5: spec.output.dir: expected a string, got nothing",
    ]);
  });

  it("a number out of range names the bound and the value found", () => {
    expect(parse(...CALIBRATION_HEAD, "  method: {coverage: 1.5, seqLen: 1.5}")).toEqual([
      "job.yaml:10:22: spec.method.coverage: expected a number < 1, got 1.5",
      "job.yaml:10:35: spec.method.seqLen: expected an integer, got 1.5",
    ]);
  });

  it("a value outside an enumeration lists the options and suggests the nearest", () => {
    expect(parse(...CALIBRATION_HEAD, "  method:", "    prefill: tardsi")).toEqual([
      'job.yaml:11:14: spec.method.prefill: expected one of "dense", "tardis", got string "tardsi" (did you mean "tardis"?)',
    ]);
  });

  it("a list item is named by its index", () => {
    expect(
      parse(
        ...CALIBRATION_HEAD,
        "  evaluation:",
        "    evalSet: {path: ./heldout.txt}",
        "    baselines:",
        "      - wanda",
        "      - sparsegpt",
      ),
    ).toEqual([
      'job.yaml:14:9: spec.evaluation.baselines[1]: expected one of "magnitude", "wanda", "ria", got string "sparsegpt"',
    ]);
  });

  it("a dataset given both as a path and as a builtin name is reported at the dataset mapping", () => {
    expect(
      parse(
        ...CALIBRATION_HEAD.slice(0, 8),
        "    path: ./calib.txt",
        "    builtin: tiny-shakespeare",
      ),
    ).toEqual(["job.yaml:9:5: spec.dataset: expected exactly one of: path, builtin"]);
  });
});

describe("anchors and aliases", () => {
  it("a key of an aliased mapping is reported in the anchor, a missing key at the alias", () => {
    expect(
      parse(
        ...CALIBRATION_HEAD,
        "  evaluation:",
        "    evalSet: &heldout {path: ./heldout.txt}",
        "    baselines: [wanda]",
        "  output: *heldout",
      ),
    ).toEqual([
      "job.yaml:11:24: spec.output.path: unknown key; expected one of: dir",
      "job.yaml:13:11: spec.output.dir: missing required key (expected a string)",
    ]);
  });
});

describe("YAML syntax errors point at file:line:col", () => {
  it("a key indented less than its siblings is a bad indentation at that key", () => {
    expect(parse(...CALIBRATION_HEAD.slice(0, 7), "   dataset:", "     builtin: x")).toEqual([
      "job.yaml:8:4: spec.dataset: bad indentation: all mapping items must start at the same column",
    ]);
  });

  it("a key indented deeper than its siblings is reported once, on its line", () => {
    expect(
      parse(...CALIBRATION_HEAD, "  method:", "    coverage: 0.9", "      seqLen: 128"),
    ).toEqual([
      "job.yaml:11:15: spec.method.coverage: invalid YAML: nested mappings are not allowed in compact mappings",
    ]);
  });

  it("a tab used as indentation is reported at the tab", () => {
    expect(parse(...CALIBRATION_HEAD, "  method:", "\tcoverage: 0.9")).toEqual([
      "job.yaml:11:1: invalid YAML: tabs are not allowed as indentation",
    ]);
  });

  it("an unclosed flow mapping is reported where the parser gave up", () => {
    expect(parse(...CALIBRATION_HEAD, "  method: {coverage: 0.9", "  output: {dir: x}")).toEqual([
      "job.yaml:11:3: spec.method: invalid YAML: flow map in block collection must be sufficiently indented and end with a }",
    ]);
  });

  it("a duplicate key is reported at its second occurrence", () => {
    expect(parse(...CALIBRATION_HEAD, "  model:", "    path: ./other")).toEqual([
      "job.yaml:10:3: spec.model: duplicate key (expected each key once per mapping)",
    ]);
  });
});

describe("apiVersion and kind are checked before the spec", () => {
  it("a wrong apiVersion is reported at its value", () => {
    expect(parse("apiVersion: tardis/v2", ...CALIBRATION_HEAD.slice(1))).toEqual([
      'job.yaml:1:13: apiVersion: expected "tardis/v1", got string "tardis/v2"',
    ]);
  });

  it("a misspelt kind is reported at its value with the kind it probably meant", () => {
    expect(parse(CALIBRATION_HEAD[0], "kind: Rollot", ...CALIBRATION_HEAD.slice(2))).toEqual([
      'job.yaml:2:7: kind: expected one of CalibrationJob, Deployment, Rollout, got string "Rollot" (did you mean Rollout?)',
    ]);
  });

  it("a missing kind is reported at the document's mapping", () => {
    expect(parse(CALIBRATION_HEAD[0], ...CALIBRATION_HEAD.slice(2))).toEqual([
      "job.yaml:1:1: kind: missing required key (expected one of CalibrationJob, Deployment, Rollout)",
    ]);
  });

  it("a document that is a list instead of a mapping is rejected at its start", () => {
    expect(parse("# a comment", "- apiVersion: tardis/v1")).toEqual([
      "job.yaml:2:1: expected a mapping with apiVersion, kind, metadata and spec, got a list",
    ]);
  });

  it("a file with no documents is an error at 1:1", () => {
    expect(parse("# only a comment")).toEqual([
      "job.yaml:1:1: expected a document with apiVersion: tardis/v1, kind, metadata and spec, got an empty file",
    ]);
  });
});

describe("cross-field rules report the field at fault", () => {
  it("a rollout whose candidate is its baseline is reported at the candidate", () => {
    expect(
      parse(
        "apiVersion: tardis/v1",
        "kind: Rollout",
        "metadata: {name: r}",
        "spec:",
        "  baseline: v1",
        "  candidate: v1",
        "  steps: [{setWeight: 100}]",
      ),
    ).toEqual([
      'job.yaml:6:14: spec.candidate: expected a candidate different from the baseline, got string "v1"',
    ]);
  });

  it("an analysis step naming a gate that is not configured is reported at that gate", () => {
    expect(
      parse(
        "apiVersion: tardis/v1",
        "kind: Rollout",
        "metadata: {name: r}",
        "spec:",
        "  baseline: v1",
        "  candidate: v2",
        "  steps:",
        "    - analysis: {gates: [errorRate, latency]}",
        "  gates:",
        "    errorRate: {max: 0.01}",
      ),
    ).toEqual([
      'job.yaml:8:37: spec.steps[0].analysis.gates[1]: expected a gate defined in spec.gates (errorRate), got string "latency"',
    ]);
  });

  it("a step with two actions is reported at the step", () => {
    expect(
      parse(
        "apiVersion: tardis/v1",
        "kind: Rollout",
        "metadata: {name: r}",
        "spec:",
        "  baseline: v1",
        "  candidate: v2",
        "  steps:",
        "    - setWeight: 10",
        "      pause: {duration: 1m}",
      ),
    ).toEqual(["job.yaml:8:7: spec.steps[0]: expected exactly one of: setWeight, pause, analysis"]);
  });

  it("worker pools whose port ranges overlap are reported at the later pool's address", () => {
    expect(
      parse(
        "apiVersion: tardis/v1",
        "kind: Deployment",
        "metadata: {name: d}",
        "spec:",
        "  workers:",
        "    - {name: a, listen: 127.0.0.1:50051, count: 2}",
        "    - {name: b, listen: 127.0.0.1:50052}",
      ),
    ).toEqual([
      'job.yaml:7:25: spec.workers[1].listen: expected ports no other pool uses (127.0.0.1:50052 belongs to pool "a"), got string "127.0.0.1:50052"',
    ]);
  });

  it("an API listening beyond loopback without auth is reported at the api mapping", () => {
    expect(
      parse(
        "apiVersion: tardis/v1",
        "kind: Deployment",
        "metadata: {name: d}",
        "spec:",
        "  api:",
        "    listen: 0.0.0.0:7070",
        "  workers: [{name: a, listen: 127.0.0.1:50051}]",
      ),
    ).toEqual([
      "job.yaml:6:5: spec.api: expected api.auth (tokenEnv or tokenFile): 0.0.0.0:7070 is not a loopback address",
    ]);
  });
});

describe("multi-document files", () => {
  const deployment = [
    "apiVersion: tardis/v1",
    "kind: Deployment",
    "metadata: {name: d}",
    "spec:",
    "  workers: [{name: cpu, listen: 127.0.0.1:50051}]",
  ];

  it("every document is loaded, in order, with the line it starts on", () => {
    const result = parseConfigText(
      yamlLines(...CALIBRATION_HEAD, "---", ...deployment),
      "all.yaml",
    );
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.documents.map((d) => [d.config.kind, d.index, d.line, d.col])).toEqual([
      ["CalibrationJob", 0, 1, 1],
      ["Deployment", 1, 11, 1],
    ]);
  });

  it("errors in several documents are all reported, in line order, with lines of the whole file", () => {
    const text = yamlLines(
      ...deployment.slice(0, 4),
      "  workers: [{name: cpu, listen: nowhere}]",
      "---",
      ...CALIBRATION_HEAD.slice(0, 8),
      "    bultin: tiny-shakespeare",
    );
    expect(errorLines(parseConfigText(text, "all.yaml"))).toEqual([
      'all.yaml:5:33: spec.workers[0].listen: expected host:port (e.g. "127.0.0.1:7070"), [ipv6]:port or unix:/path, got string "nowhere"',
      'all.yaml:15:5: spec.dataset.bultin: unknown key (did you mean "builtin"?); expected one of: path, builtin',
      "all.yaml:15:5: spec.dataset: expected exactly one of: path, builtin",
    ]);
  });

  it("a syntax error in one document does not hide schema errors in another", () => {
    const text = yamlLines(
      ...deployment,
      "---",
      ...CALIBRATION_HEAD,
      "  method: {seqLen: x",
      "x: 1",
    );
    expect(errorLines(parseConfigText(text, "all.yaml"))).toHaveLength(1);
    const text2 = yamlLines(
      ...deployment.slice(0, 4),
      "  workers: []",
      "---",
      ...CALIBRATION_HEAD,
      "  method: {seqLen: x",
      "x: 1",
    );
    expect(errorLines(parseConfigText(text2, "all.yaml"))).toEqual([
      "all.yaml:5:12: spec.workers: expected a non-empty list, got 0 items",
      "all.yaml:17:1: spec.method.seqLen: invalid YAML: flow map in block collection must be sufficiently indented and end with a }",
    ]);
  });

  it("empty documents between separators are skipped", () => {
    const result = parseConfigText(
      yamlLines("---", ...deployment, "---", "# nothing", "---"),
      "d.yaml",
    );
    expect(result.ok && result.documents.length).toBe(1);
  });

  it("documentsOfKind picks the documents a command wants and names the kinds found otherwise", () => {
    const result = parseConfigText(yamlLines(...deployment), "d.yaml");
    expect(errorLines(documentsOfKind(result, "CalibrationJob"))).toEqual([
      "d.yaml:1:1: kind: expected a document of kind CalibrationJob, found only Deployment",
    ]);
    const picked = documentsOfKind(result, "Deployment");
    expect(picked.ok && picked.documents[0]?.config.spec.workers[0]?.name).toBe("cpu");
  });
});

describe("errors are values", () => {
  it("each error carries file, line, col, path and message as fields", () => {
    const result = parseConfigText(
      yamlLines(...CALIBRATION_HEAD, "  method: {coverage: 0}"),
      "x.yaml",
    );
    expect(result.ok).toBe(false);
    if (result.ok) return;
    const [error] = result.errors;
    expect(error).toBeInstanceOf(ConfigError);
    expect({ ...error }).toEqual({
      file: "x.yaml",
      line: 10,
      col: 22,
      path: ["spec", "method", "coverage"],
      message: "expected a number > 0, got 0",
    });
  });

  it("formatConfigErrors prints one error per line", () => {
    const result = parseConfigText(yamlLines("kind: Deployment"), "x.yaml");
    expect(result.ok ? "" : formatConfigErrors(result.errors)).toBe(
      'x.yaml:1:1: apiVersion: missing required key (expected "tardis/v1")',
    );
  });
});

describe("loadConfigFile", () => {
  let dir = "";
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "tardis-config-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("reports an unreadable file as an error value that names the file and the reason", async () => {
    const missing = join(dir, "missing.yaml");
    expect(errorLines(await loadConfigFile(missing))).toEqual([
      `${missing}: cannot read the file (ENOENT)`,
    ]);
  });

  it("labels errors with the path it was given and resolves relative paths against the file's folder", async () => {
    const file = join(dir, "job.yaml");
    await writeFile(file, yamlLines(...CALIBRATION_HEAD));
    const result = await loadConfigFile(file);
    expect(result.ok && result.documents[0]?.config.kind === "CalibrationJob").toBe(true);
    if (!result.ok || result.documents[0]?.config.kind !== "CalibrationJob") return;
    expect(result.documents[0].config.spec.model.path).toBe(join(dir, "model"));

    await writeFile(file, yamlLines(...CALIBRATION_HEAD, "  extra: 1"));
    expect(errorLines(await loadConfigFile(file))[0]).toMatch(
      new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:10:3: spec.extra: unknown key;`),
    );
  });
});
