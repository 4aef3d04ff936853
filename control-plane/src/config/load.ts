/**
 * Read YAML config files (one or more documents each) into typed, validated configs, or into
 * errors that point at `file:line:col`.
 */

import { readFile } from "node:fs/promises";
import { dirname } from "node:path";
import { type Document, isMap, LineCounter, parseAllDocuments, type YAMLError } from "yaml";
import type { z } from "zod";
import { ConfigError, sortConfigErrors } from "./config-error.js";
import { describeIssue, describeValue } from "./issue-message.js";
import { type KeyPath, toKeyPath, valueAt } from "./key-path.js";
import { resolveConfigPaths } from "./resolve-paths.js";
import {
  API_VERSION,
  type ConfigByKind,
  DOCUMENT_SCHEMAS,
  KINDS,
  type Kind,
  type TardisConfig,
} from "./schema/index.js";
import { allowedKeysAt } from "./schema-keys.js";
import { closestMatch } from "./suggest.js";
import { isMissingKey, locate, type Position, pathAtOffset, positionOf } from "./yaml-locate.js";

/** One validated document and where it starts. */
export interface LoadedConfig<C extends TardisConfig = TardisConfig> {
  readonly config: C;
  readonly file: string;
  /** 0-based index of the document in its file (documents are separated by `---`). */
  readonly index: number;
  readonly line: number;
  readonly col: number;
}

/** Every document of a source, or every error found in it (never both). */
export type LoadResult<C extends TardisConfig = TardisConfig> =
  | { readonly ok: true; readonly documents: readonly LoadedConfig<C>[] }
  | { readonly ok: false; readonly errors: readonly ConfigError[] };

/**
 * Read and validate a config file; relative paths in it become absolute, resolved against the
 * file's folder. I/O problems come back as an error value, not an exception.
 */
export async function loadConfigFile(file: string): Promise<LoadResult> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    const reason = error instanceof Error && "code" in error ? String(error.code) : String(error);
    return {
      ok: false,
      errors: [new ConfigError(file, 0, 0, [], `cannot read the file (${reason})`)],
    };
  }
  return parseConfigText(text, file, { baseDir: dirname(file) });
}

/** Options of {@link parseConfigText}. */
export interface ParseOptions {
  /** Resolve relative local paths against this folder; left as written when absent. */
  readonly baseDir?: string;
}

/** Validate YAML text; `file` labels positions. Empty documents are skipped. */
export function parseConfigText(
  text: string,
  file: string,
  options: ParseOptions = {},
): LoadResult {
  const lines = new LineCounter();
  const parsed = parseAllDocuments(text, { lineCounter: lines, prettyErrors: false });
  const docs: Document[] = Array.isArray(parsed) ? parsed : [];
  const documents: LoadedConfig[] = [];
  const errors: ConfigError[] = [];
  docs.forEach((doc, index) => {
    const outcome = validateDocument({ doc, text, file, lines }, index);
    if (outcome === undefined) return;
    if (Array.isArray(outcome)) errors.push(...outcome);
    else if (options.baseDir === undefined) documents.push(outcome);
    else
      documents.push({ ...outcome, config: resolveConfigPaths(outcome.config, options.baseDir) });
  });
  if (errors.length > 0) return { ok: false, errors: sortConfigErrors(errors) };
  if (documents.length === 0) {
    const message = `expected a document with apiVersion: ${API_VERSION}, kind, metadata and spec, got an empty file`;
    return { ok: false, errors: [new ConfigError(file, 1, 1, [], message)] };
  }
  return { ok: true, documents };
}

/**
 * The documents of one kind (e.g. `tardis calibrate` wants CalibrationJobs); an error at the first
 * document when the source has none of that kind.
 */
export function documentsOfKind<K extends Kind>(
  result: LoadResult,
  kind: K,
): LoadResult<ConfigByKind[K]> {
  if (!result.ok) return result;
  const matching = result.documents.filter(
    (loaded): loaded is LoadedConfig<ConfigByKind[K]> => loaded.config.kind === kind,
  );
  if (matching.length > 0) return { ok: true, documents: matching };
  const found = [...new Set(result.documents.map((loaded) => loaded.config.kind))].join(", ");
  const message = `expected a document of kind ${kind}, found only ${found}`;
  const first = result.documents[0];
  const error = new ConfigError(
    first?.file ?? "",
    first?.line ?? 0,
    first?.col ?? 0,
    ["kind"],
    message,
  );
  return { ok: false, errors: [error] };
}

interface Source {
  readonly doc: Document;
  readonly text: string;
  readonly file: string;
  readonly lines: LineCounter;
}

/** A config, errors, or undefined for an empty document. */
function validateDocument(source: Source, index: number): LoadedConfig | ConfigError[] | undefined {
  const { doc } = source;
  const syntax = [...doc.errors, ...doc.warnings];
  if (syntax.length > 0) {
    // One broken line often yields several parser errors; the first one on a line is enough.
    const errors = syntax.map((error) => syntaxError(source, error));
    return errors.filter((error, i) => errors.findIndex((e) => e.line === error.line) === i);
  }
  if (doc.contents === null) return undefined;
  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: 100 });
  } catch (error) {
    return [errorAt(source, [], `cannot read the document: ${String(error)}`)];
  }
  if (data === null || data === undefined) return undefined;
  const start = positionOf({ value: doc.contents, key: null }, source.lines) ?? { line: 1, col: 1 };

  if (!isMap(doc.contents) || typeof data !== "object" || Array.isArray(data)) {
    const message = `expected a mapping with apiVersion, kind, metadata and spec, got ${describeValue(data)}`;
    return [new ConfigError(source.file, start.line, start.col, [], message)];
  }
  const fields = data as Record<string, unknown>;
  const kind = checkEnvelope(source, fields);
  if (Array.isArray(kind)) return kind;

  const schema = DOCUMENT_SCHEMAS[kind];
  const result = schema.safeParse(data);
  if (!result.success) {
    return result.error.issues.flatMap((issue) => issueErrors(source, schema, fields, issue));
  }
  return { config: result.data, file: source.file, index, line: start.line, col: start.col };
}

/** apiVersion and kind first: without them the rest cannot be checked against the right schema. */
function checkEnvelope(source: Source, data: Record<string, unknown>): Kind | ConfigError[] {
  const errors: ConfigError[] = [];
  const { apiVersion, kind } = data;
  if (apiVersion === undefined) {
    errors.push(
      errorAt(source, ["apiVersion"], `missing required key (expected "${API_VERSION}")`, "parent"),
    );
  } else if (apiVersion !== API_VERSION) {
    const message = `expected "${API_VERSION}", got ${describeValue(apiVersion)}`;
    errors.push(errorAt(source, ["apiVersion"], message));
  }
  const kinds: readonly string[] = KINDS;
  const expected = `one of ${KINDS.join(", ")}`;
  if (kind === undefined) {
    errors.push(errorAt(source, ["kind"], `missing required key (expected ${expected})`, "parent"));
  } else if (typeof kind !== "string" || !kinds.includes(kind)) {
    const near = typeof kind === "string" ? closestMatch(kind, KINDS) : undefined;
    const hint = near === undefined ? "" : ` (did you mean ${near}?)`;
    errors.push(
      errorAt(source, ["kind"], `expected ${expected}, got ${describeValue(kind)}${hint}`),
    );
  }
  return errors.length > 0 ? errors : (kind as Kind);
}

/** One error per problem, each placed on the node it is about. */
function issueErrors(
  source: Source,
  schema: z.core.$ZodType,
  data: unknown,
  issue: z.core.$ZodIssue,
): ConfigError[] {
  const path = toKeyPath(issue.path);

  if (issue.code === "unrecognized_keys") {
    const allowed = allowedKeysAt(schema, path) ?? [];
    return issue.keys.map((key) => {
      const near = closestMatch(key, allowed);
      const hint = near === undefined ? "" : ` (did you mean "${near}"?)`;
      const message = `unknown key${hint}; expected one of: ${allowed.join(", ")}`;
      return errorAt(source, [...path, key], message, "key");
    });
  }

  const parent = path.slice(0, -1);
  const last = path[path.length - 1];
  if (
    issue.code === "invalid_type" &&
    last !== undefined &&
    isMissingKey(source.doc, parent, last)
  ) {
    // A missing key has no node of its own: point at the mapping it belongs in.
    const expected = describeIssue(issue, undefined).replace(/, got nothing$/, "");
    return [errorAt(source, path, `missing required key (${expected})`, "parent")];
  }
  return [errorAt(source, path, describeIssue(issue, valueAt(data, path)))];
}

/**
 * An error about `path`, placed at its value (or its key, or its parent mapping); a path that is
 * not in the document is placed at its nearest ancestor that is.
 */
function errorAt(
  source: Source,
  path: KeyPath,
  message: string,
  anchor: "value" | "key" | "parent" = "value",
): ConfigError {
  let at: Position | undefined;
  let prefix = anchor === "parent" ? path.slice(0, -1) : path;
  while (at === undefined) {
    const found = locate(source.doc, prefix);
    if (found !== undefined) {
      const node = anchor === "key" && found.key !== null ? { value: found.key, key: null } : found;
      at = positionOf(node, source.lines);
    }
    if (at === undefined) {
      if (prefix.length === 0) break;
      prefix = prefix.slice(0, -1);
    }
  }
  const { line, col } = at ?? { line: 1, col: 1 };
  return new ConfigError(source.file, line, col, path, message);
}

/** A YAML syntax error, placed on its first non-blank character, with the key path around it. */
function syntaxError(source: Source, error: YAMLError): ConfigError {
  let offset = error.pos[0];
  while (source.text[offset] === " ") offset++;
  const { line, col } = source.lines.linePos(offset);
  const path = pathAtOffset(source.doc, offset);
  return new ConfigError(source.file, line, col, path, syntaxMessage(error));
}

/** The parser's message, with a plainer lead for the common mistakes. */
function syntaxMessage(error: YAMLError): string {
  const detail = error.message.charAt(0).toLowerCase() + error.message.slice(1);
  if (error.code === "DUPLICATE_KEY") return "duplicate key (expected each key once per mapping)";
  if (/same column/.test(error.message)) return `bad indentation: ${detail}`;
  return `invalid YAML: ${detail}`;
}
