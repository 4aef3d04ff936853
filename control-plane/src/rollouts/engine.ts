/**
 * The rollout driver: the thin, effectful shell around the pure machine (machine.ts). For every
 * event it reads the rollout, runs the transition, **commits the new state first**, and only then
 * performs the actions — load a variant (VariantLoader), route traffic (TrafficTarget), take a
 * measurement (Measurements) — whose results come back as further events. Transitions run one at
 * a time, so concurrent API calls and effect results never interleave.
 */

import type { Rollout } from "../config/index.js";
import type { TrafficSplit } from "../router/split.js";
import { RolloutError } from "./errors.js";
import type { Action, RolloutState, Transition } from "./machine.js";
import * as machine from "./machine.js";
import type { GateSample, MeasurementQuery, Measurements } from "./measurements.js";
import { type RolloutSpec, revisionOf } from "./revision.js";
import { type RolloutStatus, toStatus } from "./status.js";
import type {
  RevisionRecord,
  RolloutStore,
  StoredDecision,
  StoredHistoryEntry,
  StoredRollout,
} from "./store.js";

/** Loads a variant on the workers that will serve it; resolves once it can take traffic. */
export interface VariantLoader {
  load(variantId: string): Promise<void>;
}

/** Where traffic splits go (the Router); throws when it cannot serve a split. */
export interface TrafficTarget {
  applySplit(rollout: string, split: TrafficSplit): void;
}

/** Milliseconds since the epoch; tests pass a manual clock. */
export interface Clock {
  now(): number;
}

/** What changed in one committed transition, for watchers (API streams, metrics). */
export interface RolloutChange {
  readonly status: RolloutStatus;
  readonly history: readonly machine.HistoryEntry[];
  readonly decisions: readonly machine.Decision[];
}

/** Dependencies of a {@link RolloutEngine}. */
export interface RolloutEngineOptions {
  readonly store: RolloutStore;
  readonly loader: VariantLoader;
  readonly traffic: TrafficTarget;
  readonly measurements: Measurements;
  readonly clock?: Clock;
  /** Errors of background work (a transition that could not be committed); default: ignored. */
  readonly onError?: (error: unknown) => void;
}

/** Longest sleep of the background timer, so a wrong wall clock cannot stall a rollout. */
const MAX_SLEEP_MS = 60_000;

/** Runs rollouts: apply, operator commands, timers, recovery after a restart. */
export class RolloutEngine {
  private readonly store: RolloutStore;
  private readonly clock: Clock;
  private chain: Promise<unknown> = Promise.resolve();
  private readonly inFlight = new Set<Promise<unknown>>();
  private readonly listeners = new Set<(change: RolloutChange) => void>();
  private timer: NodeJS.Timeout | undefined;
  private running = false;

  constructor(private readonly options: RolloutEngineOptions) {
    this.store = options.store;
    this.clock = options.clock ?? { now: () => Date.now() };
  }

  /**
   * Apply a validated Rollout document: record its revision and start it. Re-applying the
   * revision that is already progressing, paused or promoted changes nothing; applying it after
   * an abort retries it; a different spec replaces the running one from its first step.
   */
  async apply(doc: Rollout): Promise<RolloutStatus> {
    const name = doc.metadata.name;
    const now = this.clock.now();
    const revision = revisionOf(name, doc.spec);
    this.store.putRevision(name, revision, doc.spec, now);
    const state = await this.transition(name, (stored) => {
      const current = stored?.state;
      const live = current?.phase !== "ABORTED" && current?.phase !== "DEGRADED";
      if (current !== undefined && current.revision === revision && live) return unchanged(current);
      return machine.startRollout(name, revision, doc.spec, now, current);
    });
    return this.toStatus(state);
  }

  /** After a restart: reload variants, re-route traffic and continue every rollout where it was. */
  async recover(): Promise<void> {
    for (const name of this.store.names()) {
      await this.transition(name, (stored, spec) =>
        machine.recover(required(stored, name).state, spec, this.clock.now()),
      );
    }
  }

  /**
   * Handle everything due by now (timed pauses, measurements, watch windows), then settle. One
   * rollout's failure does not hold up the others, and the timer is always re-armed: a timer can
   * fire a little before the wall-clock time it was set for (the event loop's cached clock lags
   * when the process is busy), and a tick that found nothing due must still wake up again.
   */
  async tick(): Promise<void> {
    try {
      for (const name of this.store.names()) {
        const wake = machine.wakeAt(required(this.store.get(name), name).state);
        if (wake === null || wake > this.clock.now()) continue;
        await this.transition(name, (stored, spec) =>
          machine.tick(required(stored, name).state, spec, this.clock.now()),
        ).catch((error: unknown) => this.options.onError?.(error));
      }
    } finally {
      this.schedule();
    }
    await this.idle();
  }

  /** Hold a progressing rollout until {@link resume}. */
  async pause(name: string, message?: string): Promise<RolloutStatus> {
    return this.command(name, (state, spec, now) => machine.pause(state, spec, now, message));
  }

  /** Continue a paused rollout. */
  async resume(name: string): Promise<RolloutStatus> {
    return this.command(name, machine.resume);
  }

  /** Skip the remaining steps and promote the candidate. */
  async promote(name: string): Promise<RolloutStatus> {
    return this.command(name, machine.promote);
  }

  /** Send all traffic back to the baseline and stop. */
  async abort(name: string, message?: string): Promise<RolloutStatus> {
    return this.command(name, (state, spec, now) => machine.abort(state, spec, now, message));
  }

  /**
   * Serve an earlier revision's candidate again, at once (after loading it). `ref` is a revision
   * hash, a unique prefix of one, or its number ("2" or "r2"); it must have been promoted.
   */
  async rollback(name: string, ref: string): Promise<RolloutStatus> {
    this.statusOf(name);
    const target = this.store.findRevision(name, ref);
    if (target === undefined) {
      const known = this.store
        .revisions(name)
        .map((r) => `r${r.number} (${r.revision})`)
        .join(", ");
      throw new RolloutError(
        "NOT_FOUND",
        `rollout ${name} has no revision ${ref}; known: ${known}`,
      );
    }
    if (target.promotedAt === null) {
      throw new RolloutError(
        "FAILED_PRECONDITION",
        `revision r${target.number} (${target.revision}) of ${name} was never promoted; apply it instead`,
      );
    }
    const state = await this.transition(name, (stored) =>
      machine.rollbackTo(name, target.revision, target.spec, this.clock.now(), stored?.state),
    );
    return this.toStatus(state);
  }

  /** The status of one rollout; NOT_FOUND when there is none by that name. */
  status(name: string): RolloutStatus {
    return this.statusOf(name);
  }

  /** The status of every rollout, by name. */
  list(): RolloutStatus[] {
    return this.store.names().map((name) => this.statusOf(name));
  }

  /** Every revision of a rollout, oldest first. */
  revisions(name: string): RevisionRecord[] {
    this.statusOf(name);
    return this.store.revisions(name);
  }

  /** Phase, step and weight changes of a rollout, oldest first (after `afterSeq`). */
  history(name: string, afterSeq?: number): StoredHistoryEntry[] {
    this.statusOf(name);
    return this.store.history(name, afterSeq);
  }

  /** The decision log: every gate evaluation with measured values, thresholds and outcome. */
  decisions(name: string, options?: { revision?: string; afterSeq?: number }): StoredDecision[] {
    this.statusOf(name);
    return this.store.decisions(name, options);
  }

  /** Call `listener` after every committed change; returns the unsubscribe function. */
  subscribe(listener: (change: RolloutChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Resolves once no load or measurement is in flight and every result has been committed. */
  async idle(): Promise<void> {
    while (this.inFlight.size > 0) {
      await Promise.allSettled([...this.inFlight]);
    }
    await this.chain;
  }

  /** Earliest time any rollout needs a tick, or null. */
  nextWakeAt(): number | null {
    let next: number | null = null;
    for (const name of this.store.names()) {
      const stored = this.store.get(name);
      const wake = stored === undefined ? null : machine.wakeAt(stored.state);
      if (wake !== null && (next === null || wake < next)) next = wake;
    }
    return next;
  }

  /** Run timers in the background (a server calls this after {@link recover}). */
  start(): void {
    this.running = true;
    this.schedule();
  }

  /** Stop the timers and wait for work in flight. */
  async stop(): Promise<void> {
    this.running = false;
    clearTimeout(this.timer);
    await this.idle();
  }

  private async command(
    name: string,
    step: (state: RolloutState, spec: RolloutSpec, now: number) => Transition,
  ): Promise<RolloutStatus> {
    this.statusOf(name);
    const state = await this.transition(name, (stored, spec) =>
      step(required(stored, name).state, spec, this.clock.now()),
    );
    return this.toStatus(state);
  }

  /** Run one transition after the ones before it: read, transition, commit, then act. */
  private transition(
    name: string,
    step: (stored: StoredRollout | undefined, spec: RolloutSpec) => Transition,
  ): Promise<RolloutState> {
    const run = this.chain.then(() => {
      try {
        const stored = this.store.get(name);
        const spec = stored === undefined ? undefined : this.specOf(stored.state);
        const t = step(stored, spec as RolloutSpec);
        const changed =
          stored === undefined ||
          t.state !== stored.state ||
          t.actions.length > 0 ||
          t.decisions.length > 0;
        if (changed) {
          this.store.commit({
            state: t.state,
            expectedVersion: stored?.version ?? null,
            history: t.history,
            decisions: t.decisions,
          });
          this.notify(t);
          this.perform(t.state, t.actions);
        }
        return t.state;
      } finally {
        this.schedule(); // also after a step that threw: the other rollouts' timers stay armed
      }
    });
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** Perform the actions of a committed transition; async results come back as transitions. */
  private perform(state: RolloutState, actions: readonly Action[]): void {
    const name = state.name;
    const spec = this.specOf(state);
    // Steps that set weights back to back need only the last one: the committed appliedWeight.
    const lastWeight = actions.findLast((action) => action.type === "setWeight");
    for (const action of actions) {
      switch (action.type) {
        case "setWeight":
          if (action === lastWeight) this.route(state, spec, action.weight);
          break;
        case "load":
          this.background(
            this.options.loader.load(action.variant).then(
              () => this.event(name, (s, sp, now) => machine.onLoaded(s, sp, action.variant, now)),
              (error: unknown) =>
                this.event(name, (s, sp, now) =>
                  machine.onLoadFailed(s, sp, action.variant, messageOf(error), now),
                ),
            ),
          );
          break;
        case "measure":
          this.background(
            this.measure(state, spec, action).then((samples) =>
              this.event(name, (s, sp, now) => machine.onMeasured(s, sp, action.id, samples, now)),
            ),
          );
          break;
      }
    }
  }

  private route(state: RolloutState, spec: RolloutSpec, weight: number): void {
    const split = {
      revision: state.revision,
      step: state.stepIndex,
      weights: [
        { variant: spec.baseline, weight: 100 - weight },
        { variant: spec.candidate, weight },
      ],
    };
    try {
      this.options.traffic.applySplit(state.name, split);
    } catch (error) {
      // The router refused (no healthy worker has a variant that gets traffic: e.g. a worker that
      // answered its health check late after a restart). Load the variants again, which waits for
      // a healthy worker that has them, and retry once, unless the rollout has moved on meanwhile;
      // a second refusal or a failed load is a failed load.
      const needed = machine.servingVariants(spec, weight);
      this.background(
        Promise.all(needed.map((variant) => this.options.loader.load(variant)))
          .then(() => {
            const now = this.store.get(state.name)?.state;
            const current =
              now !== undefined &&
              now.revision === state.revision &&
              now.stepIndex === state.stepIndex &&
              now.appliedWeight === weight;
            if (current) this.options.traffic.applySplit(state.name, split);
          })
          .catch((retryError: unknown) =>
            this.event(state.name, (s, sp, now) =>
              machine.onLoadFailed(
                s,
                sp,
                weight > 0 ? spec.candidate : spec.baseline,
                `router refused the split: ${messageOf(retryError)} (first: ${messageOf(error)})`,
                now,
              ),
            ),
          ),
      );
    }
  }

  private async measure(
    state: RolloutState,
    spec: RolloutSpec,
    action: Extract<Action, { type: "measure" }>,
  ): Promise<GateSample[]> {
    const query: MeasurementQuery = {
      rollout: state.name,
      revision: state.revision,
      baseline: spec.baseline,
      candidate: spec.candidate,
      since: action.since,
      now: this.clock.now(),
    };
    const m = this.options.measurements;
    return Promise.all(
      action.gates.map(async (gate): Promise<GateSample> => {
        try {
          switch (gate) {
            case "accuracy": {
              const evalSet = spec.gates.accuracy?.evalSet ?? {};
              return { gate, sample: await m.accuracy(query, evalSet) };
            }
            case "latency":
              return { gate, sample: await m.latency(query) };
            case "errorRate":
              return { gate, sample: await m.errorRate(query) };
            case "fallbackRate":
              return { gate, sample: await m.fallbackRate(query) };
          }
        } catch (error) {
          return { gate, error: messageOf(error) };
        }
      }),
    );
  }

  private event(
    name: string,
    step: (state: RolloutState, spec: RolloutSpec, now: number) => Transition,
  ): Promise<unknown> {
    return this.transition(name, (stored, spec) =>
      step(required(stored, name).state, spec, this.clock.now()),
    ).catch((error: unknown) => this.options.onError?.(error));
  }

  private background(work: Promise<unknown>): void {
    const tracked = work.catch((error: unknown) => this.options.onError?.(error));
    this.inFlight.add(tracked);
    void tracked.finally(() => this.inFlight.delete(tracked));
  }

  private notify(t: Transition): void {
    if (this.listeners.size === 0) return;
    const change: RolloutChange = {
      status: this.toStatus(t.state),
      history: t.history,
      decisions: t.decisions,
    };
    for (const listener of this.listeners) listener(change);
  }

  private schedule(): void {
    if (!this.running) return;
    clearTimeout(this.timer);
    const wake = this.nextWakeAt();
    if (wake === null) return;
    const delay = Math.min(Math.max(0, wake - this.clock.now()), MAX_SLEEP_MS);
    this.timer = setTimeout(() => {
      this.tick().catch((error: unknown) => this.options.onError?.(error));
    }, delay);
    this.timer.unref();
  }

  private specOf(state: RolloutState): RolloutSpec {
    return this.revisionOf(state).spec;
  }

  private revisionOf(state: RolloutState): RevisionRecord {
    const record = this.store.findRevision(state.name, state.revision);
    if (record === undefined)
      throw new Error(`revision ${state.revision} of ${state.name} is missing`);
    return record;
  }

  private toStatus(state: RolloutState): RolloutStatus {
    return toStatus(state, this.revisionOf(state));
  }

  private statusOf(name: string): RolloutStatus {
    const stored = this.store.get(name);
    if (stored === undefined) throw new RolloutError("NOT_FOUND", `no rollout named ${name}`);
    return this.toStatus(stored.state);
  }
}

function required(stored: StoredRollout | undefined, name: string): StoredRollout {
  if (stored === undefined) throw new RolloutError("NOT_FOUND", `no rollout named ${name}`);
  return stored;
}

function unchanged(state: RolloutState): Transition {
  return { state, actions: [], history: [], decisions: [] };
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
