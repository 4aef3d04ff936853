import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Two shared cores: keep the worker pool small so parallel suites do not starve each other.
    maxWorkers: 2,
  },
});
