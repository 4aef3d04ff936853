/**
 * Precedence: command-line flags > environment variables > YAML. Each overridable setting has one
 * entry in {@link OVERRIDES}, which is also its documentation: the flag, the variable, the key.
 */

import { ConfigError } from "./config-error.js";
import { describeIssue } from "./issue-message.js";
import { type KeyPath, pathsOverlap, setValueAt, toKeyPath, valueAt } from "./key-path.js";
import { type ConfigByKind, DOCUMENT_SCHEMAS, type Kind } from "./schema/index.js";

/** One setting that a flag or an environment variable can override. */
export interface Override {
  /** Kind of document it applies to. */
  readonly kind: Kind;
  /** Key in the flags record (commander's camelCase option name); the CLI flag is its kebab-case. */
  readonly option: string;
  /** Environment variable; an empty value counts as unset. */
  readonly env: string;
  /** Key path in the document that the value replaces. */
  readonly path: KeyPath;
  /** How a string from the environment or the command line is read before validation. */
  readonly type: "string" | "number" | "boolean";
  /** Builds the value stored at `path` (when it is not the raw value, e.g. an auth source). */
  readonly wrap?: (value: unknown) => unknown;
}

const method = (option: string, env: string, type: Override["type"]): Override => ({
  kind: "CalibrationJob",
  option,
  env,
  path: ["spec", "method", option],
  type,
});

/** Every override, by kind: the one table to document in the CLI's --help and the README. */
export const OVERRIDES: readonly Override[] = [
  {
    kind: "CalibrationJob",
    option: "modelPath",
    env: "TARDIS_MODEL_PATH",
    path: ["spec", "model", "path"],
    type: "string",
  },
  {
    kind: "CalibrationJob",
    option: "outputDir",
    env: "TARDIS_OUTPUT_DIR",
    path: ["spec", "output", "dir"],
    type: "string",
  },
  method("coverage", "TARDIS_COVERAGE", "number"),
  method("predictorBits", "TARDIS_PREDICTOR_BITS", "number"),
  method("predictorMethod", "TARDIS_PREDICTOR_METHOD", "string"),
  method("groupSize", "TARDIS_GROUP_SIZE", "number"),
  method("marginPolicy", "TARDIS_MARGIN_POLICY", "string"),
  method("targetRecall", "TARDIS_TARGET_RECALL", "number"),
  method("marginQuantile", "TARDIS_MARGIN_QUANTILE", "number"),
  method("bandTolerance", "TARDIS_BAND_TOLERANCE", "number"),
  method("foldFraction", "TARDIS_FOLD_FRACTION", "number"),
  method("calibTokens", "TARDIS_CALIB_TOKENS", "number"),
  method("heldoutTokens", "TARDIS_HELDOUT_TOKENS", "number"),
  method("seqLen", "TARDIS_SEQ_LEN", "number"),
  method("batchSize", "TARDIS_BATCH_SIZE", "number"),
  method("prefill", "TARDIS_PREFILL", "string"),
  method("histogramBins", "TARDIS_HISTOGRAM_BINS", "number"),
  method("clipSearch", "TARDIS_CLIP_SEARCH", "boolean"),
  {
    kind: "Deployment",
    option: "apiListen",
    env: "TARDIS_API_LISTEN",
    path: ["spec", "api", "listen"],
    type: "string",
  },
  {
    kind: "Deployment",
    option: "apiTokenEnv",
    env: "TARDIS_API_TOKEN_ENV",
    path: ["spec", "api", "auth"],
    type: "string",
    wrap: (value) => ({ tokenEnv: value }),
  },
  {
    kind: "Deployment",
    option: "apiTokenFile",
    env: "TARDIS_API_TOKEN_FILE",
    path: ["spec", "api", "auth"],
    type: "string",
    wrap: (value) => ({ tokenFile: value }),
  },
  {
    kind: "Deployment",
    option: "telemetryEndpoint",
    env: "TARDIS_TELEMETRY_ENDPOINT",
    path: ["spec", "telemetry", "endpoint"],
    type: "string",
  },
];

/** The long CLI flag of an override: `--api-listen` for option `apiListen`. */
export function flagName(override: Override): string {
  return `--${override.option.replace(/[A-Z]/g, (letter) => `-${letter.toLowerCase()}`)}`;
}

/** Where override values come from; both optional so callers pass only what they have. */
export interface OverrideSources {
  /** Parsed command-line options by camelCase name; undefined means "not given". */
  readonly flags?: Readonly<Record<string, string | number | boolean | undefined>>;
  /** Usually `process.env`, passed in so that this function stays pure. */
  readonly env?: Readonly<Record<string, string | undefined>>;
}

/** Which override set which key, for `--explain`-style output and logs. */
export interface AppliedOverride {
  readonly path: KeyPath;
  /** `--flag` or `$ENV_VAR`. */
  readonly source: string;
}

/** The overridden config, or errors that name the flag or variable at fault. */
export type OverrideResult<C> =
  | { readonly ok: true; readonly config: C; readonly applied: readonly AppliedOverride[] }
  | { readonly ok: false; readonly errors: readonly ConfigError[] };

/**
 * Apply flags and environment variables on top of a config loaded from YAML, then validate the
 * result with the same schema. The input is not modified.
 */
export function applyOverrides<K extends Kind>(
  config: ConfigByKind[K] & { kind: K },
  sources: OverrideSources,
): OverrideResult<ConfigByKind[K]> {
  const merged = structuredClone(config) as unknown as Record<string, unknown>;
  const applied: AppliedOverride[] = [];
  for (const override of OVERRIDES) {
    if (override.kind !== config.kind) continue;
    const flag = sources.flags?.[override.option];
    const env = sources.env?.[override.env];
    const [raw, source] =
      flag !== undefined
        ? [flag, flagName(override)]
        : env !== undefined && env !== ""
          ? [env, `$${override.env}`]
          : [undefined, ""];
    if (raw === undefined) continue;
    const value = readValue(raw, override.type);
    setValueAt(merged, override.path, override.wrap ? override.wrap(value) : value);
    applied.push({ path: override.path, source });
  }
  if (applied.length === 0) return { ok: true, config, applied };

  const schema = DOCUMENT_SCHEMAS[config.kind as K];
  const result = schema.safeParse(merged);
  if (result.success) return { ok: true, config: result.data as ConfigByKind[K], applied };
  const errors = result.error.issues.map((issue) => {
    const path = toKeyPath(issue.path);
    const culprit = [...applied].reverse().find((item) => pathsOverlap(item.path, path));
    const message = describeIssue(issue, valueAt(merged, path));
    return new ConfigError(culprit?.source ?? "overrides", 0, 0, path, message);
  });
  return { ok: false, errors };
}

/** Strings become numbers or booleans when they spell one; otherwise they stay strings for the
 * schema to reject with a clear message. */
function readValue(raw: string | number | boolean, type: Override["type"]): unknown {
  if (typeof raw !== "string") return raw;
  const text = raw.trim();
  if (type === "number" && text !== "" && Number.isFinite(Number(text))) return Number(text);
  if (type === "boolean" && (text === "true" || text === "false")) return text === "true";
  return raw;
}
