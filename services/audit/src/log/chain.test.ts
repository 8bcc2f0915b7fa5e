import { describe, expect, it } from "vitest";
import { canonicalJson } from "@molt/contracts";
import { entryHash, GENESIS, type EntryFields } from "./chain.js";

const entry: EntryFields = {
  source: "command",
  sourceStream: "MOLT_AUDIT",
  sourceSeq: 7,
  sourceIdx: 0,
  at: "2025-03-01T10:00:00.000Z",
  actor: "alice",
  kind: "create-deployment",
  target: "d-1",
  outcome: "accepted",
  data: { b: [1, { y: 2, x: 1 }], a: "é\n" },
};

describe("hash chain", () => {
  it("canonical JSON ignores key order and drops undefined, like jsonb gives data back", () => {
    expect(canonicalJson({ b: 1, a: { d: [1, undefined], c: undefined } })).toBe('{"a":{"d":[1,null]},"b":1}');
    expect(canonicalJson(entry.data)).toBe(canonicalJson(JSON.parse(JSON.stringify({ a: "é\n", b: [1, { x: 1, y: 2 }] }))));
  });
  it("[spine] every field and the previous hash change the hash", () => {
    const h = entryHash(GENESIS, entry);
    expect(h).toMatch(/^[0-9a-f]{64}$/);
    expect(entryHash(GENESIS, { ...entry, data: { ...(entry.data as object) } })).toBe(h);
    expect(entryHash("1".repeat(64), entry)).not.toBe(h);
    for (const [k, v] of Object.entries({ actor: "mallory", kind: "x", target: null, outcome: "refused", sourceSeq: 8, sourceIdx: 1, at: "2025-03-01T10:00:00.001Z", data: { a: "e" } }))
      expect(entryHash(GENESIS, { ...entry, [k]: v })).not.toBe(h);
  });
});
