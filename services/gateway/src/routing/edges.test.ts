import { Agent, request as httpRequest } from "node:http";
import { createHttpApp, createLogger, parseTokens, type App } from "@molt/runtime";
import { z } from "zod";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildApp } from "./app.js";

const logger = createLogger("gateway-edges");
logger.level = "error";
const OP = "operator-token-0123456789";
const tokens = parseTokens(JSON.stringify({ [OP]: { actor: "otto", role: "operator" } }), "t");
const MiB = 1024 * 1024;

let upstream: App;
let gateway: ReturnType<typeof buildApp>;
let gw: string;
let received: number[] = [];

beforeAll(async () => {
  // A real service behind it, built like every Molt service: JSON with a 1 MiB body limit, and
  // a streamed upload route like package-repo's.
  upstream = createHttpApp({ logger, tokens, rateLimits: false });
  upstream.addContentTypeParser("application/gzip", (_req, payload, done) => done(null, payload));
  upstream.post("/v1/deployments", { schema: { body: z.object({ component: z.string() }).passthrough() } }, () => ({ ok: true }));
  upstream.post("/v1/packages", async (req) => {
    let n = 0;
    for await (const chunk of req.body as AsyncIterable<Buffer>) n += chunk.length;
    received.push(n);
    return { bytes: n };
  });
  const up = await upstream.listen({ port: 0, host: "127.0.0.1" });
  gateway = buildApp({ logger, tokens, upstreams: { action: up, projector: up, packageRepo: up, audit: up }, bodyLimits: { json: MiB, packages: 4 * MiB }, rateLimits: false });
  gw = await gateway.listen({ port: 0, host: "127.0.0.1" });
});
afterAll(async () => {
  await gateway?.close();
  await upstream?.close();
});

// One connection per request: a refused body must not leave the test waiting on a kept-alive socket.
const oneShot = new Agent({ keepAlive: false });

/** A raw HTTP/1.1 request, as curl makes it: optional Expect: 100-continue, optional chunked body. */
function send(path: string, body: Buffer, headers: Record<string, string>, opts: { chunked?: boolean } = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const url = new URL(path, gw);
    const req = httpRequest(url, { agent: oneShot, method: "POST", headers: { ...headers, ...(opts.chunked ? {} : { "content-length": String(body.length) }) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
    });
    req.on("error", reject);
    const write = () => {
      // In pieces, as a client streaming a file does.
      for (let i = 0; i < body.length; i += 64 * 1024) req.write(body.subarray(i, i + 64 * 1024));
      req.end();
    };
    if (headers["expect"]) req.once("continue", write);
    else write();
  });
}
const json = (s: string) => JSON.parse(s) as unknown;

describe("gateway edges", () => {
  it("[security] a malformed %-encoding in any query is a 400 with a message, not a 500", async () => {
    for (const path of ["/v1/deployments?x=%FF", "/v1/audit?actor=%", "/v1/packages?component=%E0%A4", "/v1/deployments/%FF"]) {
      const r = await fetch(`${gw}${path}`);
      expect(r.status, path).toBe(400);
      expect(await r.json()).toMatchObject({ error: { code: "validation", message: expect.any(String) as string } });
    }
  });

  it("[security] an upload with Expect: 100-continue is forwarded whole (it was a 502)", async () => {
    received = [];
    const body = Buffer.alloc(2 * MiB, 7);
    const r = await send("/v1/packages?component=a", body, { authorization: `Bearer ${OP}`, "content-type": "application/gzip", expect: "100-continue" });
    expect(r.status, r.body).toBe(200);
    expect(json(r.body)).toEqual({ bytes: 2 * MiB });
  });

  it("[security] a body over the owner's limit is a 413 every time, declared or chunked, never a 502", async () => {
    const big = Buffer.from(JSON.stringify({ component: "x".repeat(3 * MiB) }));
    const results = await Promise.all(
      Array.from({ length: 12 }, (_, i) =>
        send("/v1/deployments", big, { authorization: `Bearer ${OP}`, "content-type": "application/json" }, { chunked: i % 2 === 1 }),
      ),
    );
    for (const r of results) {
      expect(r.status, r.body).toBe(413);
      expect(json(r.body)).toMatchObject({ error: { code: "too_large", message: expect.stringMatching(/limit of 1048576 bytes/) as string } });
    }
    const upload = await send("/v1/packages?component=a", Buffer.alloc(5 * MiB), { authorization: `Bearer ${OP}`, "content-type": "application/gzip" }, { chunked: true });
    expect(upload.status, upload.body).toBe(413);
    // And a body within the limit still goes through.
    expect((await send("/v1/deployments", Buffer.from('{"component":"c"}'), { authorization: `Bearer ${OP}`, "content-type": "application/json" })).status).toBe(200);
  });
});
