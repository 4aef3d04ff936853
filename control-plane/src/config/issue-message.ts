/**
 * Zod issues in the words a config author needs: what was expected and what was found, e.g.
 * `expected a number > 0 and < 1, got 1.5`.
 */

import type { z } from "zod";
import { closestMatch } from "./suggest.js";

/** The message for one schema issue about `received` (the value found in the YAML). */
export function describeIssue(issue: z.core.$ZodIssue, received: unknown): string {
  switch (issue.code) {
    case "invalid_type":
      return `expected ${typeName(issue.expected)}, got ${describeValue(received)}`;
    case "invalid_value": {
      const options = issue.values.map((value) => JSON.stringify(value));
      const expected = options.length === 1 ? options[0] : `one of ${options.join(", ")}`;
      return `expected ${expected}, got ${describeValue(received)}${suggestion(received, issue.values)}`;
    }
    case "too_small":
      return `expected ${bound(issue.origin, issue.minimum, issue.inclusive ?? true, "min")}, got ${describeSize(issue.origin, received)}`;
    case "too_big":
      return `expected ${bound(issue.origin, issue.maximum, issue.inclusive ?? true, "max")}, got ${describeSize(issue.origin, received)}`;
    case "not_multiple_of":
      return `expected a multiple of ${issue.divisor}, got ${describeValue(received)}`;
    case "invalid_key":
      return issue.issues.map((inner) => inner.message).join("; ");
    default:
      // Refinements (custom, invalid_format) carry a message written in this style by the schema.
      return isScalar(received)
        ? `${issue.message}, got ${describeValue(received)}`
        : issue.message;
  }
}

/** A short description of a YAML value: `"text"`, `12`, `true`, `a mapping`, `a list`, `nothing`. */
export function describeValue(value: unknown): string {
  if (value === null || value === undefined) return "nothing";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "a mapping";
  if (typeof value === "string") {
    const text = value.length > 40 ? `${value.slice(0, 37)}...` : value;
    return `string ${JSON.stringify(text)}`;
  }
  return String(value);
}

function typeName(expected: string): string {
  switch (expected) {
    case "int":
      return "an integer";
    case "number":
      return "a number";
    case "string":
      return "a string";
    case "boolean":
      return "true or false";
    case "object":
    case "record":
    case "map":
      return "a mapping";
    case "array":
    case "tuple":
    case "set":
      return "a list";
    default:
      return expected;
  }
}

function bound(origin: string, limit: number | bigint, inclusive: boolean, side: "min" | "max") {
  const n = Number(limit);
  switch (origin) {
    case "string":
      if (side === "min" && n === 1) return "a non-empty string";
      return `${side === "min" ? "at least" : "at most"} ${n} characters`;
    case "array":
    case "set":
      if (side === "min" && n === 1) return "a non-empty list";
      return `${side === "min" ? "at least" : "at most"} ${n} items`;
    default: {
      const kind = origin === "int" ? "an integer" : "a number";
      const op = side === "min" ? (inclusive ? ">=" : ">") : inclusive ? "<=" : "<";
      return `${kind} ${op} ${n}`;
    }
  }
}

function describeSize(origin: string, received: unknown): string {
  if ((origin === "array" || origin === "set") && Array.isArray(received)) {
    return received.length === 1 ? "1 item" : `${received.length} items`;
  }
  return describeValue(received);
}

function isScalar(value: unknown): boolean {
  return value === null || (typeof value !== "object" && value !== undefined);
}

function suggestion(received: unknown, options: readonly unknown[]): string {
  if (typeof received !== "string") return "";
  const near = closestMatch(
    received,
    options.filter((option): option is string => typeof option === "string"),
  );
  return near === undefined ? "" : ` (did you mean ${JSON.stringify(near)}?)`;
}
