/**
 * JSON Schemas of the config kinds for editors (e.g. yaml-language-server's
 * `# yaml-language-server: $schema=…` comment). Generated from the zod schemas, never hand-edited:
 * `npm run schema` writes them to control-plane/schema/, and a test checks they are current.
 */

import { z } from "zod";
import { calibrationJobDocument } from "./schema/calibration-job.js";
import { deploymentDocument } from "./schema/deployment.js";
import { rolloutDocument } from "./schema/rollout.js";

/** Folder (relative to the repository root) the schema files are written to. */
export const JSON_SCHEMA_DIR = "control-plane/schema";

const anyDocument = z
  .discriminatedUnion("kind", [calibrationJobDocument, deploymentDocument, rolloutDocument])
  .describe("Any TARDIS config document (CalibrationJob, Deployment or Rollout).");

const FILES = {
  "calibration-job.schema.json": { title: "TARDIS CalibrationJob", schema: calibrationJobDocument },
  "deployment.schema.json": { title: "TARDIS Deployment", schema: deploymentDocument },
  "rollout.schema.json": { title: "TARDIS Rollout", schema: rolloutDocument },
  "tardis.schema.json": { title: "TARDIS config (any kind)", schema: anyDocument },
} as const;

/** File name → file text, for every schema file. Pure: the caller writes them. */
export function renderJsonSchemas(): Record<string, string> {
  const files: Record<string, string> = {};
  for (const [name, { title, schema }] of Object.entries(FILES)) {
    // The input side: keys with defaults are optional for the author of a YAML file.
    const json = z.toJSONSchema(schema, { io: "input", target: "draft-2020-12" });
    const { $schema, ...rest } = json;
    files[name] = `${JSON.stringify({ $schema, title, ...rest }, null, 2)}\n`;
  }
  return files;
}
