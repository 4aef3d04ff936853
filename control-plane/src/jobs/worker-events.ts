/** Worker JobEvent messages → the plain records the job store keeps (no grpc objects stored). */

import type { JobEvent__Output } from "../gen/tardis/v1/JobEvent.js";
import type { Metrics__Output } from "../gen/tardis/v1/Metrics.js";

/** Metrics that are set, as numbers (int64 fields arrive as strings). */
export function metricsOf(metrics: Metrics__Output | null | undefined): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [key, value] of Object.entries(metrics ?? {})) {
    if (key.startsWith("_") || value === undefined || value === null) continue;
    const n = Number(value);
    if (Number.isFinite(n)) out[key] = n;
  }
  return out;
}

/** The message's set fields (proto-loader's `_name` oneof markers and nulls dropped). */
export function setFields(message: object | null | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(message ?? {})) {
    if (key.startsWith("_") || value === undefined || value === null) continue;
    // int64 fields arrive as decimal strings (longs: String); they are counts, fine as numbers.
    out[key] = typeof value === "string" && /^-?\d+$/.test(value) ? Number(value) : value;
  }
  return out;
}

/** The stored form of a worker event: its type and a small JSON payload. */
export function eventRecord(
  event: JobEvent__Output,
  attempt: number,
): { type: string; data: Record<string, unknown> } {
  const type = event.event ?? "unknown";
  const base = { attempt, workerSeq: Number(event.seq) };
  switch (type) {
    case "layer": {
      const layer = event.layer;
      return {
        type,
        data: {
          ...base,
          layer: layer?.layer,
          layers: layer?.layers,
          resumed: layer?.resumed,
          stats: setFields(layer?.stats),
        },
      };
    }
    case "completed": {
      const done = event.completed;
      const manifest = done?.manifest;
      return {
        type,
        data: {
          ...base,
          variantId: manifest?.variantId || undefined,
          path: manifest?.path || undefined,
          metrics: metricsOf(done?.metrics),
          comparison: (done?.comparison ?? []).map(setFields),
        },
      };
    }
    default:
      return { type, data: { ...base, ...setFields(event[type as "progress"]) } };
  }
}
