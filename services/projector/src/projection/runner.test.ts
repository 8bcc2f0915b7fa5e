import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { pgSafe } from "@molt/db";
import { mayHoldRefused } from "./runner.js";

describe("decoding a commit", () => {
  it("[views] bytes without a \\u escape decode to nothing pgSafe would change: its copy is skipped only where it is a no-op", () => {
    // Strings drawn from every code unit (NUL, control characters, lone surrogates), keys too.
    const text = fc.string({ unit: "binary" });
    const value = fc.letrec((tie) => ({
      any: fc.oneof({ depthSize: "small" }, text, fc.double(), fc.boolean(), fc.constant(null), tie("arr"), tie("obj")),
      arr: fc.array(tie("any"), { maxLength: 4 }),
      obj: fc.dictionary(text, tie("any"), { maxKeys: 4 }),
    })).any;
    fc.assert(
      fc.property(value, (v) => {
        const bytes = new TextEncoder().encode(JSON.stringify(v));
        const parsed: unknown = JSON.parse(new TextDecoder().decode(bytes));
        if (!mayHoldRefused(bytes)) expect(pgSafe(parsed)).toStrictEqual(parsed);
      }),
      { numRuns: 2000 },
    );
    // And a value that needs cleaning is always caught.
    expect(mayHoldRefused(new TextEncoder().encode(JSON.stringify({ e: "a\u0000b" })))).toBe(true);
    expect(mayHoldRefused(new TextEncoder().encode(JSON.stringify({ e: "\ud800" })))).toBe(true);
  });
});
