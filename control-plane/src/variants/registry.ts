/**
 * Variants: immutable, content-addressed (id = the artifact's content hash from its manifest), with
 * lineage (the job that made them) and metrics. Registering the same artifact twice is a no-op.
 */

import type { Db } from "../store/database.js";

/** A registered variant. */
export interface Variant {
  readonly id: string;
  readonly name: string;
  readonly jobId: string;
  readonly path: string;
  readonly basePath: string;
  readonly family: string;
  readonly method: Record<string, unknown>;
  readonly metrics: Record<string, number>;
  /** The last evaluation's rows (dense, tardis, baselines). */
  readonly comparison: readonly Record<string, unknown>[];
  readonly state: string;
  readonly createdAt: string;
}

interface VariantRow {
  id: string;
  name: string;
  job_id: string;
  path: string;
  base_path: string;
  family: string;
  method: string;
  metrics: string;
  comparison: string;
  state: string;
  created_at: string;
}

function toVariant(row: VariantRow): Variant {
  return {
    id: row.id,
    name: row.name,
    jobId: row.job_id,
    path: row.path,
    basePath: row.base_path,
    family: row.family,
    method: JSON.parse(row.method) as Record<string, unknown>,
    metrics: JSON.parse(row.metrics) as Record<string, number>,
    comparison: JSON.parse(row.comparison) as Record<string, unknown>[],
    state: row.state,
    createdAt: row.created_at,
  };
}

/** What registration needs from a finished calibration. */
export interface NewVariant {
  readonly id: string;
  readonly name: string;
  readonly jobId: string;
  readonly path: string;
  readonly basePath: string;
  readonly family: string;
  readonly method: Record<string, unknown>;
  readonly metrics: Record<string, number>;
}

/** The variant registry over one database. */
export class VariantRegistry {
  constructor(private readonly db: Db) {}

  /** Register a variant; an id already present keeps its first registration (immutable). */
  register(v: NewVariant): { variant: Variant; created: boolean } {
    const result = this.db
      .prepare(
        `INSERT OR IGNORE INTO variants (id, name, job_id, path, base_path, family, method, metrics, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(
        v.id,
        v.name,
        v.jobId,
        v.path,
        v.basePath,
        v.family,
        JSON.stringify(v.method),
        JSON.stringify(v.metrics),
        new Date().toISOString(),
      );
    return { variant: this.mustGet(v.id), created: result.changes === 1 };
  }

  /** Merge an evaluation's metrics and comparison rows into a variant. */
  recordEvaluation(
    id: string,
    metrics: Record<string, number>,
    comparison: readonly Record<string, unknown>[],
  ): Variant {
    const v = this.mustGet(id);
    this.db
      .prepare("UPDATE variants SET metrics = ?, comparison = ? WHERE id = ?")
      .run(JSON.stringify({ ...v.metrics, ...metrics }), JSON.stringify(comparison), id);
    return this.mustGet(id);
  }

  /** The variant with this id, unique id prefix, or name (the newest of that name). */
  get(ref: string): Variant | undefined {
    const exact = this.db
      .prepare<[string], VariantRow>("SELECT * FROM variants WHERE id = ?")
      .get(ref);
    if (exact) return toVariant(exact);
    const byPrefix = this.db
      .prepare<[string], VariantRow>("SELECT * FROM variants WHERE id LIKE ? || '%' LIMIT 2")
      .all(ref);
    if (byPrefix.length === 1 && byPrefix[0]) return toVariant(byPrefix[0]);
    const byName = this.db
      .prepare<[string], VariantRow>(
        "SELECT * FROM variants WHERE name = ? ORDER BY created_at DESC LIMIT 1",
      )
      .get(ref);
    return byName ? toVariant(byName) : undefined;
  }

  private mustGet(id: string): Variant {
    const v = this.get(id);
    if (!v) throw new Error(`variant ${id} is not registered`);
    return v;
  }

  /** Every variant, newest first. */
  list(): Variant[] {
    return this.db
      .prepare<[], VariantRow>("SELECT * FROM variants ORDER BY created_at DESC, id")
      .all()
      .map(toVariant);
  }

  /** Remove a registration; true when it existed. */
  remove(id: string): boolean {
    return this.db.prepare("DELETE FROM variants WHERE id = ?").run(id).changes === 1;
  }
}
