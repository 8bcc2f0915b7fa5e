import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Me } from "@molt/contracts";
import { createLogger, parseTokens } from "@molt/runtime";
import { afterAll, describe, expect, it } from "vitest";
import { buildApp } from "./app.js";

const tokens = parseTokens(JSON.stringify({ "viewer-token-0123456789": { actor: "vic", role: "viewer" } }), "test");
const upstreams = { action: "http://127.0.0.1:9", projector: "http://127.0.0.1:9", packageRepo: "http://127.0.0.1:9", audit: "http://127.0.0.1:9" };
const logger = createLogger("gateway-test");
logger.level = "warn";

const dir = mkdtempSync(join(tmpdir(), "molt-dash-"));
writeFileSync(join(dir, "index.html"), "<!doctype html><div id=app></div>");
writeFileSync(join(dir, "app.js"), "console.log(1)");
const app = buildApp({ logger, tokens, upstreams, dashboardDir: dir });
const unbuilt = buildApp({ logger, tokens, upstreams, dashboardDir: join(dir, "missing") });
afterAll(async () => {
  await app.close();
  await unbuilt.close();
});

describe("gateway dashboard", () => {
  it("[views] serves the dashboard's files without a token, and nothing else without one", async () => {
    const page = await app.inject({ method: "GET", url: "/" });
    expect(page.statusCode).toBe(200);
    expect(page.headers["content-type"]).toContain("text/html");
    const js = await app.inject({ method: "GET", url: "/app.js" });
    expect(js.statusCode).toBe(200);
    expect(js.headers["content-type"]).toContain("javascript");
    expect((await app.inject({ method: "GET", url: "/v1/me" })).statusCode).toBe(401);
  });
  it("[views] /v1/me says whose token it is and its role", async () => {
    const r = await app.inject({ method: "GET", url: "/v1/me", headers: { authorization: "Bearer viewer-token-0123456789" } });
    expect(r.statusCode).toBe(200);
    expect(Me.parse(r.json())).toEqual({ actor: "vic", role: "viewer" });
  });
  it("[views] an unbuilt dashboard answers 503 with what to run", async () => {
    const r = await unbuilt.inject({ method: "GET", url: "/" });
    expect(r.statusCode).toBe(503);
    expect(r.body).toContain("pnpm build:dashboard");
  });
});
