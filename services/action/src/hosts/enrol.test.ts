import { deploymentRepository } from "@molt/aggregates";
import { CommandRecord } from "@molt/contracts";
import { createEventStore, ensureAuditStream, ensureEventStream, STREAM_AUDIT } from "@molt/event-store";
import { commandLog, createBusAuthority, createLogger, hashToken, hostIssuer, parseTokens } from "@molt/runtime";
import { startNatsServer, waitFor, type NatsServer } from "@molt/testkit";
import { jetstream } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildApp } from "../deployments/routes.js";
import { loadEnrolKeys, parseEnrolKeys } from "./enrol-keys.js";

let server: NatsServer;
let nc: NatsConnection;
let app: ReturnType<typeof buildApp>;
const OP = { authorization: "Bearer operator-token-0123456789" };
const VIEWER = { authorization: "Bearer viewer-token-0123456789" };
const RACK_KEY = "rack-12-enrol-key-0123456789";
const OLD_KEY = "old-enrol-key-0123456789abcd";
const hour = 3_600_000;

beforeAll(async () => {
  server = await startNatsServer();
  nc = await connect({ servers: server.url });
  await ensureEventStream(nc);
  await ensureAuditStream(nc);
  const logger = createLogger("action-enrol-test");
  logger.level = "warn";
  app = buildApp({
    logger,
    tokens: parseTokens(
      JSON.stringify({ "operator-token-0123456789": { actor: "otto", role: "operator" }, "viewer-token-0123456789": { actor: "vera", role: "viewer" } }),
      "t",
    ),
    deployments: deploymentRepository(createEventStore(nc)),
    commands: commandLog(nc, logger),
    defaultTaskTimeoutMs: 60_000,
    rateLimits: false,
    hostIssuer: hostIssuer(createBusAuthority()),
    enrolKeys: parseEnrolKeys(
      JSON.stringify({
        [hashToken(RACK_KEY)]: { name: "rack-12", hosts: "web-*.dc1", expiresAt: new Date(Date.now() + hour).toISOString(), uses: 2 },
        [hashToken(OLD_KEY)]: { name: "old", hosts: "*", expiresAt: new Date(Date.now() - 60_000).toISOString(), uses: 100 },
      }),
      "test",
    ),
  });
});
afterAll(async () => {
  await app?.close();
  await nc?.close();
  await server?.stop();
});

const enrol = (hostId: string, headers: Record<string, string>) => app.inject({ method: "POST", url: `/v1/hosts/${hostId}/enrol`, headers });
const withKey = (key: string) => ({ "x-molt-enrol-key": key });

async function enrolRecords(): Promise<CommandRecord[]> {
  const c = await jetstream(nc).consumers.get(STREAM_AUDIT, { filter_subjects: "molt.audit.command.>" });
  const out: CommandRecord[] = [];
  const it = await c.fetch({ max_messages: 1000, expires: 1000 });
  for await (const m of it) {
    out.push(CommandRecord.parse(m.json()));
    if (m.info.pending === 0) break;
  }
  return out;
}

describe("action: POST /v1/hosts/:hostId/enrol with a scoped enrolment key", () => {
  it("[security] a scoped key enrols only host ids its glob matches, at most its number of uses", async () => {
    const first = await enrol("web-1.dc1", withKey(RACK_KEY));
    expect(first.statusCode, first.body).toBe(201);
    const issued = first.json<{ hostId: string; credentials: string }>();
    expect(issued.hostId).toBe("web-1.dc1");
    expect(issued.credentials).toContain("NATS USER JWT");
    expect((await enrol("web-2.dc1", withKey(RACK_KEY))).statusCode).toBe(201);
    const third = await enrol("web-3.dc1", withKey(RACK_KEY));
    expect(third.statusCode).toBe(403);
    expect(third.json()).toEqual({ error: { code: "forbidden", message: "enrolment key rack-12 is used up (2 uses)" } });
  });

  it("[security] a key used outside its scope, expired or unknown is a 4xx with no credentials, audited with the key's name", async () => {
    const outside = await enrol("db-1.dc1", withKey(RACK_KEY));
    expect(outside.statusCode).toBe(403);
    expect(outside.json()).toEqual({ error: { code: "forbidden", message: "enrolment key rack-12 may enrol only hosts matching web-*.dc1" } });
    expect((await enrol("web-1.dc2", withKey(RACK_KEY))).statusCode).toBe(403);
    // The glob is anchored and its dots literal: a suffix or a look-alike does not match.
    expect((await enrol("web-1xdc1", withKey(RACK_KEY))).statusCode).toBe(403);
    expect((await enrol("web-1.dc1.evil", withKey(RACK_KEY))).statusCode).toBe(403);
    const expired = await enrol("web-9.dc1", withKey(OLD_KEY));
    expect(expired.statusCode).toBe(401);
    expect(expired.json()).toEqual({ error: { code: "unauthorized", message: "enrolment key old expired" } });
    const unknown = await enrol("web-9.dc1", withKey("not-a-key-0123456789abcdef"));
    expect(unknown.statusCode).toBe(401);
    for (const r of [outside, expired, unknown]) expect(r.body).not.toContain("NATS USER JWT");

    const records = await waitFor("enrol refusals audited", async () => {
      const all = await enrolRecords();
      const found = all.filter((r) => r.outcome === "refused" && (r.target === "db-1.dc1" || r.target === "web-9.dc1"));
      return found.length >= 3 ? all : undefined;
    });
    expect(records.find((r) => r.target === "db-1.dc1")).toMatchObject({ kind: "enrol-host", actor: "enrol-key:rack-12", outcome: "refused", status: 403 });
    expect(records.find((r) => r.actor === "enrol-key:old")).toMatchObject({ kind: "unauthorized", target: "web-9.dc1", outcome: "refused", status: 401 });
    expect(records.find((r) => r.actor === "enrol-key:rack-12" && r.outcome === "accepted")).toMatchObject({ kind: "enrol-host", target: "web-1.dc1", status: 201 });
    // Neither the key nor the credentials are in any record.
    expect(JSON.stringify(records)).not.toContain(RACK_KEY);
    expect(JSON.stringify(records)).not.toContain("NATS USER JWT");
  });

  it("[security] without a key: operators enrol any host; viewers 403; anonymous 401", async () => {
    expect((await enrol("db-7.dc3", OP)).statusCode).toBe(201);
    expect((await enrol("db-7.dc3", VIEWER)).statusCode).toBe(403);
    expect((await enrol("db-7.dc3", {})).statusCode).toBe(401);
  });
});

describe("enrolment keys file", () => {
  it("[security] removing a key from the file revokes it without a restart; a bad file keeps the keys in force", async () => {
    const file = join(mkdtempSync(join(tmpdir(), "molt-enrol-")), "enrol-keys.json");
    const entry = { name: "rack-12", hosts: "web-*", expiresAt: new Date(Date.now() + hour).toISOString(), uses: 100_000 };
    writeFileSync(file, JSON.stringify({ [hashToken(RACK_KEY)]: entry }));
    const reloads: Array<Error | null> = [];
    const keys = loadEnrolKeys(file, { pollMs: 20, onReload: (err) => reloads.push(err) });
    try {
      expect(keys.spend(RACK_KEY, "web-1")).toEqual({ ok: true, name: "rack-12" });
      // Each attempt rewrites the file with another size: a change made before the watcher's
      // first look would otherwise go unseen.
      let n = 0;
      await waitFor("bad file reported", () => {
        if (reloads.some((e) => e !== null)) return true;
        writeFileSync(file, `{ not json ${"x".repeat(n++)}`);
        return undefined;
      });
      expect(keys.spend(RACK_KEY, "web-2")).toEqual({ ok: true, name: "rack-12" });
      await waitFor("key revoked", () => {
        if (!keys.spend(RACK_KEY, "web-3").ok) return true;
        writeFileSync(file, `{}${" ".repeat(n++)}`);
        return undefined;
      });
      expect(keys.spend(RACK_KEY, "web-3")).toMatchObject({ ok: false, status: 401, message: "unknown enrolment key" });
    } finally {
      keys.close();
    }
  });

  it("[security] a key without an expiry, in clear, or with a bad glob is refused at load", () => {
    const ok = { name: "k", hosts: "web-*", expiresAt: new Date(Date.now() + hour).toISOString(), uses: 1 };
    expect(() => parseEnrolKeys(JSON.stringify({ [hashToken(RACK_KEY)]: { ...ok, expiresAt: undefined } }), "t")).toThrow(/expiresAt/);
    expect(() => parseEnrolKeys(JSON.stringify({ [RACK_KEY]: ok }), "t")).toThrow(/sha256/);
    expect(() => parseEnrolKeys(JSON.stringify({ [RACK_KEY]: ok }), "t")).not.toThrow(RACK_KEY);
    expect(() => parseEnrolKeys(JSON.stringify({ [hashToken(RACK_KEY)]: { ...ok, hosts: "web-(.*)" } }), "t")).toThrow(/glob/);
  });
});
