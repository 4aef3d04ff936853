/** Build YAML test inputs line by line, so that expected line numbers can be read off the test. */
export function yamlLines(...lines: string[]): string {
  return `${lines.join("\n")}\n`;
}

/** The header and a minimal valid spec of a CalibrationJob (lines 1–9). */
export const CALIBRATION_HEAD = [
  "apiVersion: tardis/v1",
  "kind: CalibrationJob",
  "metadata:",
  "  name: job",
  "spec:",
  "  model:",
  "    path: ./model",
  "  dataset:",
  "    builtin: tiny-shakespeare",
] as const;
