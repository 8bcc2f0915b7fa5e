import { describe, expect, it } from "vitest";
import { pgSafe } from "./text.js";

describe("pgSafe", () => {
  it("replaces what PostgreSQL refuses in text (NUL, lone surrogates) and keeps everything else", () => {
    expect(pgSafe({ a: "x\u0000y", b: ["\uD800", "ok \uD83D\uDE00"], n: 1, z: null })).toEqual({ a: "x\uFFFDy", b: ["\uFFFD", "ok \uD83D\uDE00"], n: 1, z: null });
  });

  it("keeps a key named __proto__ as data, as JSON.parse made it (an assignment would have set the copy's prototype and lost it)", () => {
    const parsed = JSON.parse('{"__proto__": {"polluted": true}, "b": "\\u0000"}') as Record<string, unknown>;
    const out = pgSafe(parsed);
    expect(Object.keys(out)).toEqual(["__proto__", "b"]);
    expect(JSON.stringify(out)).toBe('{"__proto__":{"polluted":true},"b":"\uFFFD"}');
    expect(({} as Record<string, unknown>)["polluted"]).toBeUndefined();
  });
});
