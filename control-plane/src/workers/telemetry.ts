/**
 * ZeroMQ SUB side of the worker's telemetry (topics `job.<id>`, `engine.<variant_id>`): best-effort
 * live progress and fallback rates. Never a source of state (ARCHITECTURE.md): messages may be lost.
 */

import { Subscriber } from "zeromq";

/** One telemetry message: its topic, kind (event type) and the event's fields. */
export interface TelemetryMessage {
  readonly topic: string;
  readonly kind: string;
  readonly ts: number;
  readonly [field: string]: unknown;
}

/** A SUB socket connected to one worker's PUB endpoint. */
export class TelemetrySubscriber {
  private readonly socket = new Subscriber();
  private closed = false;

  /** Connect to `endpoint` (e.g. tcp://127.0.0.1:5555) and subscribe to each topic prefix. */
  constructor(endpoint: string, prefixes: readonly string[]) {
    this.socket.connect(endpoint);
    for (const prefix of prefixes) this.socket.subscribe(prefix);
  }

  /** Messages until {@link close}; a malformed message is skipped. */
  async *messages(): AsyncGenerator<TelemetryMessage> {
    while (!this.closed) {
      let frames: Buffer[];
      try {
        frames = await this.socket.receive();
      } catch {
        return; // closed while waiting
      }
      const [topic, body] = frames;
      if (topic === undefined || body === undefined) continue;
      try {
        const parsed = JSON.parse(body.toString("utf8")) as Record<string, unknown>;
        yield {
          ...parsed,
          topic: topic.toString("utf8"),
          kind: String(parsed.kind ?? ""),
          ts: Number(parsed.ts ?? 0),
        };
      } catch {}
    }
  }

  /** Close the socket; a pending {@link messages} iteration ends. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.close();
  }
}

/** Feed every message to `onMessage` in the background; returns a function that stops it. */
export function followTelemetry(
  endpoint: string,
  prefixes: readonly string[],
  onMessage: (message: TelemetryMessage) => void,
): () => void {
  const subscriber = new TelemetrySubscriber(endpoint, prefixes);
  void (async () => {
    for await (const message of subscriber.messages()) onMessage(message);
  })();
  return () => subscriber.close();
}
