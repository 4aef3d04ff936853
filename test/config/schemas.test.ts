import { existsSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import {
  durationToMs,
  isLoopback,
  parseConfigText,
  parseListenAddress,
} from "../../control-plane/src/config/index.js";
import { foldMethod } from "../../control-plane/src/config/schema/calibration-job.js";
import { seededRandom } from "./seeded-random.js";
import { CALIBRATION_HEAD, yamlLines } from "./yaml-text.js";

const PYTHON_FOLD_CONFIG = new URL("../../python-worker/tardis/config.py", import.meta.url);

/** Field defaults of the Python FoldConfig dataclass, read from its source, camelCased. */
function pythonFoldDefaults(): Record<string, unknown> {
  const source = readFileSync(PYTHON_FOLD_CONFIG, "utf8");
  // The class body: from the line after `class FoldConfig` to the next unindented line.
  const afterClass = source.split(/^class FoldConfig\b.*$/m)[1] ?? "";
  const body = afterClass.split(/^\S/m)[0] ?? "";
  const defaults: Record<string, unknown> = {};
  for (const match of body.matchAll(/^ {4}(\w+): [^=\n]+ = (.+)$/gm)) {
    const [, name = "", raw = ""] = match;
    const camel = name.replace(/_(\w)/g, (_, letter: string) => letter.toUpperCase());
    const value = raw.trim();
    defaults[camel] =
      value === "True" || value === "False"
        ? value === "True"
        : /^["']/.test(value)
          ? value.slice(1, -1)
          : Number(value);
  }
  return defaults;
}

describe("CalibrationJob method parameters", () => {
  it("are filled with the documented defaults when spec.method is absent", () => {
    const result = parseConfigText(yamlLines(...CALIBRATION_HEAD), "job.yaml");
    expect(result.ok).toBe(true);
    if (!result.ok || result.documents[0]?.config.kind !== "CalibrationJob") return;
    expect(result.documents[0].config.spec.method).toEqual({
      coverage: 0.85,
      predictorBits: 2,
      predictorMethod: "gptq",
      groupSize: 128,
      marginPolicy: "recall",
      targetRecall: 0.997,
      marginQuantile: 0.999,
      foldFraction: 1.0,
      calibTokens: 32768,
      heldoutTokens: 4096,
      seqLen: 256,
      batchSize: 8,
      prefill: "dense",
      histogramBins: 512,
      clipSearch: true,
      bandTolerance: 2.0,
    });
  });

  it.skipIf(!existsSync(PYTHON_FOLD_CONFIG))(
    "have the same names and defaults as the Python tardis.FoldConfig",
    () => {
      const python = pythonFoldDefaults();
      expect(Object.keys(python).length).toBeGreaterThan(5);
      expect(foldMethod.parse({})).toEqual(python);
    },
  );

  it("accept a coverage exactly when it lies strictly between 0 and 1 (random values, fixed seed)", () => {
    const random = seededRandom(20240601);
    for (let i = 0; i < 300; i++) {
      const coverage = random() * 1.6 - 0.3;
      const accepted = foldMethod.safeParse({ coverage }).success;
      expect(accepted, `coverage ${coverage}`).toBe(coverage > 0 && coverage < 1);
    }
    expect(foldMethod.safeParse({ coverage: 0 }).success).toBe(false);
    expect(foldMethod.safeParse({ coverage: 1 }).success).toBe(false);
  });

  it("accept only 2, 3 or 4 predictor bits and integer token counts", () => {
    expect(
      [1, 2, 3, 4, 5, 8].map((bits) => foldMethod.safeParse({ predictorBits: bits }).success),
    ).toEqual([false, true, true, true, false, false]);
    expect(foldMethod.safeParse({ calibTokens: 1024.5 }).success).toBe(false);
    expect(foldMethod.safeParse({ calibTokens: 15 }).success).toBe(false);
    expect(foldMethod.safeParse({ marginQuantile: 1 }).success).toBe(false);
    expect(foldMethod.safeParse({ foldFraction: 0 }).success).toBe(true);
  });
});

describe("durations", () => {
  it("convert every combination of h, m, s and ms to milliseconds (random values, fixed seed)", () => {
    const random = seededRandom(7);
    const draw = (max: number) => Math.floor(random() * max);
    for (let i = 0; i < 200; i++) {
      const parts = { h: draw(3), m: draw(90), s: draw(90), ms: draw(1500) };
      const used = (["h", "m", "s", "ms"] as const).filter(() => random() < 0.6);
      if (used.length === 0) continue;
      const text = used.map((unit) => `${parts[unit]}${unit}`).join("");
      const factor = { h: 3_600_000, m: 60_000, s: 1000, ms: 1 };
      const expected = used.reduce((sum, unit) => sum + parts[unit] * factor[unit], 0);
      expect(durationToMs(text), text).toBe(expected);
    }
  });

  it("reject strings without a unit, out of order or empty", () => {
    for (const text of ["", "10", "10 m", "1s1m", "m", "1d", "-1s"]) {
      expect(() => durationToMs(text), JSON.stringify(text)).toThrow(RangeError);
    }
  });
});

describe("listen addresses", () => {
  it("parse host:port, [ipv6]:port and unix:path and reject ports above 65535", () => {
    expect(parseListenAddress("127.0.0.1:7070")).toEqual({
      kind: "tcp",
      host: "127.0.0.1",
      port: 7070,
    });
    expect(parseListenAddress("[::1]:0")).toEqual({ kind: "tcp", host: "[::1]", port: 0 });
    expect(parseListenAddress("unix:/run/tardis.sock")).toEqual({
      kind: "unix",
      path: "/run/tardis.sock",
    });
    expect(parseListenAddress("localhost:65536")).toBeUndefined();
    expect(parseListenAddress("7070")).toBeUndefined();
  });

  it("count loopback hosts and unix sockets as local, and anything else as exposed", () => {
    const local = (text: string) => {
      const address = parseListenAddress(text);
      return address !== undefined && isLoopback(address);
    };
    expect(["127.0.0.1:1", "127.8.9.1:1", "localhost:1", "[::1]:1", "unix:/x"].every(local)).toBe(
      true,
    );
    expect(["0.0.0.0:1", "10.0.0.5:1", "[::]:1", "example.org:1"].some(local)).toBe(false);
  });
});
