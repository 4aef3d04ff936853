/**
 * `tardis`: the control plane's command line. Every command exits with a documented code
 * (exit-codes.ts); errors are one actionable message on stderr.
 */

import { Command, CommanderError } from "commander";
import { registerCalibrate } from "./calibrate.js";
import { registerEval } from "./eval.js";
import { CliError, EXIT } from "./exit-codes.js";
import { registerGenerate } from "./generate.js";
import { registerJobs } from "./jobs.js";
import { registerQuickstart } from "./quickstart.js";
import { registerRollout } from "./rollout.js";
import { registerServe } from "./serve.js";
import { registerVariants } from "./variants.js";
import { registerWorker } from "./worker.js";

/** Run an action and exit with its code; CliError → its code, anything else → 1. */
async function run(action: () => Promise<number>): Promise<void> {
  let code: number;
  try {
    code = await action();
  } catch (error) {
    if (error instanceof CliError) {
      process.stderr.write(`tardis: ${error.message}\n`);
      code = error.exitCode;
    } else {
      process.stderr.write(`tardis: ${error instanceof Error ? error.message : String(error)}\n`);
      code = EXIT.FAILED;
    }
  }
  process.exitCode = code;
  // Sockets (gRPC channels, ZeroMQ) can hold the event loop open after the work is done.
  setTimeout(() => process.exit(code), 200).unref();
}

/** The program with every command registered. */
export function buildProgram(): Command {
  const program = new Command("tardis")
    .description(
      "TARDIS control plane: calibrate, evaluate and serve partially linear FFN variants",
    )
    .option(
      "--home <dir>",
      "state folder (jobs, variants, logs); default $TARDIS_HOME or <repo>/.tardis",
    )
    .option(
      "--worker <host:port>",
      "use this running worker instead of starting one ($TARDIS_WORKER)",
    )
    .option("-v, --verbose", "log to stderr instead of <home>/logs/tardis.log")
    .showHelpAfterError()
    .exitOverride();
  registerCalibrate(program, run);
  registerJobs(program, run);
  registerVariants(program, run);
  registerEval(program, run);
  registerGenerate(program, run);
  registerWorker(program, run);
  registerQuickstart(program, run);
  registerServe(program, run);
  registerRollout(program, run);
  return program;
}

// `tardis jobs ls | head`: a closed stdout ends the command quietly.
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code === "EPIPE") process.exit(EXIT.OK);
  throw error;
});

try {
  await buildProgram().parseAsync(process.argv);
} catch (error) {
  if (error instanceof CommanderError) {
    // --help and --version exit 0; unknown options or missing arguments are bad input.
    process.exit(error.exitCode === 0 ? EXIT.OK : EXIT.BAD_INPUT);
  }
  throw error;
}
