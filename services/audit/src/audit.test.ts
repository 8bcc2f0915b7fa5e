import { subjects, type CommandRecord, type MoltEvent } from "@molt/contracts";
import { createTemplate, type Db, type DatabaseTemplate } from "@molt/db";
import { createEventStore, ensureAuditStream, ensureEventStream, STREAM_AUDIT, type EventStore } from "@molt/event-store";
import { createLogger, parseTokens } from "@molt/runtime";
import { startNatsServer, waitFor, type NatsServer } from "@molt/testkit";
import { jetstream, type JetStreamClient } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateKeyPairSync } from "node:crypto";
import { buildApp } from "./app.js";
import type { AuditRow } from "./log/schema.js";
import { anchorKey as anchorKeyOf } from "./log/anchor.js";
import { entryHash, GENESIS } from "./log/chain.js";

type App = Awaited<ReturnType<typeof buildApp>>;

const VIEWER = "viewer-token-0123456789";
const ADMIN = "admin-token-0123456789";
const tokens = parseTokens(JSON.stringify({ [VIEWER]: { actor: "vera", role: "viewer" }, [ADMIN]: { actor: "ada", role: "admin" } }), "test");
const auth = { authorization: `Bearer ${VIEWER}` };
const admin = { authorization: `Bearer ${ADMIN}` };
const anchorKey = anchorKeyOf(generateKeyPairSync("ed25519").privateKey.export({ format: "pem", type: "pkcs8" }).toString());
const logger = createLogger("audit-test");
logger.level = "warn";

let server: NatsServer;
let nc: NatsConnection;
let js: JetStreamClient;
let store: EventStore;
// One PGlite for the file, cloned per test: a fresh PGlite costs seconds.
let template: DatabaseTemplate;
const apps: App[] = [];

beforeAll(async () => {
  [server, template] = await Promise.all([startNatsServer(), createTemplate()]);
  nc = await connect({ servers: server.url });
  await ensureEventStream(nc);
  await ensureAuditStream(nc);
  store = createEventStore(nc);
  js = jetstream(nc);
});
afterAll(async () => {
  await Promise.all(apps.map((a) => a.close()));
  await template?.close();
  await nc?.close();
  await server?.stop();
});

let n = 0;
const uniq = () => `${Date.now().toString(36)}${++n}`;

async function start(db: Db): Promise<App> {
  // Each app anchors to its own bucket: the tests share one nats-server.
  const app = await buildApp({ db, nc, logger, tokens, retryMs: 50, anchorKey, anchorBucket: `anchor_${uniq()}`, anchorEveryMs: 60_000, rateLimits: false });
  apps.push(app);
  return app;
}
async function close(app: App): Promise<void> {
  apps.splice(apps.indexOf(app), 1);
  await app.close();
}
const get = (app: App, url: string) => app.inject({ method: "GET", url, headers: auth });
const verify = async (app: App, query = "full=true") => (await app.inject({ method: "GET", url: `/v1/audit/verify?${query}`, headers: admin })).json<{ ok: boolean; checked: number; firstBadId?: number; reason?: string; fromId: number; headId: number }>();

/** What action publishes for each operator command (JetStream, msgID = record id). */
async function publishCommand(r: Partial<CommandRecord> & { actor: string }): Promise<number> {
  const record: CommandRecord = {
    id: `cmd-${uniq()}`,
    kind: "create-deployment",
    role: "operator",
    at: new Date().toISOString(),
    target: null,
    outcome: "accepted",
    status: 202,
    body: { component: "metrics-agent", version: "2.1.0", hosts: ["web-1.example.com"] },
    ...r,
  };
  const ack = await js.publish(subjects.command(record.kind), JSON.stringify(record), { msgID: record.id });
  return ack.seq;
}

const envelope = (id: string, type: MoltEvent["type"], data: unknown, actor: string) =>
  ({ id, type, data, metadata: { occurredAt: new Date().toISOString(), actor, correlationId: "c" } }) as MoltEvent;

/** A deployment request by `actor`, then a two-event slot commit on one host. */
async function appendEvents(actor: string) {
  const id = `d-${uniq()}`;
  const host = `web-1.${id}.example.com`;
  const dep = await store.append(
    subjects.deployment(id),
    {
      commitId: `${id}-1`,
      events: [
        envelope(`${id}-1/0`, "DeploymentRequested", {
          deploymentId: id,
          component: "metrics-agent",
          version: "2.1.0",
          hosts: [host],
          idempotencyKey: null,
          requestHash: "c".repeat(64),
          taskTimeoutMs: 60_000,
        }, actor),
      ],
    },
    { expectedSequence: 0 },
  );
  const taskId = `t-${id}`;
  const now = new Date().toISOString();
  const slot = await store.append(
    subjects.slot(host, "metrics-agent"),
    {
      commitId: `${id}-slot-1`,
      events: [
        envelope(`${id}-slot-1/0`, "TaskStepStarted", { taskId, seq: 2, step: "begin", at: now }, `host:${host}`),
        envelope(`${id}-slot-1/1`, "TaskStepSucceeded", { taskId, seq: 3, step: "begin", at: now, durationMs: 5 }, `host:${host}`),
      ],
    },
    { expectedSequence: 0 },
  );
  return { id, host, lastSeq: Math.max(dep.seq, slot.seq) };
}

async function caughtUp(app: App, want: { events?: number; commands?: number }): Promise<void> {
  await waitFor("audit checkpoints", async () => {
    const s = (await get(app, "/v1/audit/status")).json<{ streams: Array<{ stream: string; checkpoint: number }> }>();
    const cp = (name: string) => s.streams.find((x) => x.stream === name)?.checkpoint ?? 0;
    return cp("MOLT_EVENTS") >= (want.events ?? 0) && cp(STREAM_AUDIT) >= (want.commands ?? 0) ? true : undefined;
  }, { timeoutMs: 15_000 });
}

interface Entry {
  id: number;
  source: string;
  sourceStream: string;
  sourceSeq: number;
  sourceIdx: number;
  at: string;
  actor: string;
  kind: string;
  target: string | null;
  outcome: string | null;
  data: Record<string, unknown>;
  prevHash: string;
  hash: string;
}
const entries = async (app: App, query: string) => (await get(app, `/v1/audit?${query}`)).json<{ entries: Entry[] }>().entries;

describe("audit: every command and event in an append-only, hash-chained log", () => {
  it("[spine] commands and events become entries with their actor; the chain verifies", async () => {
    const app = await start(await template.fresh());
    const actor = `alice-${uniq()}`;
    const cmdSeq = await publishCommand({ actor, target: "d-target-1" });
    const ev = await appendEvents(actor);
    await caughtUp(app, { events: ev.lastSeq, commands: cmdSeq });

    const mine = await entries(app, `actor=${actor}`);
    // The two streams are followed side by side, so their entries interleave in either order.
    expect(mine.map((e) => `${e.source}:${e.kind}`).sort()).toEqual(["command:create-deployment", "event:DeploymentRequested"]);
    const cmd = mine.find((e) => e.source === "command")!;
    expect(cmd).toMatchObject({ actor, kind: "create-deployment", target: "d-target-1", outcome: "accepted", sourceStream: STREAM_AUDIT, sourceSeq: cmdSeq });
    expect(cmd.data).toMatchObject({ role: "operator", status: 202, body: { component: "metrics-agent" } });
    const req = mine.find((e) => e.source === "event")!;
    expect(req).toMatchObject({ actor, kind: "DeploymentRequested", target: ev.id, sourceStream: "MOLT_EVENTS", outcome: null });

    // A two-event commit is two entries, in order, targeted at the host.
    const onHost = await entries(app, `target=${ev.host}&after=0`);
    expect(onHost.map((e) => [e.kind, e.sourceIdx])).toEqual([
      ["TaskStepStarted", 0],
      ["TaskStepSucceeded", 1],
    ]);
    expect(onHost[1]!.prevHash).toBe(onHost[0]!.hash);
    expect(onHost[0]!.sourceSeq).toBe(onHost[1]!.sourceSeq);

    const all = await entries(app, "limit=1000&after=0");
    expect(await verify(app)).toMatchObject({ ok: true, checked: all.length });
  });

  it("[spine] UPDATE and DELETE are refused by the database; a tampered row is found by verify", async () => {
    const db = await template.fresh();
    const app = await start(db);
    const actor = `bob-${uniq()}`;
    const cmdSeq = await publishCommand({ actor, kind: "cancel-deployment", outcome: "refused", status: 409 });
    const ev = await appendEvents(actor);
    await caughtUp(app, { events: ev.lastSeq, commands: cmdSeq });
    const victim = (await entries(app, `actor=${actor}&source=command`))[0]!;

    await expect(db.query("UPDATE audit_log SET actor = 'mallory' WHERE id = $1", [victim.id])).rejects.toThrow(/append-only: UPDATE refused/);
    await expect(db.query("DELETE FROM audit_log WHERE id = $1", [victim.id])).rejects.toThrow(/append-only: DELETE refused/);
    await expect(db.exec("TRUNCATE audit_log")).rejects.toThrow(/append-only: TRUNCATE refused/);
    expect(await verify(app)).toMatchObject({ ok: true });

    // Someone with the table's owner rights goes around the trigger.
    await db.exec("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only");
    await db.query(`UPDATE audit_log SET data = jsonb_set(data, '{status}', '202') WHERE id = $1`, [victim.id]);
    await db.exec("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only");
    const verdict = await verify(app);
    expect(verdict.ok).toBe(false);
    expect(verdict.firstBadId).toBe(victim.id);
    expect(verdict.checked).toBe((await entries(app, `before=${victim.id + 1}&limit=1000`)).length);
  });

  it("[spine] a restart resumes from the checkpoints: no entry twice, the chain continues", async () => {
    const db = await template.fresh();
    let app = await start(db);
    const actor = `carol-${uniq()}`;
    const ev = await appendEvents(actor);
    const cmdSeq = await publishCommand({ actor });
    await caughtUp(app, { events: ev.lastSeq, commands: cmdSeq });
    const count = async () => (await db.query<{ c: number }>("SELECT count(*)::int AS c FROM audit_log")).rows[0]!.c;
    const before = await count();
    await close(app);

    app = await start(db);
    const more = await appendEvents(actor);
    const cmd2 = await publishCommand({ actor, kind: "pause-deployment" });
    await caughtUp(app, { events: more.lastSeq, commands: cmd2 });
    // Only the new messages were added: 3 entries from the events, 1 command.
    expect(await count()).toBe(before + 4);
    const dupes = await db.query("SELECT source_stream, source_seq, source_idx FROM audit_log GROUP BY 1, 2, 3 HAVING count(*) > 1");
    expect(dupes.rows).toEqual([]);
    expect(await verify(app)).toMatchObject({ ok: true, checked: before + 4 });
  });

  it("[spine] two workers on one database: each message audited once, one unbroken chain", async () => {
    const db = await template.fresh();
    const one = await start(db);
    const two = await start(db);
    const actor = `frank-${uniq()}`;
    let cmd = 0;
    let ev = 0;
    for (let i = 0; i < 3; i++) {
      ev = (await appendEvents(actor)).lastSeq;
      cmd = await publishCommand({ actor, kind: `step-${i}` });
    }
    await caughtUp(one, { events: ev, commands: cmd });
    await caughtUp(two, { events: ev, commands: cmd });
    const dupes = await db.query("SELECT source_stream, source_seq, source_idx FROM audit_log GROUP BY 1, 2, 3 HAVING count(*) > 1");
    expect(dupes.rows).toEqual([]);
    expect(await entries(one, `actor=${actor}&source=command`)).toHaveLength(3);
    expect(await verify(two)).toMatchObject({ ok: true });
  });

  it("[spine] a malformed command record is kept as invalid-command and the log goes on", async () => {
    const app = await start(await template.fresh());
    const bad = await js.publish(subjects.command("create-deployment"), "{not json", { msgID: `bad-${uniq()}` });
    const actor = `dave-${uniq()}`;
    const good = await publishCommand({ actor });
    await caughtUp(app, { commands: Math.max(bad.seq, good) });
    const invalid = (await entries(app, "kind=invalid-command")).find((e) => e.sourceSeq === bad.seq)!;
    expect(invalid).toMatchObject({ source: "command", outcome: "invalid", actor: "unknown", target: "molt.audit.command.create-deployment" });
    expect(invalid.data).toMatchObject({ raw: "{not json" });
    expect(await entries(app, `actor=${actor}`)).toHaveLength(1);
    expect(await verify(app)).toMatchObject({ ok: true });
  });

  it("[spine] the query is validated and pages both ways", async () => {
    const app = await start(await template.fresh());
    const actor = `erin-${uniq()}`;
    let last = 0;
    for (let i = 0; i < 5; i++) last = await publishCommand({ actor, kind: `cmd-${i}` });
    await caughtUp(app, { commands: last });
    expect((await get(app, "/v1/audit?limit=1001")).statusCode).toBe(400);
    expect((await get(app, "/v1/audit?source=other")).statusCode).toBe(400);
    expect((await get(app, "/v1/audit?since=yesterday")).statusCode).toBe(400);
    expect((await get(app, "/v1/audit?nope=1")).statusCode).toBe(400);
    expect((await app.inject({ method: "GET", url: "/v1/audit" })).statusCode).toBe(401);

    const newest = await entries(app, `actor=${actor}&limit=2`);
    expect(newest.map((e) => e.kind)).toEqual(["cmd-4", "cmd-3"]);
    const next = await entries(app, `actor=${actor}&limit=2&before=${newest[1]!.id}`);
    expect(next.map((e) => e.kind)).toEqual(["cmd-2", "cmd-1"]);
    const oldest = await entries(app, `actor=${actor}&after=0&limit=2`);
    expect(oldest.map((e) => e.kind)).toEqual(["cmd-0", "cmd-1"]);
    expect(await entries(app, `actor=${actor}&since=${new Date(Date.now() + 60_000).toISOString()}`)).toEqual([]);
    expect(await entries(app, `actor=${actor}&source=event`)).toEqual([]);
  });
});

describe("audit: anchored chain, guarded verify, safe filters", () => {
  it("[security] verify is admin-only and incremental: a second pass starts from the last verified entry", async () => {
    const app = await start(await template.fresh());
    const actor = `ivy-${uniq()}`;
    const first = await appendEvents(actor);
    await caughtUp(app, { events: first.lastSeq });
    expect((await get(app, "/v1/audit/verify")).statusCode).toBe(403);
    const full = await verify(app, "");
    expect(full).toMatchObject({ ok: true, fromId: 0 });
    const more = await appendEvents(actor);
    await caughtUp(app, { events: more.lastSeq });
    const incremental = await verify(app, "");
    expect(incremental).toMatchObject({ ok: true, fromId: full.headId, checked: incremental.headId - full.headId });
    expect(incremental.checked).toBe(3);
  });

  it("[security] deleting the tail is detected and pinpointed, against the signed anchor outside the table", async () => {
    const db = await template.fresh();
    const app = await start(db);
    const ev = await appendEvents(`jay-${uniq()}`);
    const cmd = await publishCommand({ actor: `jay-${uniq()}` });
    await caughtUp(app, { events: ev.lastSeq, commands: cmd });
    const anchor = await app.anchorNow();
    expect(anchor).not.toBeNull();
    expect(await verify(app)).toMatchObject({ ok: true });
    // The table's owner goes around the triggers and cuts the last two entries off.
    await db.exec("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only");
    await db.query("DELETE FROM audit_log WHERE id > $1", [anchor!.id - 2]);
    await db.exec("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only");
    // The chain that is left is internally sound: only the anchor tells.
    expect(await verify(app)).toMatchObject({ ok: false, reason: "tail-deleted", firstBadId: anchor!.id - 1 });
  });

  it("[security] rewriting a row and re-hashing the chain after it is detected and the row pinpointed", async () => {
    const db = await template.fresh();
    const app = await start(db);
    const actor = `kim-${uniq()}`;
    let last = 0;
    for (let i = 0; i < 4; i++) last = await publishCommand({ actor, kind: `step-${i}` });
    await caughtUp(app, { commands: last });
    await app.anchorNow();
    const rows = (await entries(app, `actor=${actor}&after=0`)).map((e) => e.id);
    const victim = rows[1]!;
    // Rewrite the victim's actor, then recompute every hash from it on, as a careful forger would.
    await db.exec("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only");
    await db.query("UPDATE audit_log SET actor = 'mallory' WHERE id = $1", [victim]);
    const all = await db.query<AuditRow>("SELECT * FROM audit_log WHERE id >= $1 ORDER BY id", [victim]);
    let prev = (await db.query<{ hash: string }>("SELECT hash FROM audit_log WHERE id < $1 ORDER BY id DESC LIMIT 1", [victim])).rows[0]?.hash ?? GENESIS;
    for (const r of all.rows) {
      const hash = entryHash(prev, { source: r.source, sourceStream: r.source_stream, sourceSeq: Number(r.source_seq), sourceIdx: r.source_idx, at: r.at.toISOString(), actor: r.actor, kind: r.kind, target: r.target, outcome: r.outcome, data: r.data });
      await db.query("UPDATE audit_log SET prev_hash = $1, hash = $2 WHERE id = $3", [prev, hash, r.id]);
      prev = hash;
    }
    await db.exec("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only");
    expect(await verify(app)).toMatchObject({ ok: false, reason: "rewritten", firstBadId: victim });
  });

  it("[security] NUL, invalid UTF-8, year 0 and out-of-range ids in filters are 400s, not database errors", async () => {
    const app = await start(await template.fresh());
    for (const q of ["actor=a%00b", "kind=%FF", "target=%ED%A0%80", "since=0000-01-01T00:00:00Z", "since=0000-01-01T00:00:00%2B01:00", "after=99999999999999999999", "before=1e300"]) {
      const r = await get(app, `/v1/audit?${q}`);
      expect(r.statusCode, q).toBe(400);
      expect(r.json()).toMatchObject({ error: { code: "validation", message: expect.any(String) as string } });
    }
  });

  it("[security] a command record dated 0000-01-01 is kept as invalid-command and the log goes on", async () => {
    const app = await start(await template.fresh());
    const actor = `lou-${uniq()}`;
    const bad = await publishCommand({ actor, at: "0000-01-01T00:00:00Z" });
    const good = await publishCommand({ actor });
    await caughtUp(app, { commands: good });
    expect((await entries(app, "kind=invalid-command")).some((e) => e.sourceSeq === bad)).toBe(true);
    expect(await entries(app, `actor=${actor}`)).toHaveLength(1);
    expect(await verify(app)).toMatchObject({ ok: true });
  });
});


describe("audit: runs of messages", () => {
  it("[scale-faults] commits trickling in a few ms apart are appended in a few transactions, the chain unbroken", async () => {
    const db = await template.fresh();
    const app = await start(db);
    const id = `d-${uniq()}`;
    const actor = `trickle-${uniq()}`;
    let last = 0;
    // A rollout's pace: a commit every ~10 ms (the sleep makes the trickle; nothing waits on it).
    for (let i = 0; i < 40; i++) {
      const { seq } = await store.append(
        subjects.slot(`host-${i}.${id}.example.com`, "metrics-agent"),
        { commitId: `${id}-${i}`, events: [envelope(`${id}-${i}/0`, "TaskStepStarted", { taskId: `t-${id}-${i}`, seq: 2, step: "begin", at: new Date().toISOString() }, actor)] },
        { expectedSequence: 0 },
      );
      last = seq;
      await new Promise((r) => setTimeout(r, 10));
    }
    await caughtUp(app, { events: last });
    const mine = await entries(app, `actor=${actor}&limit=100`);
    expect(mine).toHaveLength(40);
    // Rows written by one transaction share its xmin. Without the wait (or with 20 ms) each run
    // held a commit or two: 20 or more transactions here.
    const tx = await db.query<{ n: number }>("SELECT count(DISTINCT xmin::text)::int AS n FROM audit_log WHERE actor = $1", [actor]);
    expect(tx.rows[0]!.n).toBeLessThanOrEqual(6);
    expect(await verify(app)).toMatchObject({ ok: true });
  });
});
