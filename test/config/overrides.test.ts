import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import {
  applyOverrides,
  type Deployment,
  flagName,
  formatKeyPath,
  OVERRIDES,
  parseConfigText,
  type TardisConfig,
} from "../../control-plane/src/config/index.js";
import { DOCUMENT_SCHEMAS } from "../../control-plane/src/config/schema/index.js";
import { allowedKeysAt } from "../../control-plane/src/config/schema-keys.js";
import { CALIBRATION_HEAD, yamlLines } from "./yaml-text.js";

function load(...lines: string[]): TardisConfig {
  const result = parseConfigText(yamlLines(...lines), "x.yaml");
  if (!result.ok || result.documents[0] === undefined) throw new Error("test config must be valid");
  return result.documents[0].config;
}

const deployment = load(
  "apiVersion: tardis/v1",
  "kind: Deployment",
  "metadata: {name: d}",
  "spec:",
  "  api: {listen: 127.0.0.1:7000, auth: {tokenEnv: MY_TOKEN}}",
  "  workers: [{name: cpu, listen: 127.0.0.1:50051}]",
) as Deployment;

describe("flags > environment > YAML", () => {
  it("YAML values stand when neither a flag nor a variable is set", () => {
    const result = applyOverrides(deployment, { flags: {}, env: {} });
    expect(result.ok && result.config).toEqual(deployment);
    expect(result.ok && result.applied).toEqual([]);
  });

  it("an environment variable overrides the YAML value", () => {
    const result = applyOverrides(deployment, { env: { TARDIS_API_LISTEN: "127.0.0.1:7100" } });
    expect(result.ok && result.config.spec.api.listen).toBe("127.0.0.1:7100");
    expect(result.ok && result.applied).toEqual([
      { path: ["spec", "api", "listen"], source: "$TARDIS_API_LISTEN" },
    ]);
  });

  it("a flag overrides both the environment and the YAML value", () => {
    const result = applyOverrides(deployment, {
      flags: { apiListen: "127.0.0.1:7200" },
      env: { TARDIS_API_LISTEN: "127.0.0.1:7100" },
    });
    expect(result.ok && result.config.spec.api.listen).toBe("127.0.0.1:7200");
  });

  it("an empty environment variable counts as unset", () => {
    const result = applyOverrides(deployment, { env: { TARDIS_API_LISTEN: "" } });
    expect(result.ok && result.config.spec.api.listen).toBe("127.0.0.1:7000");
  });

  it("a token file from the environment replaces the YAML's token variable as the one auth source", () => {
    const result = applyOverrides(deployment, { env: { TARDIS_API_TOKEN_FILE: "/run/token" } });
    expect(result.ok && result.config.spec.api.auth).toEqual({ tokenFile: "/run/token" });
  });

  it("numbers and booleans from the environment are read as such for the method parameters", () => {
    const job = load(...CALIBRATION_HEAD);
    const result = applyOverrides(job, {
      env: { TARDIS_COVERAGE: "0.85", TARDIS_CLIP_SEARCH: "false" },
      flags: { predictorBits: "3" },
    });
    expect(result.ok).toBe(true);
    if (!result.ok || result.config.kind !== "CalibrationJob") return;
    expect(result.config.spec.method).toMatchObject({
      coverage: 0.85,
      clipSearch: false,
      predictorBits: 3,
    });
  });

  it("the config passed in is not modified", () => {
    const before = structuredClone(deployment);
    applyOverrides(deployment, { flags: { apiListen: "127.0.0.1:1" } });
    expect(deployment).toEqual(before);
  });

  it("a flag creates a section the YAML left out", () => {
    const job = load(...CALIBRATION_HEAD);
    const result = applyOverrides(job, { flags: { outputDir: "/tmp/variants" } });
    expect(
      result.ok && result.config.kind === "CalibrationJob" && result.config.spec.output,
    ).toEqual({
      dir: "/tmp/variants",
    });
  });
});

describe("invalid overrides are errors that name the flag or variable", () => {
  it("a malformed value from the environment names the variable and the key", () => {
    const result = applyOverrides(load(...CALIBRATION_HEAD), { env: { TARDIS_COVERAGE: "most" } });
    expect(result.ok ? [] : result.errors.map(String)).toEqual([
      '$TARDIS_COVERAGE: spec.method.coverage: expected a number, got string "most"',
    ]);
  });

  it("a flag that breaks a cross-field rule is named as its cause", () => {
    const open = applyOverrides(
      load(
        "apiVersion: tardis/v1",
        "kind: Deployment",
        "metadata: {name: d}",
        "spec:",
        "  workers: [{name: cpu, listen: 127.0.0.1:50051}]",
      ),
      { flags: { apiListen: "0.0.0.0:7070" } },
    );
    expect(open.ok ? [] : open.errors.map(String)).toEqual([
      "--api-listen: spec.api: expected api.auth (tokenEnv or tokenFile): 0.0.0.0:7070 is not a loopback address",
    ]);
  });
});

describe("the override table", () => {
  it("names a TARDIS_ variable and a distinct flag for each setting", () => {
    const envs = OVERRIDES.map((override) => override.env);
    const flags = OVERRIDES.map((override) => `${override.kind} ${flagName(override)}`);
    expect(envs.every((name) => /^TARDIS_[A-Z0-9_]+$/.test(name))).toBe(true);
    expect(new Set(envs).size).toBe(envs.length);
    expect(new Set(flags).size).toBe(flags.length);
    const listen = OVERRIDES.find((override) => override.env === "TARDIS_API_LISTEN");
    expect(listen && flagName(listen)).toBe("--api-listen");
  });

  it("points every override at a key its kind's schema has", () => {
    for (const override of OVERRIDES) {
      const parent = override.path.slice(0, -1);
      const key = String(override.path[override.path.length - 1]);
      expect(allowedKeysAt(DOCUMENT_SCHEMAS[override.kind], parent), override.env).toContain(key);
    }
  });

  it("is documented row by row in control-plane/README.md", () => {
    const readme = readFileSync(new URL("../../control-plane/README.md", import.meta.url), "utf8");
    const rows = readme
      .split("\n")
      .filter((line) => line.includes("`TARDIS_"))
      .map((line) => line.split("|").map((cell) => cell.trim()));
    expect(rows).toHaveLength(OVERRIDES.length);
    for (const override of OVERRIDES) {
      const row = rows.find((cells) => cells[3] === `\`${override.env}\``);
      expect(row?.slice(1, 4), override.env).toEqual([
        override.kind,
        `\`${flagName(override)}\``,
        `\`${override.env}\``,
      ]);
      expect(row?.[4], override.env).toContain(`\`${formatKeyPath(override.path)}\``);
    }
  });
});
