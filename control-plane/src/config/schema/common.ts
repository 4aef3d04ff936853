/** Building blocks shared by every kind: the document envelope, names, paths, durations. */

import { z } from "zod";
import { DURATION_PATTERN } from "../duration.js";
import { LISTEN_ADDRESS_PATTERN, parseListenAddress } from "../listen-address.js";

/** The only API version this control plane reads. */
export const API_VERSION = "tardis/v1";

/** The kinds of document, in the order they are documented. */
export const KINDS = ["CalibrationJob", "Deployment", "Rollout"] as const;

/** One of {@link KINDS}. */
export type Kind = (typeof KINDS)[number];

/** A lowercase DNS-label name (Kubernetes style): letters, digits and '-', at most 63 characters. */
export const objectName = z
  .string()
  .max(63)
  .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, {
    error: 'expected a lowercase name of letters, digits and "-" (e.g. "gpt2-quickstart")',
  });

/** A path on the control plane's machine; relative paths are relative to the YAML file's folder. */
export function localPath(what: string): z.ZodString {
  return z
    .string()
    .min(1)
    .describe(`${what} (a local path; a relative path is relative to this YAML file's folder)`);
}

const builtinName = z.string().regex(/^[a-z0-9][a-z0-9._-]*$/, {
  error: 'expected a builtin corpus name such as "tiny-shakespeare"',
});

const textChoice = exactlyOneOf(["path", "builtin"]);

/** Text given either as a local file or as the name of a corpus the worker ships. */
export function textSource(what: string) {
  return z
    .strictObject({
      path: localPath(`UTF-8 text file of ${what}`).optional(),
      builtin: builtinName
        .optional()
        .describe(`Name of a corpus of ${what} the worker ships (instead of \`path\`).`),
    })
    .refine(textChoice.check, { error: textChoice.error })
    .meta(textChoice.jsonSchema);
}

/** A duration string such as "30s", "10m", "1h30m", "500ms". */
export const duration = z.string().regex(DURATION_PATTERN, {
  error: 'expected a duration such as "30s", "10m", "1h30m" or "500ms"',
});

/** A gRPC listen address: host:port, [ipv6]:port or unix:/path; port 0 picks a free port. */
export const listenAddress = z
  .string()
  .regex(LISTEN_ADDRESS_PATTERN, {
    error: 'expected host:port (e.g. "127.0.0.1:7070"), [ipv6]:port or unix:/path',
    abort: true,
  })
  .refine((text) => parseListenAddress(text) !== undefined, { error: "expected a port <= 65535" });

/** `metadata` of every document. */
export const metadata = z
  .strictObject({
    name: objectName.describe("Name of this object, unique among objects of its kind."),
    labels: z
      .record(z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._/-]*$/), z.string())
      .optional()
      .describe("Free-form key/value labels, recorded with the object."),
    description: z.string().optional().describe("One line on what this object is for."),
  })
  .describe("Identity of the object.");

/**
 * A refinement plus JSON Schema hint for an object of optional keys of which exactly one must be
 * set (e.g. a dataset given by `path` or by `builtin`).
 */
export function exactlyOneOf<const K extends string>(keys: readonly K[]) {
  const list = keys.join(", ");
  return {
    check: (value: Partial<Record<K, unknown>>): boolean =>
      keys.filter((key) => value[key] !== undefined).length === 1,
    error: `expected exactly one of: ${list}`,
    jsonSchema: { oneOf: keys.map((key) => ({ required: [key] })) },
  };
}

/** Like {@link exactlyOneOf}, but one or more of the keys must be set. */
export function atLeastOneOf<const K extends string>(keys: readonly K[]) {
  return {
    check: (value: Partial<Record<K, unknown>>): boolean =>
      keys.some((key) => value[key] !== undefined),
    error: `expected at least one of: ${keys.join(", ")}`,
    jsonSchema: { anyOf: keys.map((key) => ({ required: [key] })) },
  };
}

/** The envelope every document shares: apiVersion, kind, metadata, spec. */
export function document<const K extends Kind, S extends z.ZodType>(kind: K, spec: S) {
  return z.strictObject({
    apiVersion: z.literal(API_VERSION).describe(`Always "${API_VERSION}".`),
    kind: z.literal(kind).describe(`Always "${kind}".`),
    metadata,
    spec,
  });
}
