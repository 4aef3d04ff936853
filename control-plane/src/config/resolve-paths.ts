/**
 * Relative paths in a config file are relative to the file's folder (so a config works from any
 * working directory). This makes them absolute.
 */

import { isAbsolute, resolve } from "node:path";
import { type KeyPath, setValueAt, valueAt } from "./key-path.js";
import type { Kind, TardisConfig } from "./schema/index.js";

/** Key paths of every local-path field, by kind (keep in step with `localPath(...)` in schema/). */
export const PATH_FIELDS: { readonly [K in Kind]: readonly KeyPath[] } = {
  CalibrationJob: [
    ["spec", "model", "path"],
    ["spec", "dataset", "path"],
    ["spec", "output", "dir"],
    ["spec", "evaluation", "evalSet", "path"],
  ],
  Deployment: [
    ["spec", "api", "auth", "tokenFile"],
    ["spec", "api", "tls", "certFile"],
    ["spec", "api", "tls", "keyFile"],
  ],
  Rollout: [["spec", "gates", "accuracy", "evalSet", "path"]],
};

/** A copy of `config` with each relative local path resolved against `baseDir`. */
export function resolveConfigPaths<C extends TardisConfig>(config: C, baseDir: string): C {
  const copy = structuredClone(config);
  for (const path of PATH_FIELDS[config.kind]) {
    const value = valueAt(copy, path);
    if (typeof value === "string" && !isAbsolute(value)) {
      setValueAt(copy as unknown as Record<string, unknown>, path, resolve(baseDir, value));
    }
  }
  return copy;
}
