import { describe, expect, it } from "vitest";
import { parseRange } from "./download.js";

describe("Range parsing", () => {
  const size = 100;
  it.each([
    [undefined, { kind: "full" }],
    ["bytes=10-19", { kind: "partial", start: 10, end: 19 }],
    ["bytes=90-", { kind: "partial", start: 90, end: 99 }],
    ["bytes=90-500", { kind: "partial", start: 90, end: 99 }],
    ["bytes=-5", { kind: "partial", start: 95, end: 99 }],
    ["bytes=-500", { kind: "partial", start: 0, end: 99 }],
    ["bytes=100-", { kind: "unsatisfiable" }],
    ["bytes=-0", { kind: "unsatisfiable" }],
    ["bytes=0-1,5-6", { kind: "full" }],
    ["bytes=5-1", { kind: "full" }],
    ["items=0-1", { kind: "full" }],
    ["bytes=-", { kind: "full" }],
  ] as const)("[spine] %s on 100 bytes", (header, expected) => {
    expect(parseRange(header, size)).toEqual(expected);
  });
});
