/**
 * Errors in config files are values, each pointing at one place: `file:line:col: key.path: message`.
 */

import { formatKeyPath, type KeyPath } from "./key-path.js";

/** One problem in a config file, with the position of the node it is about (1-based). */
export class ConfigError {
  /**
   * @param file the file name as given to the loader (or a pseudo-source such as `env:NAME`)
   * @param line 1-based line, or 0 when the error is about the whole source (e.g. unreadable file)
   * @param col 1-based column, or 0 with line 0
   * @param path key path in the document, empty for the document itself or a syntax error
   * @param message what was expected (and what was found)
   */
  constructor(
    readonly file: string,
    readonly line: number,
    readonly col: number,
    readonly path: KeyPath,
    readonly message: string,
  ) {}

  /** `file:line:col: key.path: message` (parts that are unknown are left out). */
  toString(): string {
    const where = this.line > 0 ? `${this.file}:${this.line}:${this.col}` : this.file;
    const key = formatKeyPath(this.path);
    return key === "" ? `${where}: ${this.message}` : `${where}: ${key}: ${this.message}`;
  }
}

/** Errors in reading order: by file, then line, then column. */
export function sortConfigErrors(errors: readonly ConfigError[]): ConfigError[] {
  return [...errors].sort(
    (a, b) => a.file.localeCompare(b.file) || a.line - b.line || a.col - b.col,
  );
}

/** One error per line, as a CLI prints them. */
export function formatConfigErrors(errors: readonly ConfigError[]): string {
  return errors.map((error) => error.toString()).join("\n");
}
