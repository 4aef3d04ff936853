/** Worker JobEvents become plain stored records: set fields only, int64 strings as numbers. */

import { describe, expect, it } from "vitest";
import type { JobEvent__Output } from "../../control-plane/src/gen/tardis/v1/JobEvent.js";
import { eventRecord, metricsOf, setFields } from "../../control-plane/src/jobs/worker-events.js";

describe("worker events", () => {
  it("drops proto-loader's oneof markers and unset optionals, and turns int64 strings into numbers", () => {
    expect(
      setFields({
        coverage: 0.9,
        _coverage: "coverage",
        calibTokens: "32768",
        prefill: "dense",
        hot: null,
      }),
    ).toEqual({ coverage: 0.9, calibTokens: 32768, prefill: "dense" });
    expect(
      metricsOf({ ffnReductionPaper: 0.8, evalTokens: "512", _seconds: "seconds" } as never),
    ).toEqual({
      ffnReductionPaper: 0.8,
      evalTokens: 512,
    });
  });

  it("records a completed event with the variant id, metrics and comparison rows", () => {
    const event = {
      jobId: "j",
      seq: "7",
      time: null,
      event: "completed",
      completed: {
        manifest: { variantId: "ab", path: "/v" },
        metrics: { perplexityRatio: 1.2, _perplexityRatio: "perplexityRatio" },
        comparison: [
          { name: "dense", perplexity: 50, sample: "x", seconds: 1, _perplexity: "perplexity" },
        ],
      },
    } as unknown as JobEvent__Output;
    expect(eventRecord(event, 2)).toEqual({
      type: "completed",
      data: {
        attempt: 2,
        workerSeq: 7,
        variantId: "ab",
        path: "/v",
        metrics: { perplexityRatio: 1.2 },
        comparison: [{ name: "dense", perplexity: 50, sample: "x", seconds: 1 }],
      },
    });
  });
});
