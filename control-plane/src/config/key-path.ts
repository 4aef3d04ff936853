/** Key paths into a document (mapping keys and list indexes), as schema errors report them. */

/** A path into a document: mapping keys and sequence indexes. */
export type KeyPath = readonly (string | number)[];

/** `spec.steps[2].pause` for ["spec", "steps", 2, "pause"]. */
export function formatKeyPath(path: KeyPath): string {
  let text = "";
  for (const part of path) {
    if (typeof part === "number") text += `[${part}]`;
    else text += text === "" ? part : `.${part}`;
  }
  return text;
}

/** A zod issue path as a KeyPath (zod allows symbols; configs never have them). */
export function toKeyPath(path: readonly PropertyKey[]): KeyPath {
  return path.map((part) => (typeof part === "symbol" ? String(part) : part));
}

/** The value at `path` in plain data, or undefined when the path leads nowhere. */
export function valueAt(data: unknown, path: KeyPath): unknown {
  let value = data;
  for (const part of path) {
    if (value === null || typeof value !== "object") return undefined;
    value = (value as Record<string | number, unknown>)[part];
  }
  return value;
}

/** Set the value at `path` in plain data (mutating it), creating mappings on the way. */
export function setValueAt(target: Record<string, unknown>, path: KeyPath, value: unknown): void {
  let node: Record<string | number, unknown> = target;
  path.forEach((part, index) => {
    if (index === path.length - 1) {
      node[part] = value;
      return;
    }
    const next = node[part];
    if (next === null || typeof next !== "object") node[part] = {};
    node = node[part] as Record<string | number, unknown>;
  });
}

/** Whether one path is a prefix of the other. */
export function pathsOverlap(a: KeyPath, b: KeyPath): boolean {
  const n = Math.min(a.length, b.length);
  return a.slice(0, n).every((part, index) => part === b[index]);
}
