/**
 * Find where a key path lives in a parsed YAML document, so that schema errors (which know only the
 * path) can name a line and column.
 */

import {
  type Document,
  isAlias,
  isMap,
  isPair,
  isScalar,
  isSeq,
  type LineCounter,
  type Node,
  type Pair,
} from "yaml";
import type { KeyPath } from "./key-path.js";

/** A 1-based position in the source. */
export interface Position {
  readonly line: number;
  readonly col: number;
}

/** What sits at a key path: the value node, and the pair's key node when the parent is a mapping. */
export interface Located {
  readonly value: Node | null;
  readonly key: Node | null;
}

/** The node at `path`, or undefined when some part of the path is not in the document. */
export function locate(doc: Document, path: KeyPath): Located | undefined {
  let current: Located = { value: doc.contents, key: null };
  for (const part of path) {
    const node = deref(doc, current.value);
    if (isMap(node)) {
      const pair = node.items.find((item) => keyText(item) === String(part));
      if (pair === undefined) return undefined;
      current = { value: asNode(pair.value), key: asNode(pair.key) };
    } else if (isSeq(node) && typeof part === "number") {
      const item = node.items[part];
      if (item === undefined) return undefined;
      current = { value: asNode(item), key: null };
    } else {
      return undefined;
    }
  }
  return current;
}

/** Whether the mapping at `parentPath` lacks `key` (so a schema error there is a missing key). */
export function isMissingKey(doc: Document, parentPath: KeyPath, key: string | number): boolean {
  const parent = locate(doc, parentPath);
  if (parent === undefined) return false;
  const node = deref(doc, parent.value);
  return isMap(node) && !node.items.some((item) => keyText(item) === String(key));
}

/** Start position of a node; for an empty value (`key:` with nothing after) the key's position. */
export function positionOf(located: Located, lines: LineCounter): Position | undefined {
  const { value, key } = located;
  const range = value?.range;
  const hasText = range !== undefined && range !== null && range[1] > range[0];
  const node = hasText ? value : (key ?? value);
  const offset = node?.range?.[0];
  return offset === undefined ? undefined : lines.linePos(offset);
}

/**
 * Key path of the innermost node containing `offset` (for syntax errors, which know only an
 * offset). Stops at the deepest mapping key or sequence item that spans the offset, or above a
 * key that cannot be a config key.
 */
export function pathAtOffset(doc: Document, offset: number): (string | number)[] {
  const path: (string | number)[] = [];
  let node: unknown = doc.contents;
  for (;;) {
    if (isMap(node)) {
      const pair = node.items.find((item) => spans(item, offset));
      const key = pair === undefined ? undefined : keyText(pair);
      // A key with spaces is usually broken YAML read as one long key: stop above it.
      if (pair === undefined || key === undefined || /\s/.test(key)) return path;
      path.push(key);
      node = pair.value;
    } else if (isSeq(node)) {
      const index = node.items.findIndex((item) => spans(item, offset));
      if (index < 0) return path;
      path.push(index);
      node = node.items[index];
    } else {
      return path;
    }
  }
}

function spans(item: unknown, offset: number): boolean {
  if (isPair(item)) {
    const start = asNode(item.key)?.range?.[0];
    const value = asNode(item.value);
    const end = value?.range?.[2] ?? asNode(item.key)?.range?.[2];
    return start !== undefined && end !== undefined && start <= offset && offset <= end;
  }
  const range = asNode(item)?.range;
  return range !== undefined && range !== null && range[0] <= offset && offset <= range[2];
}

function keyText(pair: Pair<unknown, unknown>): string | undefined {
  const key = pair.key;
  if (isScalar(key)) return String(key.value);
  return typeof key === "string" || typeof key === "number" ? String(key) : undefined;
}

function asNode(value: unknown): Node | null {
  return isAlias(value) || isScalar(value) || isMap(value) || isSeq(value) ? (value as Node) : null;
}

function deref(doc: Document, node: Node | null): Node | null {
  return isAlias(node) ? asNode(node.resolve(doc)) : node;
}
