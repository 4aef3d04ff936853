import { readdirSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { renderJsonSchemas } from "../../control-plane/src/config/index.js";

const SCHEMA_DIR = new URL("../../control-plane/schema/", import.meta.url);

interface JsonSchemaNode {
  description?: string;
  properties?: Record<string, JsonSchemaNode>;
  items?: JsonSchemaNode;
  oneOf?: JsonSchemaNode[];
  additionalProperties?: boolean | JsonSchemaNode;
  type?: string;
}

/** Every object node of a schema, with the path leading to it. */
function* objectNodes(node: JsonSchemaNode, path: string): Generator<[string, JsonSchemaNode]> {
  if (node.properties !== undefined) yield [path, node];
  for (const [key, child] of Object.entries(node.properties ?? {}))
    yield* objectNodes(child, `${path}.${key}`);
  if (node.items !== undefined) yield* objectNodes(node.items, `${path}[]`);
  for (const [i, option] of (node.oneOf ?? []).entries())
    yield* objectNodes(option, `${path}|${i}`);
}

describe("JSON Schemas for editors", () => {
  const rendered = renderJsonSchemas();

  it("the committed files in control-plane/schema are what `npm run schema` generates now", () => {
    const committed = readdirSync(SCHEMA_DIR)
      .filter((name) => name.endsWith(".json"))
      .sort();
    expect(committed, "run `npm run schema` and commit the result").toEqual(
      Object.keys(rendered).sort(),
    );
    for (const [name, text] of Object.entries(rendered)) {
      expect(
        readFileSync(new URL(name, SCHEMA_DIR), "utf8"),
        `${name} is stale: run \`npm run schema\``,
      ).toBe(text);
    }
  });

  it("reject unknown keys in every mapping, as the loader does", () => {
    for (const [name, text] of Object.entries(rendered)) {
      for (const [path, node] of objectNodes(JSON.parse(text), name)) {
        if (path.endsWith(".labels")) continue;
        expect(node.additionalProperties, path).toBe(false);
      }
    }
  });

  it("describe every key, so editors can show what it means", () => {
    for (const [name, text] of Object.entries(rendered)) {
      for (const [path, node] of objectNodes(JSON.parse(text), name)) {
        for (const [key, child] of Object.entries(node.properties ?? {})) {
          expect(child.description, `${path}.${key}`).toMatch(/\S/);
        }
      }
    }
  });
});
