import { describe, expect, it } from "vitest";
import { decodeHostToken, encodeHostToken, InvalidHostIdError } from "./ids.js";
import { parseEventSubject, subjects } from "./subjects.js";

describe("host id token encoding", () => {
  const ids = ["web-12.eu-1.example.com", "10.0.0.7", "fe80::1", "i-0abc_def", "a_d", "x__y._c:"];
  it.each(ids)("round-trips %s and yields a single safe token", (id) => {
    const tok = encodeHostToken(id);
    expect(tok).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(decodeHostToken(tok)).toBe(id);
  });
  it("keeps distinct ids distinct", () => {
    expect(encodeHostToken("a_d")).not.toBe(encodeHostToken("a.d"));
  });
  it.each(["", "a b", "a*", "a>", "a\u0001", "x".repeat(254), "é"])("refuses %j", (id) => {
    expect(() => encodeHostToken(id)).toThrow(InvalidHostIdError);
  });
  it("refuses malformed tokens", () => {
    expect(() => decodeHostToken("a_x")).toThrow(InvalidHostIdError);
    expect(() => decodeHostToken("a_")).toThrow(InvalidHostIdError);
  });
  it("parses subjects back", () => {
    expect(parseEventSubject(subjects.slot("web-1.example.com", "agent"))).toEqual({
      kind: "slot",
      hostToken: encodeHostToken("web-1.example.com"),
      component: "agent",
    });
    expect(parseEventSubject(subjects.deployment("d-1"))).toEqual({ kind: "deployment", deploymentId: "d-1" });
  });
});
