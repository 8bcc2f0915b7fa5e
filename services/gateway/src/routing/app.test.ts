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
