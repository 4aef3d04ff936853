/** The keys a schema allows at a key path, to tell the user what they could have written. */

import { z } from "zod";
import type { KeyPath } from "./key-path.js";

/** Keys of the mapping the schema expects at `path`, or undefined when no mapping is expected there. */
export function allowedKeysAt(schema: z.core.$ZodType, path: KeyPath): string[] | undefined {
  let node: z.core.$ZodType | undefined = unwrap(schema);
  for (const part of path) {
    if (node instanceof z.core.$ZodObject) {
      node = typeof part === "string" ? node._zod.def.shape[part] : undefined;
    } else if (node instanceof z.core.$ZodArray) {
      node = typeof part === "number" ? node._zod.def.element : undefined;
    } else if (node instanceof z.core.$ZodRecord) {
      node = node._zod.def.valueType;
    } else {
      return undefined;
    }
    if (node === undefined) return undefined;
    node = unwrap(node);
  }
  return node instanceof z.core.$ZodObject ? Object.keys(node._zod.def.shape) : undefined;
}

/** Strip wrappers that do not change which keys a mapping may hold. */
function unwrap(schema: z.core.$ZodType): z.core.$ZodType {
  let node = schema;
  for (;;) {
    if (
      node instanceof z.core.$ZodOptional ||
      node instanceof z.core.$ZodNullable ||
      node instanceof z.core.$ZodDefault ||
      node instanceof z.core.$ZodPrefault ||
      node instanceof z.core.$ZodReadonly
    ) {
      node = node._zod.def.innerType;
    } else if (node instanceof z.core.$ZodPipe) {
      node = node._zod.def.in;
    } else {
      return node;
    }
  }
}
