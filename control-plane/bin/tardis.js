#!/usr/bin/env node
// `tardis` entry point: runs the TypeScript sources through tsx's loader in this same process, so
// signals (Ctrl-C) reach the CLI directly and no build step is needed.
import { register } from "tsx/esm/api";

register();
await import("../src/cli/main.ts");
