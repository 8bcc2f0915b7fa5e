import { z } from "zod";
import { afterAll, describe, expect, it } from "vitest";
import { createHttpApp, createLogger, parseTokens, HttpError } from "./index.js";

const tokens = parseTokens(
  JSON.stringify({
    "viewer-token-0123456789": { actor: "vera", role: "viewer" },
    "operator-token-0123456789": { actor: "otto", role: "operator" },
  }),
  "test",
);
const app = createHttpApp({ logger: createLogger("test"), tokens });
app.post("/v1/things", { schema: { body: z.object({ name: z.string().min(1) }).strict() } }, (req) => ({
  name: req.body.name,
  actor: req.principal?.actor,
}));
app.get("/v1/things/:id", () => {
  throw new HttpError(404, "not_found", "no such thing");
});
afterAll(() => app.close());

const auth = (t: string) => ({ authorization: `Bearer ${t}` });

describe("http edge: bearer auth and errors", () => {
  it("[spine] no token → 401 with a message", async () => {
    const r = await app.inject({ method: "POST", url: "/v1/things", payload: { name: "x" } });
    expect(r.statusCode).toBe(401);
    expect(r.json()).toMatchObject({ error: { code: "unauthorized" } });
  });
  it("[spine] unknown token → 401", async () => {
    const r = await app.inject({ method: "GET", url: "/v1/things/1", headers: auth("nope-nope-nope-nope-nope") });
    expect(r.statusCode).toBe(401);
  });
  it("[spine] a viewer may read but not write (403)", async () => {
    expect((await app.inject({ method: "GET", url: "/v1/things/1", headers: auth("viewer-token-0123456789") })).statusCode).toBe(404);
    const r = await app.inject({ method: "POST", url: "/v1/things", headers: auth("viewer-token-0123456789"), payload: { name: "x" } });
    expect(r.statusCode).toBe(403);
    expect(r.json()).toMatchObject({ error: { code: "forbidden" } });
  });
  it("[spine] an operator writes; the actor comes from the token", async () => {
    const r = await app.inject({ method: "POST", url: "/v1/things", headers: auth("operator-token-0123456789"), payload: { name: "x" } });
    expect(r.statusCode).toBe(200);
    expect(r.json()).toEqual({ name: "x", actor: "otto" });
  });
  it("[spine] a bad body → 400 validation with the field named", async () => {
    const r = await app.inject({ method: "POST", url: "/v1/things", headers: auth("operator-token-0123456789"), payload: { nam: "x" } });
    expect(r.statusCode).toBe(400);
    expect(r.json()).toMatchObject({ error: { code: "validation" } });
  });
  it("refuses a token file with short tokens or bad roles", () => {
    expect(() => parseTokens(JSON.stringify({ short: { actor: "a", role: "operator" } }), "f")).toThrow(/16 characters/);
    expect(() => parseTokens(JSON.stringify({ "long-enough-token-123": { actor: "a", role: "root" } }), "f")).toThrow();
  });
});
