import type { JournalEntry } from "@molt/contracts";
import { describe, expect, it } from "vitest";
import { exitReason, verdictFor } from "./forwarder.js";

const at = "2026-01-01T00:00:00.000Z";

describe("the agent's verdict for a client that ended without one", () => {
  it("[spine] rejected when the client never accepted (it touched nothing)", () => {
    expect(verdictFor([], "never started", 0)).toEqual([{ kind: "rejected", reason: "never started" }]);
  });
  it("[spine] closes the open step, then failed naming it", () => {
    const entries: JournalEntry[] = [
      { kind: "accepted", seq: 1, at },
      { kind: "step-started", seq: 2, at, step: "begin" },
      { kind: "step-succeeded", seq: 3, at, step: "begin", durationMs: 1 },
      { kind: "step-started", seq: 4, at, step: "download" },
    ];
    expect(verdictFor(entries, "boom", Date.parse(at) + 250)).toEqual([
      { kind: "step-failed", step: "download", durationMs: 250, error: "boom" },
      { kind: "failed", reason: "boom", step: "download" },
    ]);
  });
  it("[spine] nothing when the journal already ends the task", () => {
    expect(verdictFor([{ kind: "accepted", seq: 1, at }, { kind: "succeeded", seq: 2, at, version: "2.0.0" }], "x", 0)).toEqual([]);
  });
  it("names how the client ended", () => {
    expect(exitReason({ code: 7, signal: null })).toBe("upgrade client exited with code 7");
    expect(exitReason({ code: null, signal: "SIGKILL" })).toBe("upgrade client was killed by SIGKILL");
  });
});
