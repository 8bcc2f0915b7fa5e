import { describe, expect, it } from "vitest";
import { backoff, DEFAULT_TIMINGS } from "./deliver.js";

describe("webhook retry timing", () => {
  it("[release-events] backoff doubles from the first delay up to the cap, jittered between half and all of it; by default retries last more than 24 h", () => {
    const t = { retryMinMs: 100, retryMaxMs: 1_000 };
    expect([1, 2, 3, 4, 5, 6].map((n) => backoff(t, n, () => 1))).toEqual([100, 200, 400, 800, 1_000, 1_000]);
    expect([1, 2, 3, 4, 5, 6].map((n) => backoff(t, n, () => 0))).toEqual([50, 100, 200, 400, 500, 500]);
    expect(backoff(t, 10_000, () => 0.5)).toBe(750);
    expect(DEFAULT_TIMINGS.giveUpMs).toBeGreaterThanOrEqual(24 * 3_600_000);
  });
});
