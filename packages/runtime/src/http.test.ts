import { connect } from "node:net";
import { Writable } from "node:stream";
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

describe("http edge: a client that goes away mid-request", () => {
  it("[spine] an upload cut off by its client is logged below error, as the client's doing", async () => {
    const entries: Array<{ level: number; msg: string }> = [];
    const logger = createLogger(
      "cut-off",
      {},
      new Writable({
        write(line: Buffer, _enc, done) {
          entries.push(JSON.parse(line.toString()) as { level: number; msg: string });
          done();
        },
      }),
    );
    logger.level = "info";
    const upload = createHttpApp({ logger, tokens, rateLimits: false });
    upload.addContentTypeParser("application/gzip", (_req, payload, done) => done(null, payload));
    let reading!: () => void;
    const started = new Promise<void>((r) => (reading = r));
    const failed = new Promise<void>((resolve) => {
      upload.post("/v1/packages", async (req) => {
        let n = 0;
        try {
          for await (const chunk of req.body as AsyncIterable<Buffer>) {
            n += chunk.length;
            reading();
          }
        } finally {
          resolve();
        }
        return { bytes: n };
      });
    });
    const url = new URL("/v1/packages", await upload.listen({ port: 0, host: "127.0.0.1" }));
    try {
      const socket = connect(Number(url.port), url.hostname);
      await new Promise<void>((r) => socket.once("connect", r));
      socket.write(
        `POST /v1/packages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer operator-token-0123456789\r\nContent-Type: application/gzip\r\nContent-Length: 1000000\r\n\r\n`,
      );
      socket.write(Buffer.alloc(64 * 1024));
      await started;
      socket.destroy();
      await failed;
      await new Promise((r) => setTimeout(r, 50));
    } finally {
      await upload.close();
    }
    expect(entries.filter((e) => e.level >= 50).map((e) => e.msg)).toEqual([]);
    expect(entries.map((e) => e.msg)).toContain("the client went away before its request was read");
  });
});
