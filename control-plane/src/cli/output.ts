/** How commands print: `-o table|json|yaml`, and NDJSON lines for `--watch`. */

import Table from "cli-table3";
import { stringify } from "yaml";
import { badInput } from "./exit-codes.js";

/** An output format. */
export type OutputFormat = "table" | "json" | "yaml";

/** Parse `-o`; anything else is bad input. */
export function outputFormat(value: string): OutputFormat {
  if (value === "table" || value === "json" || value === "yaml") return value;
  throw badInput(`-o ${value}: expected table, json or yaml`);
}

/** A table column: header and how to read a cell from a row. */
export interface Column<T> {
  readonly header: string;
  readonly cell: (row: T) => string;
}

/** Print rows as a table, or the objects themselves as JSON / YAML. */
export function printRows<T>(
  format: OutputFormat,
  rows: readonly T[],
  columns: readonly Column<T>[],
): void {
  if (format === "json") {
    process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
  } else if (format === "yaml") {
    process.stdout.write(stringify(rows));
  } else {
    const table = new Table({
      head: columns.map((c) => c.header),
      style: { head: [], border: [] },
    });
    for (const row of rows) table.push(columns.map((c) => c.cell(row)));
    process.stdout.write(`${table.toString()}\n`);
  }
}

/** Print one object: JSON / YAML as is, or key/value lines for `table`. */
export function printObject(format: OutputFormat, value: Record<string, unknown>): void {
  if (format === "json") {
    process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
  } else if (format === "yaml") {
    process.stdout.write(stringify(value));
  } else {
    const table = new Table({ style: { head: [], border: [] } });
    for (const [key, v] of flatten(value)) table.push({ [key]: v });
    process.stdout.write(`${table.toString()}\n`);
  }
}

/** One NDJSON line. */
export function printNdjson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

/** A fraction as a percentage ("12.3%"), "-" when unset. */
export function pct(value: unknown, digits = 1): string {
  return typeof value === "number" && Number.isFinite(value)
    ? `${(value * 100).toFixed(digits)}%`
    : "-";
}

/** A number with fixed digits, "-" when unset. */
export function num(value: unknown, digits = 2): string {
  return typeof value === "number" && Number.isFinite(value) ? value.toFixed(digits) : "-";
}

/** `key.sub` → printable value rows of a nested object (arrays stay JSON; numbers to 4 digits). */
function flatten(value: Record<string, unknown>, prefix = ""): [string, string][] {
  const rows: [string, string][] = [];
  for (const [key, v] of Object.entries(value)) {
    const name = `${prefix}${key}`;
    if (typeof v === "object" && v !== null && !Array.isArray(v)) {
      rows.push(...flatten(v as Record<string, unknown>, `${name}.`));
    } else if (typeof v === "number" && !Number.isInteger(v)) {
      rows.push([name, v.toPrecision(4)]);
    } else {
      rows.push([name, typeof v === "object" && v !== null ? JSON.stringify(v) : String(v ?? "")]);
    }
  }
  return rows;
}
