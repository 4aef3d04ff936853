/** The config layer: schemas of every kind, the YAML loader, overrides and JSON Schema export. */

export { ConfigError, formatConfigErrors, sortConfigErrors } from "./config-error.js";
export { DURATION_PATTERN, durationToMs } from "./duration.js";
export { renderJsonSchemas } from "./json-schema.js";
export { formatKeyPath, type KeyPath } from "./key-path.js";
export { isLoopback, type ListenAddress, parseListenAddress } from "./listen-address.js";
export {
  documentsOfKind,
  type LoadedConfig,
  type LoadResult,
  loadConfigFile,
  type ParseOptions,
  parseConfigText,
} from "./load.js";
export {
  type AppliedOverride,
  applyOverrides,
  flagName,
  OVERRIDES,
  type Override,
  type OverrideResult,
  type OverrideSources,
} from "./overrides.js";
export { PATH_FIELDS, resolveConfigPaths } from "./resolve-paths.js";
export * from "./schema/index.js";
