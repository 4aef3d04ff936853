import { describe, expect, it } from "vitest";
import {
  InvalidSplitError,
  NoRouteError,
  Router,
  StaticWorkerPool,
  stickyBucket,
  type TrafficSplit,
  VariantNotLoadedError,
} from "../../control-plane/src/router/index.js";
import { seededRandom } from "../config/seeded-random.js";

const BASE = "dense";
const CAND = "tardis-3f9c";

function pool(): StaticWorkerPool {
  return new StaticWorkerPool([
    { id: "w1", healthy: true, variants: [BASE, CAND] },
    { id: "w2", healthy: true, variants: [BASE] },
    { id: "w3", healthy: true, variants: [CAND] },
  ]);
}

function split(weight: number, revision = "rev-a", step = 0): TrafficSplit {
  return {
    revision,
    step,
    weights: [
      { variant: BASE, weight: 100 - weight },
      { variant: CAND, weight },
    ],
  };
}

/** Random session ids drawn from a fixed seed. */
function sessions(count: number, seed: number): string[] {
  const random = seededRandom(seed);
  return Array.from({ length: count }, () => `sess-${Math.floor(random() * 2 ** 52).toString(36)}`);
}

describe("router", () => {
  it("matches the weights within ±3 points over 1,000 routed requests", () => {
    for (const [weight, seed] of [
      [10, 1],
      [25, 2],
      [50, 3],
      [90, 4],
    ] as const) {
      const router = new Router(pool());
      router.applySplit("r", split(weight, `rev-${seed}`));
      let candidate = 0;
      for (const id of sessions(1000, seed)) {
        const route = router.route({ rollout: "r", sessionId: id });
        if (route.variant === CAND) candidate++;
        route.release();
      }
      const share = (candidate / 1000) * 100;
      expect(Math.abs(share - weight), `weight ${weight}: observed ${share}%`).toBeLessThanOrEqual(
        3,
      );
    }
  });

  it("matches a three-way split within ±3 points, keyed by tenant id", () => {
    const router = new Router(
      new StaticWorkerPool([{ id: "w", healthy: true, variants: ["a", "b", "c"] }]),
    );
    router.applySplit("r", {
      revision: "rev",
      step: 0,
      weights: [
        { variant: "a", weight: 20 },
        { variant: "b", weight: 30 },
        { variant: "c", weight: 50 },
      ],
    });
    const counts = new Map<string, number>();
    for (const tenant of sessions(1000, 77)) {
      const variant = router.route({ tenantId: tenant }).variant;
      counts.set(variant, (counts.get(variant) ?? 0) + 1);
    }
    for (const [variant, weight] of [
      ["a", 20],
      ["b", 30],
      ["c", 50],
    ] as const) {
      expect(Math.abs(((counts.get(variant) ?? 0) / 1000) * 100 - weight)).toBeLessThanOrEqual(3);
    }
  });

  it("sends the same session id to the same variant every time within a step", () => {
    const router = new Router(pool());
    router.applySplit("r", split(30));
    const ids = sessions(300, 5);
    const first = new Map(ids.map((id) => [id, router.route({ sessionId: id }).variant]));
    const random = seededRandom(6);
    for (let i = 0; i < 3000; i++) {
      const id = ids[Math.floor(random() * ids.length)] as string;
      expect(router.route({ sessionId: id }).variant).toBe(first.get(id));
    }
  });

  it("only moves sessions from the baseline to the candidate when the weight grows", () => {
    const router = new Router(pool());
    const ids = sessions(1000, 8);
    let onCandidate = new Set<string>();
    for (const weight of [10, 25, 50, 75, 100]) {
      router.applySplit("r", split(weight, "rev-a", weight));
      const now = new Set(ids.filter((id) => router.route({ sessionId: id }).variant === CAND));
      for (const id of onCandidate) expect(now.has(id)).toBe(true);
      onCandidate = now;
    }
    expect(onCandidate.size).toBe(1000);
  });

  it("hashes sticky keys to a stable point in [0, 100)", () => {
    expect(stickyBucket("rev", "session-1")).toBe(stickyBucket("rev", "session-1"));
    expect(stickyBucket("rev", "session-1")).not.toBe(stickyBucket("rev2", "session-1"));
    for (const id of sessions(200, 10)) {
      const bucket = stickyBucket("rev", id);
      expect(bucket).toBeGreaterThanOrEqual(0);
      expect(bucket).toBeLessThan(100);
    }
  });

  it("refuses a split that sends traffic to a variant no healthy worker has loaded, keeping the old one", () => {
    const workers = new StaticWorkerPool([{ id: "w1", healthy: true, variants: [BASE] }]);
    const router = new Router(workers);
    router.applySplit("r", split(0));
    expect(() => router.applySplit("r", split(10))).toThrow(VariantNotLoadedError);
    expect(router.split("r")?.weights[1]?.weight).toBe(0);

    workers.put({ id: "w2", healthy: false, variants: [CAND] });
    expect(() => router.applySplit("r", split(10))).toThrow(/no healthy worker has it loaded/);
    workers.setHealthy("w2", true);
    router.applySplit("r", split(10));
    expect(router.split("r")?.weights[1]?.weight).toBe(10);
  });

  it("rejects malformed splits", () => {
    const router = new Router(pool());
    expect(() =>
      router.applySplit("r", { revision: "x", step: 0, weights: [{ variant: BASE, weight: 90 }] }),
    ).toThrow(InvalidSplitError);
    expect(() =>
      router.applySplit("r", {
        revision: "x",
        step: 0,
        weights: [
          { variant: BASE, weight: 110 },
          { variant: CAND, weight: -10 },
        ],
      }),
    ).toThrow(/must be ≥ 0/);
  });

  it("picks the least-loaded healthy worker, round-robin among equals, and skips unhealthy ones", () => {
    const workers = new StaticWorkerPool([
      { id: "a", healthy: true, variants: [BASE] },
      { id: "b", healthy: true, variants: [BASE] },
      { id: "c", healthy: false, variants: [BASE] },
    ]);
    const router = new Router(workers);
    router.applySplit("r", split(0));
    const held = [1, 2, 3, 4].map((i) => router.route({ requestId: `q${i}` }));
    expect(held.map((r) => r.worker.id).sort()).toEqual(["a", "a", "b", "b"]);
    held
      .filter((r) => r.worker.id === "a")
      .forEach((r) => {
        r.release();
      });
    expect(router.inFlight("a")).toBe(0);
    expect(router.route({ requestId: "q5" }).worker.id).toBe("a");
    const spread = new Set(
      [6, 7, 8, 9].map((i) => {
        const r = router.route({ requestId: `q${i}` });
        r.release();
        return r.worker.id;
      }),
    );
    expect(spread.has("c")).toBe(false);
  });

  it("fails a request with NoRouteError when no healthy worker serves its variant", () => {
    const workers = pool();
    const router = new Router(workers);
    router.applySplit("r", split(100));
    workers.setHealthy("w1", false);
    workers.setHealthy("w3", false);
    expect(() => router.route({ sessionId: "s" })).toThrow(NoRouteError);
    expect(() => router.route({ rollout: "other", sessionId: "s" })).toThrow(/no traffic split/);
  });
});
