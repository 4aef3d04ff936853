/**
 * Live job progress on stderr: the current pass as a bar and one bar per FFN layer with its
 * measured fallback rate and recall. Redrawn in place on a terminal, one line per change otherwise.
 * Fed by stored job events (authoritative) and ZeroMQ telemetry (earlier, best-effort).
 */

import { pct } from "./output.js";

interface LayerLine {
  layers: number;
  done: boolean;
  resumed: boolean;
  fallback?: number;
  recall?: number;
}

const BAR = 24;

function bar(fraction: number): string {
  const filled = Math.max(0, Math.min(BAR, Math.round(fraction * BAR)));
  return `[${"█".repeat(filled)}${"░".repeat(BAR - filled)}]`;
}

/** Progress of one job, drawn on a stream (stderr). */
export class ProgressView {
  private phase = "";
  private step = 0;
  private steps = 0;
  private readonly layers = new Map<number, LayerLine>();
  private layerCount = 0;
  private status = "";
  private drawn = 0;
  private lastDraw = 0;
  private readonly tty: boolean;

  constructor(
    private readonly title: string,
    private readonly out: NodeJS.WriteStream = process.stderr,
  ) {
    this.tty = Boolean(out.isTTY);
  }

  /** A job event (stored record data, or a telemetry message: same field names). */
  update(type: string, data: Record<string, unknown>): void {
    if (type === "progress") {
      const phase = String(data.phase ?? "");
      const step = Number(data.step ?? 0);
      const steps = Number(data.steps ?? 0);
      if (phase !== this.phase) {
        if (!this.tty && this.phase) this.line(`  ${this.phase} done`);
        this.phase = phase;
        this.step = 0;
        if (!this.tty) this.line(`  ${phase}: ${steps} step(s)`);
      }
      if (step < this.step) return; // a late telemetry message
      this.step = step;
      this.steps = steps;
    } else if (type === "layer") {
      const layer = Number(data.layer ?? 0);
      const layers = Number(data.layers ?? 0);
      const stats = (data.stats ?? {}) as Record<string, unknown>;
      this.layerCount = Math.max(this.layerCount, layers);
      if (this.layers.get(layer)?.done) return;
      const line: LayerLine = { layers, done: true, resumed: Boolean(data.resumed) };
      const fallback = stats.measured_fallback_rate ?? stats.measuredFallbackRate;
      const recall = stats.predictor_recall ?? stats.predictorRecall;
      if (typeof fallback === "number") line.fallback = fallback;
      if (typeof recall === "number") line.recall = recall;
      this.layers.set(layer, line);
      if (!this.tty) this.line(`  ${this.layerText(layer, line)}`);
    } else if (type === "state") {
      this.status = `${String(data.state)}${data.message ? ` (${String(data.message)})` : ""}`;
      if (!this.tty) this.line(`${this.title}: ${this.status}`);
    } else if (type === "started" && !this.tty && data.resumed) {
      this.line("  resuming from the worker's checkpoints");
    }
    this.draw();
  }

  private layerText(layer: number, line: LayerLine): string {
    const total = line.layers || this.layerCount;
    const head = `layer ${String(layer + 1).padStart(2)}/${total}`;
    if (!line.done) return `${head} ${bar(0)}`;
    const fallback = `fallback ${pct(line.fallback, 2)}`;
    const recall = `recall ${pct(line.recall, 2)}`;
    return `${head} ${bar(1)} ${fallback}  ${recall}${line.resumed ? "  (restored)" : ""}`;
  }

  private line(text: string): void {
    this.out.write(`${text}\n`);
  }

  private draw(force = false): void {
    if (!this.tty) return;
    const now = Date.now();
    if (!force && now - this.lastDraw < 100) return;
    this.lastDraw = now;
    const lines = [`${this.title}  ${this.status}`];
    if (this.phase) {
      const fraction = this.steps > 0 ? this.step / this.steps : 0;
      lines.push(`  ${this.phase.padEnd(10)} ${bar(fraction)} ${this.step}/${this.steps}`);
    }
    for (let i = 0; i < this.layerCount; i++) {
      lines.push(
        `  ${this.layerText(i, this.layers.get(i) ?? { layers: this.layerCount, done: false, resumed: false })}`,
      );
    }
    const up = this.drawn > 0 ? `\x1b[${this.drawn}A\x1b[0J` : "";
    this.out.write(`${up}${lines.join("\n")}\n`);
    this.drawn = lines.length;
  }

  /** Draw the final state. */
  finish(): void {
    this.draw(true);
  }
}
