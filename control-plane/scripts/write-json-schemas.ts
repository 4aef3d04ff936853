/** Regenerate control-plane/schema/*.json from the zod schemas (`npm run schema`). */

import { mkdir, readdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { JSON_SCHEMA_DIR, renderJsonSchemas } from "../src/config/json-schema.js";

const files = renderJsonSchemas();
await mkdir(JSON_SCHEMA_DIR, { recursive: true });
for (const stale of await readdir(JSON_SCHEMA_DIR)) {
  if (stale.endsWith(".json") && !(stale in files)) await rm(join(JSON_SCHEMA_DIR, stale));
}
for (const [name, text] of Object.entries(files)) {
  await writeFile(join(JSON_SCHEMA_DIR, name), text);
  console.log(`wrote ${join(JSON_SCHEMA_DIR, name)}`);
}
