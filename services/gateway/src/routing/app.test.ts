import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { createLogger, parseTokens } from "@molt/runtime";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildApp } from "./app.js";
import { ownerOf, type Upstreams } from "./routes.js";

// Real upstream HTTP servers that echo who they are, what they got and the Authorization header.
const servers: Server[] = [];
async function upstream(name: string): Promise<string> {
  const srv = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ name, method: req.method, url: req.url, auth: req.headers.authorization ?? null, bytes: Buffer.concat(chunks).length }));
    });
  });
  servers.push(srv);
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  return `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
}

let app: ReturnType<typeof buildApp>;
beforeAll(async () => {
  const upstreams: Upstreams = {
    action: await upstream("action"),
    projector: await upstream("projector"),
    packageRepo: await upstream("package-repo"),
    audit: await upstream("audit"),
  };
  app = buildApp({ logger: createLogger("gateway-test"), tokens: parseTokens("{}", "t"), upstreams });
});
afterAll(async () => {
  await app.close();
  for (const s of servers) s.close();
});

describe("gateway routing", () => {
  it.each([
    ["POST", "/v1/deployments", "action"],
    ["GET", "/v1/deployments/d-1", "projector"],
    ["GET", "/v1/hosts/web-1/timeline", "projector"],
    ["POST", "/v1/packages?component=a&version=1&platform=linux-amd64", "package-repo"],
    ["GET", "/v1/packages/a/1/linux-amd64/download", "package-repo"],
    ["GET", "/v1/audit?limit=5", "audit"],
  ])("[spine] %s %s goes to %s with Authorization passed through", async (method, url, name) => {
    const r = await app.inject({ method: method as "GET", url, headers: { authorization: "Bearer abc", "content-type": "application/gzip" }, ...(method === "POST" ? { payload: Buffer.alloc(1000, 1) } : {}) });
    expect(r.statusCode).toBe(200);
    expect(r.json()).toMatchObject({ name, url, auth: "Bearer abc", ...(method === "POST" ? { bytes: 1000 } : {}) });
  });
  it("[spine] unknown paths get 404 with a message", async () => {
    const r = await app.inject({ method: "GET", url: "/v1/nothing" });
    expect(r.statusCode).toBe(404);
    expect(r.json()).toMatchObject({ error: { code: "not_found" } });
    expect(ownerOf("DELETE", "/v1/audit")).toBeUndefined();
  });
});

describe("downloads through the gateway (the URL hosts are given)", () => {
  // A real upstream answering like package-repo: ETag, Range → 206, If-None-Match → 304, and a
  // large body sent in pieces, the last only once the client has seen the first.
  const size = 4 * 1024 * 1024;
  const body = Buffer.alloc(size, 7);
  const etag = `"${"a".repeat(64)}"`;
  let gateway: ReturnType<typeof buildApp>;
  let base: string;
  let releaseTail!: () => void;
  beforeAll(async () => {
    const tail = new Promise<void>((r) => (releaseTail = r));
    const srv = createServer((req, res) => {
      res.setHeader("etag", etag);
      res.setHeader("accept-ranges", "bytes");
      if (req.headers["if-none-match"] === etag) return void res.writeHead(304).end();
      const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? "");
      if (m) {
        const [start, end] = [Number(m[1]), Number(m[2])];
        res.writeHead(206, { "content-range": `bytes ${start}-${end}/${size}`, "content-length": end - start + 1 });
        return void res.end(body.subarray(start, end + 1));
      }
      res.writeHead(200, { "content-length": size });
      res.write(body.subarray(0, size / 2));
      void tail.then(() => res.end(body.subarray(size / 2)));
    });
    servers.push(srv);
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    const repo = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
    gateway = buildApp({ logger: createLogger("gateway-test"), tokens: parseTokens("{}", "t"), upstreams: { action: repo, projector: repo, packageRepo: repo, audit: repo } });
    base = await gateway.listen({ host: "127.0.0.1", port: 0 });
  });
  afterAll(async () => {
    await gateway.close();
  });
  const path = "/v1/packages/a/1.0.0/linux-amd64/download";

  it("[scale-faults] Range → 206 with Content-Range and exactly those bytes; If-None-Match with the ETag → 304; ETag passed on", async () => {
    const part = await fetch(`${base}${path}`, { headers: { range: "bytes=10-19" } });
    expect(part.status).toBe(206);
    expect(part.headers.get("content-range")).toBe(`bytes 10-19/${size}`);
    expect(part.headers.get("etag")).toBe(etag);
    expect(Buffer.from(await part.arrayBuffer()).equals(body.subarray(10, 20))).toBe(true);
    const same = await fetch(`${base}${path}`, { headers: { "if-none-match": etag } });
    expect(same.status).toBe(304);
  });

  it("[scale-faults] a download is relayed as it arrives, not buffered: the first half reaches the host before the upstream sends the rest", async () => {
    const res = await fetch(`${base}${path}`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-length")).toBe(String(size));
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    let got = 0;
    // The upstream holds its second half back: these bytes can only have come through unbuffered.
    while (got < size / 2) got += (await reader.read()).value?.length ?? 0;
    releaseTail();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      got += value.length;
    }
    expect(got).toBe(size);
  });
});
