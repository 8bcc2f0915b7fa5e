import { mkdtemp, rename, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { startNatsServer, waitFor, type NatsServer } from "@molt/testkit";
import { z } from "zod";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { commandLog, createHttpApp, createLogger, hashToken, loadTokens, parseTokens, type App, type RateLimits } from "@molt/runtime";

const logger = createLogger("edge-test");
logger.level = "warn";
const OP = "operator-token-0123456789";
const VIEW = "viewer-token-0123456789";
const ADMIN = "admin-token-012345678901";
// The file holds hashes only (and still takes a plain token, as older files do).
const tokens = parseTokens(
  JSON.stringify({
    [hashToken(OP)]: { actor: "otto", role: "operator" },
    [VIEW]: { actor: "vera", role: "viewer" },
    [hashToken(ADMIN)]: { actor: "ada", role: "admin" },
    [hashToken("expired-token-0123456789")]: { actor: "old", role: "operator", expiresAt: "2020-01-01T00:00:00Z" },
  }),
  "test",
);
const auth = (t: string) => ({ authorization: `Bearer ${t}` });

let server: NatsServer;
let nc: NatsConnection;
let jsm: JetStreamManager;
const STREAM = "MOLT_AUDIT";
const apps: App[] = [];

function build(opts: { rateLimits?: RateLimits | false } = {}) {
  const app = createHttpApp({ logger, tokens, commands: commandLog(nc, logger), rateLimits: opts.rateLimits ?? false });
  app.post("/v1/things", { schema: { body: z.object({ name: z.string().min(1) }).passthrough() } }, (req) => ({ name: req.body.name }));
  app.get("/v1/things", { schema: { querystring: z.object({ q: z.string().optional() }) } }, (req) => ({ q: req.query.q ?? null }));
  app.get("/v1/costly", { config: { expensive: true, role: "admin" } }, () => ({ ok: true }));
  apps.push(app);
  return app;
}

beforeAll(async () => {
  server = await startNatsServer();
  nc = await connect({ servers: server.url });
  jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name: STREAM, subjects: ["molt.audit.>"] });
});
afterAll(async () => {
  await Promise.all(apps.map((a) => a.close()));
  await nc?.close();
  await server?.stop();
});

const lastSeq = async () => (await jsm.streams.info(STREAM)).state.last_seq;
async function lastRecord(): Promise<Record<string, unknown>> {
  const m = await jsm.streams.getMessage(STREAM, { seq: await lastSeq() });
  return m!.json<Record<string, unknown>>();
}
const errorShape = { error: { code: expect.any(String) as string, message: expect.any(String) as string } };

describe("the edge: input that used to be a 500", () => {
  it("[security] a query that is not UTF-8 %-encoding, or holds NUL, is a 400 in the one error shape, token or not", async () => {
    const app = build();
    for (const url of ["/v1/things?x=%FF", "/v1/things?q=%", "/v1/things?q=%C0%80", "/v1/things?q=%ED%A0%80", "/v1/things?q=a%00b"]) {
      for (const headers of [{}, auth(VIEW)]) {
        const r = await app.inject({ method: "GET", url, headers });
        expect(r.statusCode, url).toBe(400);
        expect(r.json()).toEqual(errorShape);
        expect(r.json<{ error: { code: string } }>().error.code).toBe("validation");
      }
    }
    const path = await app.inject({ method: "GET", url: "/v1/things/%FF" });
    expect(path.statusCode).toBe(400);
    expect(path.json()).toEqual(errorShape);
    expect((await app.inject({ method: "GET", url: "/v1/things?q=%C3%A9", headers: auth(VIEW) })).json()).toEqual({ q: "é" });
  });

  it("[security] a body nested 5,000 deep is refused (400) and leaves no audit record", async () => {
    const app = build();
    const before = await lastSeq();
    const deep = `{"name":"x","a":${"[".repeat(5000)}${"]".repeat(5000)}}`;
    const r = await app.inject({ method: "POST", url: "/v1/things", headers: { ...auth(OP), "content-type": "application/json" }, payload: deep });
    expect(r.statusCode).toBe(400);
    expect(r.json()).toMatchObject({ error: { code: "validation", message: expect.stringMatching(/nested more than 64/) as string } });
    expect(await lastSeq()).toBe(before);
  });

  it("[security] NUL and unpaired surrogates in a JSON body are refused before anything stores them", async () => {
    const app = build();
    const before = await lastSeq();
    for (const payload of ['{"name":"a\\u0000b"}', '{"name":"\\ud800"}', '{"na\\u0000me":"x"}']) {
      const r = await app.inject({ method: "POST", url: "/v1/things", headers: { ...auth(OP), "content-type": "application/json" }, payload });
      expect(r.statusCode, payload).toBe(400);
      expect(r.json()).toEqual(errorShape);
    }
    expect(await lastSeq()).toBe(before);
    expect((await app.inject({ method: "POST", url: "/v1/things", headers: auth(OP), payload: { name: "😀" } })).statusCode).toBe(200);
  });
});

describe("tokens", () => {
  it("[security] hashed and plain entries both authenticate; an expired token is a 401 that says so", async () => {
    const app = build();
    expect((await app.inject({ method: "GET", url: "/v1/things", headers: auth(OP) })).statusCode).toBe(200);
    expect((await app.inject({ method: "GET", url: "/v1/things", headers: auth(VIEW) })).statusCode).toBe(200);
    const r = await app.inject({ method: "GET", url: "/v1/things", headers: auth("expired-token-0123456789") });
    expect(r.statusCode).toBe(401);
    expect(r.json()).toEqual({ error: { code: "unauthorized", message: "token expired" } });
    // The hash itself is not a token.
    expect((await app.inject({ method: "GET", url: "/v1/things", headers: auth(hashToken(OP)) })).statusCode).toBe(401);
    expect(tokens.lookup(OP)).toEqual({ ok: true, principal: { actor: "otto", role: "operator" } });
  });

  it("[security] the token file is reloaded without a restart: on change and on SIGHUP; a bad file keeps the old tokens", async () => {
    const dir = await mkdtemp(join(tmpdir(), "molt-tokens-"));
    const file = join(dir, "tokens.json");
    const write = async (content: string) => {
      // As an editor or a config manager does: a new file renamed over the old one.
      await writeFile(`${file}.tmp`, content);
      await rename(`${file}.tmp`, file);
    };
    await write(JSON.stringify({ [hashToken("first-token-0123456789")]: { actor: "a", role: "viewer" } }));
    const reloads: Array<string | null> = [];
    const map = loadTokens({ MOLT_TOKEN_FILE: file }, { pollMs: 20, onReload: (err) => reloads.push(err ? err.message : null) });
    try {
      expect(map.lookup("first-token-0123456789").ok).toBe(true);
      await write(JSON.stringify({ [hashToken("second-token-0123456789")]: { actor: "b", role: "operator" } }));
      await waitFor("reload on change", () => (map.lookup("second-token-0123456789").ok ? true : undefined), { timeoutMs: 5_000, intervalMs: 10 });
      expect(map.lookup("first-token-0123456789")).toEqual({ ok: false, reason: "unknown" });

      await write("{ not json");
      await waitFor("a failed reload", () => (reloads.some((r) => r !== null) ? true : undefined), { timeoutMs: 5_000, intervalMs: 10 });
      expect(map.lookup("second-token-0123456789").ok).toBe(true);

      await writeFile(file, JSON.stringify({ [hashToken("third-token-0123456789")]: { actor: "c", role: "admin" } }));
      process.kill(process.pid, "SIGHUP");
      await waitFor("reload on SIGHUP", () => (map.lookup("third-token-0123456789").ok ? true : undefined), { timeoutMs: 5_000, intervalMs: 10 });
    } finally {
      map.close();
    }
  });

  it("[security] 401 and 403 refusals are audited, before the answer, without the token", async () => {
    const app = build();
    const r = await app.inject({ method: "GET", url: "/v1/things?q=1" });
    expect(r.statusCode).toBe(401);
    // No wait: the record was written before the answer left.
    expect(await lastRecord()).toMatchObject({ kind: "unauthorized", actor: "anonymous", outcome: "refused", status: 401, target: "GET /v1/things", body: null });
    await app.inject({ method: "POST", url: "/v1/things", headers: auth("stolen-or-guessed-token-1"), payload: { name: "x" } });
    const rec = await lastRecord();
    expect(rec).toMatchObject({ kind: "unauthorized", actor: expect.stringMatching(/^unknown-token:[0-9a-f]{12}$/) as string, status: 401 });
    expect(JSON.stringify(rec)).not.toContain("stolen-or-guessed");
    expect((await app.inject({ method: "GET", url: "/v1/costly", headers: auth(OP) })).statusCode).toBe(403);
    expect(await lastRecord()).toMatchObject({ actor: "otto", role: "operator", outcome: "refused", status: 403 });
    expect((await app.inject({ method: "POST", url: "/v1/things", headers: auth(OP), payload: { name: "y" } })).statusCode).toBe(200);
    expect(await lastRecord()).toMatchObject({ kind: "post-things", actor: "otto", outcome: "accepted", status: 200, body: { name: "y" } });
  });

  it("[security] writes and expensive reads are rate-limited per token; plain reads are not", async () => {
    const app = build({ rateLimits: { writes: 3, expensiveReads: 2, windowMs: 60_000 } });
    const post = (t: string) => app.inject({ method: "POST", url: "/v1/things", headers: auth(t), payload: { name: "x" } });
    for (let i = 0; i < 3; i++) expect((await post(OP)).statusCode).toBe(200);
    const before = await lastSeq();
    const limited = await post(OP);
    expect(limited.statusCode).toBe(429);
    expect(limited.json()).toMatchObject({ error: { code: "rate_limited" } });
    expect(limited.headers["retry-after"]).toBeDefined();
    expect(await lastSeq()).toBe(before);
    // Another token has its own budget; reads are not limited.
    expect((await post(ADMIN)).statusCode).toBe(200);
    for (let i = 0; i < 10; i++) expect((await app.inject({ method: "GET", url: "/v1/things", headers: auth(OP) })).statusCode).toBe(200);
    for (let i = 0; i < 2; i++) expect((await app.inject({ method: "GET", url: "/v1/costly", headers: auth(ADMIN) })).statusCode).toBe(200);
    expect((await app.inject({ method: "GET", url: "/v1/costly", headers: auth(ADMIN) })).statusCode).toBe(429);
  });
});
