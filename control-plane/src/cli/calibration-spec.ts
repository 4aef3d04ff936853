/**
 * A CalibrationJob YAML → the worker requests it stands for, after the checks that must fail fast
 * (exit 2) before any worker is contacted: YAML errors with file:line:col, missing local paths.
 */

import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import {
  applyOverrides,
  type CalibrationJob,
  documentsOfKind,
  formatConfigErrors,
  loadConfigFile,
  OVERRIDES,
} from "../config/index.js";
import { badInput } from "./exit-codes.js";

/** What is stored as a calibration job's spec. */
export interface CalibrationJobSpec {
  readonly request: Record<string, unknown>;
  readonly variantName: string;
  readonly evaluation?: EvaluationPlan;
  readonly file: string;
}

/** The evaluation to run after a successful calibration. */
export interface EvaluationPlan {
  readonly dataset: Record<string, string>;
  readonly baselines: readonly string[];
}

/** Read and check a CalibrationJob file with flag and environment overrides; throws exit-2 errors. */
export async function loadCalibrationJob(
  file: string,
  flags: Record<string, string | number | boolean | undefined>,
): Promise<CalibrationJob> {
  const loaded = documentsOfKind(await loadConfigFile(file), "CalibrationJob");
  if (!loaded.ok) throw badInput(formatConfigErrors(loaded.errors));
  if (loaded.documents.length !== 1) {
    throw badInput(
      `${file}: expected one CalibrationJob document, found ${loaded.documents.length}`,
    );
  }
  const doc = loaded.documents[0];
  if (doc === undefined) throw badInput(`${file}: no CalibrationJob document`);
  // Paths given as flags are relative to the working directory (YAML paths: to the file).
  const resolved = { ...flags };
  for (const key of ["modelPath", "outputDir"]) {
    const value = resolved[key];
    if (typeof value === "string") resolved[key] = resolve(value);
  }
  const overridden = applyOverrides(doc.config, { flags: resolved, env: process.env });
  if (!overridden.ok) throw badInput(formatConfigErrors(overridden.errors));
  const job = overridden.config;
  checkLocalPaths(job);
  return job;
}

/** Missing local paths are bad input, named, before anything is started. */
export function checkLocalPaths(job: CalibrationJob): void {
  const model = job.spec.model.path;
  if (!existsSync(model)) {
    throw badInput(
      `spec.model.path: model path ${model} does not exist (expected a Hugging Face model folder)`,
    );
  }
  if (!existsSync(join(model, "config.json"))) {
    throw badInput(
      `spec.model.path: ${model} has no config.json (expected a Hugging Face model folder)`,
    );
  }
  for (const [key, source] of [
    ["spec.dataset.path", job.spec.dataset],
    ["spec.evaluation.evalSet.path", job.spec.evaluation?.evalSet],
  ] as const) {
    if (source?.path !== undefined && !existsSync(source.path)) {
      throw badInput(`${key}: dataset path ${source.path} does not exist`);
    }
  }
}

/** Flags that override CalibrationJob keys (the config layer's table), camelCase names. */
export const CALIBRATION_FLAGS = OVERRIDES.filter((o) => o.kind === "CalibrationJob");

function textSource(source: {
  path?: string | undefined;
  builtin?: string | undefined;
}): Record<string, string> {
  return source.path !== undefined ? { path: source.path } : { builtin: source.builtin ?? "" };
}

/** The stored spec of a calibration job: the Calibrate request (job id and resume are added per call). */
export function calibrationSpec(
  job: CalibrationJob,
  jobId: string,
  home: string,
  file: string,
): CalibrationJobSpec {
  const outputDir = job.spec.output?.dir ?? join(home, "variants");
  const evaluation = job.spec.evaluation;
  return {
    file,
    variantName: job.metadata.name,
    request: {
      model: { path: job.spec.model.path },
      dataset: textSource(job.spec.dataset),
      config: { ...job.spec.method },
      outputPath: join(outputDir, jobId),
    },
    ...(evaluation
      ? {
          evaluation: {
            dataset: textSource(evaluation.evalSet),
            baselines: [...evaluation.baselines],
          },
        }
      : {}),
  };
}
