import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { RELEASE_DUPLICATE_WINDOW_MS, ReleaseEvent, releaseNameOf, releaseSubjects, STREAM_RELEASE, subjects, type MoltEvent } from "@molt/contracts";
import { createTemplate, type DatabaseTemplate, type Db } from "@molt/db";
import { createEventStore, ensureEventStream, type EventStore } from "@molt/event-store";
import { createLogger, parseTokens } from "@molt/runtime";
import { startNatsServer, waitFor, type NatsServer } from "@molt/testkit";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { Webhook } from "standardwebhooks";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildApp } from "./app.js";

type App = Awaited<ReturnType<typeof buildApp>>;
const ADMIN = "admin-token-0123456789";
const VIEWER = "viewer-token-0123456789";
const tokens = parseTokens(JSON.stringify({ [ADMIN]: { actor: "ada", role: "admin" }, [VIEWER]: { actor: "vera", role: "viewer" } }), "test");
const logger = createLogger("release-events-test");
logger.level = "warn";

let server: NatsServer;
let nc: NatsConnection;
let store: EventStore;
let template: DatabaseTemplate;
const apps: App[] = [];
const servers: Server[] = [];

beforeAll(async () => {
  [server, template] = await Promise.all([startNatsServer(), createTemplate()]);
  nc = await connect({ servers: server.url });
  await ensureEventStream(nc);
  await ensureEventStream(nc, { stream: STREAM_RELEASE, subjects: [releaseSubjects.all], duplicateWindowMs: RELEASE_DUPLICATE_WINDOW_MS });
  store = createEventStore(nc);
});
afterAll(async () => {
  await Promise.all(apps.map((a) => a.close()));
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  await template?.close();
  await nc?.close();
  await server?.stop();
});

let n = 0;
const uniq = () => `${Date.now().toString(36)}${++n}`;
// Attempts get 5 s: a loaded test machine answers slowly, and a timed-out attempt the receiver did take is delivered again.
const FAST = { timeoutMs: 5_000, retryMinMs: 20, retryMaxMs: 100, giveUpMs: 60_000, pollMs: 50 };

/**
 * The apps share one nats-server, MOLT_EVENTS and MOLT_RELEASE: each derives every commit, and
 * the stream's msgID dedupe keeps one of each; tests tell theirs apart by a unique component.
 */
async function start(db: Db, opts: { timings?: Partial<typeof FAST>; allowNets?: string[] } = {}) {
  const app = await buildApp({ db, nc, logger, tokens, allowNets: opts.allowNets ?? ["127.0.0.0/8"], timings: { ...FAST, ...opts.timings }, rateLimits: false, retryMs: 50 });
  apps.push(app);
  return { app, stream: STREAM_RELEASE };
}
const api = (app: App, method: "GET" | "POST" | "DELETE", url: string, body?: unknown, token = ADMIN) =>
  app.inject({ method, url, headers: { authorization: `Bearer ${token}` }, ...(body !== undefined ? { payload: body as object } : {}) });

const meta = () => ({ occurredAt: new Date().toISOString(), actor: "otto", correlationId: "c" });
const ev = (id: string, type: MoltEvent["type"], data: unknown) => ({ id, type, data, metadata: meta() }) as MoltEvent;

/** Each slot's last sequence (the second rollout of a test reuses its hosts). */
const slotSeqs = new Map<string, number>();
async function appendSlot(host: string, component: string, commitId: string, e: MoltEvent) {
  const subject = subjects.slot(host, component);
  const r = await store.append(subject, { commitId, events: [e] }, { expectedSequence: slotSeqs.get(subject) ?? 0 });
  slotSeqs.set(subject, r.seq);
}

/** A deployment of `component` on `hosts`: requested, planned, each host allocated then succeeded (or failed), completed. */
async function rollout(component: string, hosts: string[], failing: string[] = []) {
  const id = `d-${uniq()}`;
  let seq = 0;
  const dep = async (events: MoltEvent[]) => {
    const r = await store.append(subjects.deployment(id), { commitId: `${id}-${seq + 1}`, events }, { expectedSequence: seq === 0 ? 0 : seq });
    seq = r.seq;
  };
  await dep([ev(`${id}-1/0`, "DeploymentRequested", { deploymentId: id, component, version: "2.0.0", hosts, idempotencyKey: null, requestHash: "c".repeat(64), taskTimeoutMs: 60_000 })]);
  await dep([ev(`${id}-2/0`, "DeploymentPlanned", { deploymentId: id, planId: "p1", parts: 0, packages: {}, batches: [{ index: 0, kind: "batch", size: hosts.length }], skipped: 0 })]);
  const now = new Date().toISOString();
  for (const h of hosts) {
    const t = `t-${id}-${h}`.replaceAll(".", "-");
    const last = failing.includes(h)
      ? ev(`${t}-2/0`, "TaskFailed", { taskId: t, seq: 2, at: now, reason: "injected", step: "download" })
      : ev(`${t}-2/0`, "TaskSucceeded", { taskId: t, seq: 2, at: now, version: "2.0.0" });
    await appendSlot(h, component, `${t}-1`, ev(`${t}-1/0`, "TaskAllocated", { taskId: t, deploymentId: id, hostId: h, component, version: "2.0.0", fromVersion: "1.0.0", attempt: 1, deadline: now }));
    await appendSlot(h, component, `${t}-2`, last);
  }
  const failed = failing.length;
  await dep([ev(`${id}-3/0`, "BatchCompleted", { deploymentId: id, index: 0, succeeded: hosts.length - failed, failed })]);
  await dep([ev(`${id}-4/0`, "DeploymentCompleted", { deploymentId: id, succeeded: hosts.length - failed, failed, skipped: 0 })]);
  return id;
}

async function streamEvents(stream: string) {
  const jsm = await jetstreamManager(nc);
  const last = (await jsm.streams.info(stream)).state.last_seq;
  const out: Array<{ subject: string; event: ReleaseEvent; msgId: string | undefined }> = [];
  for (let s = 1; s <= last; s++) {
    const m = await jsm.streams.getMessage(stream, { seq: s }).catch(() => null);
    if (m) out.push({ subject: m.subject, event: ReleaseEvent.parse(m.json()) as ReleaseEvent, msgId: m.header?.get("Nats-Msg-Id") });
  }
  return out;
}

interface Received {
  id: string;
  body: string;
  headers: Record<string, string>;
  at: number;
}
/** A webhook receiver on 127.0.0.1: `mode` decides its answers; it can go down and come back on its port. */
async function receiver(mode: "ok" | "500" | "hang" | "slow-body" = "ok") {
  const got: Received[] = [];
  const state = { mode, hits: 0 };
  const handle = (req: IncomingMessage, res: ServerResponse) => {
    let body = "";
    req.on("data", (c: Buffer) => (body += c.toString()));
    req.on("end", () => {
      state.hits++;
      if (state.mode === "hang") return;
      if (state.mode === "500") return void res.writeHead(500).end();
      if (state.mode === "slow-body") {
        // Takes the event and answers 200 at once, but its answer's body ends only a second later.
        got.push({ id: String(req.headers["webhook-id"]), body, headers: req.headers as Record<string, string>, at: Date.now() });
        res.writeHead(200, { "content-type": "text/plain" });
        res.write("stored");
        setTimeout(() => res.end(), 1_000);
        return;
      }
      got.push({ id: String(req.headers["webhook-id"]), body, headers: req.headers as Record<string, string>, at: Date.now() });
      res.writeHead(204).end();
    });
  };
  let srv = createServer(handle);
  servers.push(srv);
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const port = (srv.address() as AddressInfo).port;
  return {
    got,
    state,
    url: `http://127.0.0.1:${port}/hook`,
    async down() {
      srv.closeAllConnections();
      await new Promise((r) => srv.close(r));
    },
    async up() {
      srv = createServer(handle);
      servers.push(srv);
      await new Promise<void>((r) => srv.listen(port, "127.0.0.1", r));
    },
  };
}

async function subscribe(app: App, url: string, filters?: unknown, more: Record<string, unknown> = {}) {
  const r = await api(app, "POST", "/v1/webhooks", { url, ...(filters ? { filters } : {}), ...more });
  expect(r.statusCode, r.body).toBe(201);
  return r.json<{ id: string; secret: string; state: string; cursor: number }>();
}

describe("release events: derived from the event store, published once", () => {
  it("[release-events] a rollout with one failed host gives the expected events on molt.release.<component>.<type>, msgID = id; a restart publishes none twice", async () => {
    const db = await template.fresh();
    const { app, stream } = await start(db);
    const component = `c${uniq()}`.replace(/[^a-z0-9]/g, "");
    const id = await rollout(component, ["web-1.example.com", "web-2.example.com"], ["web-2.example.com"]);
    const want = ["deployment.started", "host.upgraded", "host.upgrade-failed", "deployment.batch-completed", "deployment.completed"];
    const mine = async () => (await streamEvents(stream)).filter((e) => e.subject.startsWith(`molt.release.${component}.`));
    await waitFor("5 release events", async () => ((await mine()).length >= want.length ? true : undefined), { timeoutMs: 20_000 });
    const got = await mine();
    expect(got.map((e) => e.event.type)).toEqual(want.map((t) => `dev.molt.${t}.v1`));
    expect(got.map((e) => e.subject)).toEqual(want.map((t) => `molt.release.${component}.${t}`));
    for (const e of got) expect(e.msgId).toBe(e.event.id);
    const failed = got.find((e) => e.event.type === "dev.molt.host.upgrade-failed.v1")!.event;
    expect(failed).toMatchObject({ subject: "web-2.example.com", source: `/molt/deployments/${id}`, data: { hostId: "web-2.example.com", component, fromVersion: "1.0.0", toVersion: "2.0.0", step: "download", reason: "injected", deploymentId: id } });

    // The checkpoint is set back (a crash before it committed): the same commits are derived
    // and published again, and the stream keeps one of each.
    await app.close();
    apps.splice(apps.indexOf(app), 1);
    await db.query("UPDATE checkpoints SET seq = 0 WHERE name = 'release-events'");
    await start(db);
    const lastSeq = await store.lastSequence();
    const checkpoint = async () => Number((await db.query<{ seq: string }>("SELECT seq FROM checkpoints WHERE name = 'release-events'")).rows[0]!.seq);
    await waitFor("caught up again", async () => ((await checkpoint()) >= lastSeq ? true : undefined), { timeoutMs: 20_000 });
    expect((await mine()).map((e) => e.event.id)).toEqual(got.map((e) => e.event.id));
  });

  it("[release-events] every public type is derived: package published and yanked, deployment braked, paused, failed, cancelled, a rollback rolled back, a host rejected or timed out; each validates against its schema, served at its dataschema's name", async () => {
    const { app } = await start(await template.fresh());
    const c = `c${uniq()}`.replace(/[^a-z0-9]/g, "");
    const sha = "a".repeat(64);
    const pkg = subjects.package(c);
    const p1 = await store.append(pkg, { commitId: `${c}-p1`, events: [ev(`${c}-p1/0`, "PackagePublished", { component: c, version: "2.0.0", platform: "linux-amd64", sha256: sha, size: 10, manifest: { component: c, version: "2.0.0", platform: "linux-amd64", sha256: sha, size: 10, files: 1, entries: 1, unpackedSize: 10 } })] }, { expectedSequence: 0 });
    await store.append(pkg, { commitId: `${c}-p2`, events: [ev(`${c}-p2/0`, "PackageYanked", { component: c, version: "2.0.0", reason: "broken" })] }, { expectedSequence: p1.seq });
    const deployment = (kind: "upgrade" | "rollback" = "upgrade", origin?: string) => {
      const id = `d-${uniq()}`;
      let seq = 0;
      const append = async (type: MoltEvent["type"], data: Record<string, unknown>) => {
        const r = await store.append(subjects.deployment(id), { commitId: `${id}-${seq + 1}`, events: [ev(`${id}-${seq + 1}/0`, type, { deploymentId: id, ...data })] }, { expectedSequence: seq });
        seq = r.seq;
      };
      return { id, append, start: async () => {
        await append("DeploymentRequested", { component: c, version: "2.0.0", hosts: ["web-1.example.com"], idempotencyKey: null, requestHash: "c".repeat(64), taskTimeoutMs: 60_000, kind, ...(origin ? { origin } : {}) });
        await append("DeploymentPlanned", { planId: "p1", parts: 0, packages: {}, batches: [{ index: 0, kind: "batch", size: 2 }], skipped: 0 });
      } };
    };
    const a = deployment();
    await a.start();
    await a.append("DeploymentBraked", { failed: 2, finished: 2, threshold: 0.5 });
    await a.append("DeploymentPaused", { reason: "braked" });
    await a.append("DeploymentFailed", { reason: "brake", succeeded: 0, failed: 2 });
    const b = deployment();
    await b.start();
    await b.append("DeploymentCancelled", { reason: "not today" });
    const r = deployment("rollback", a.id);
    await r.start();
    const now = new Date().toISOString();
    for (const [h, end] of [["web-1.example.com", "TaskRejected"], ["web-2.example.com", "TaskTimedOut"]] as const) {
      const t = `t-${r.id}-${h}`.replaceAll(".", "-");
      await appendSlot(h, c, `${t}-1`, ev(`${t}-1/0`, "TaskAllocated", { taskId: t, deploymentId: r.id, hostId: h, component: c, version: "1.0.0", fromVersion: "2.0.0", attempt: 1, deadline: now, kind: "rollback" }));
      await appendSlot(h, c, `${t}-2`, end === "TaskRejected" ? ev(`${t}-2/0`, end, { taskId: t, seq: 2, at: now, reason: "no copy kept" }) : ev(`${t}-2/0`, end, { taskId: t, deadline: now }));
    }
    await r.append("DeploymentCompleted", { succeeded: 0, failed: 2, skipped: 0 });

    const want = [
      "package.published", "package.yanked",
      "deployment.started", "deployment.braked", "deployment.paused", "deployment.failed",
      "deployment.started", "deployment.cancelled",
      "deployment.started", "host.upgrade-failed", "host.upgrade-failed", "deployment.rolled-back",
    ];
    // streamEvents parses each with ReleaseEvent: the envelope and the data of its own type.
    const mine = async () => (await streamEvents(STREAM_RELEASE)).filter((e) => e.subject.startsWith(`molt.release.${c}.`));
    await waitFor(`${want.length} release events`, async () => ((await mine()).length >= want.length ? true : undefined), { timeoutMs: 20_000 });
    const got = await mine();
    expect(got.map((e) => e.event.type)).toEqual(want.map((t) => `dev.molt.${t}.v1`));
    for (const e of got) {
      expect(e.event.dataschema).toBe(`https://molt.dev/schemas/release/${releaseNameOf(e.event.type)}.v1.json`);
      // The JSON Schema of the data, public (no token), at the dataschema URI's last segment.
      const r = await app.inject({ method: "GET", url: `/v1/release-events/schemas/${e.event.dataschema.split("/").at(-1)}` });
      expect(r.statusCode, r.body).toBe(200);
      const schema = r.json<{ $id: string; properties: Record<string, unknown>; required: string[] }>();
      expect(schema.$id).toBe(e.event.dataschema);
      expect(Object.keys(schema.properties).sort()).toEqual(Object.keys(e.event.data).sort());
      expect([...schema.required].sort()).toEqual(Object.keys(e.event.data).sort());
    }
    expect((await app.inject({ method: "GET", url: "/v1/release-events/schemas/nope.v1.json" })).statusCode).toBe(404);
    expect(got[1]!.event).toMatchObject({ source: `/molt/packages/${c}`, subject: "2.0.0", data: { platform: null, reason: "broken" } });
    expect(got[5]!.event.data).toMatchObject({ deploymentId: a.id, reason: "brake", failed: 2 });
    expect(got.slice(9, 11).map((e) => e.event.data)).toMatchObject([{ hostId: "web-1.example.com", step: null, reason: "no copy kept", fromVersion: "2.0.0", toVersion: "1.0.0" }, { hostId: "web-2.example.com", step: null, reason: expect.stringMatching(/^timed out/) as unknown }]);
    expect(got[11]!.event.data).toMatchObject({ deploymentId: r.id, kind: "rollback", origin: a.id, failed: 2 });
  });
});

describe("release events: runs of commits", () => {
  it("[release-events] commits trickling in a few ms apart (allocations among step reports) are derived in a few transactions", async () => {
    const db = await template.fresh();
    await start(db);
    const c = `c${uniq()}`.replace(/[^a-z0-9]/g, "");
    const id = `d-${uniq()}`;
    const now = new Date().toISOString();
    // A rollout's pace: a commit every ~10 ms, half of them step reports no release event comes from.
    for (let i = 0; i < 20; i++) {
      const h = `web-${i}.${c}.example.com`;
      const t = `t-${id}-${i}`;
      await appendSlot(h, c, `${t}-1`, ev(`${t}-1/0`, "TaskAllocated", { taskId: t, deploymentId: id, hostId: h, component: c, version: "2.0.0", fromVersion: "1.0.0", attempt: 1, deadline: now }));
      await new Promise((r) => setTimeout(r, 10));
      await appendSlot(h, c, `${t}-2`, ev(`${t}-2/0`, "TaskStepStarted", { taskId: t, seq: 2, step: "begin", at: now }));
      await new Promise((r) => setTimeout(r, 10));
    }
    const last = await store.lastSequence();
    const checkpoint = async () => Number((await db.query<{ seq: string }>("SELECT seq FROM checkpoints WHERE name = 'release-events'")).rows[0]?.seq ?? 0);
    await waitFor("caught up", async () => ((await checkpoint()) >= last ? true : undefined), { timeoutMs: 20_000 });
    const rows = await db.query<{ rows: number; tx: number }>("SELECT count(*)::int AS rows, count(DISTINCT xmin::text)::int AS tx FROM release_tasks WHERE component = $1", [c]);
    expect(rows.rows[0]!.rows).toBe(20);
    // Rows written by one transaction share its xmin. Without the wait each commit was its own
    // transaction: 20 here.
    expect(rows.rows[0]!.tx).toBeLessThanOrEqual(8);
  });
});

const component = () => `c${uniq()}`.replace(/[^a-z0-9]/g, "");
const eventsFor = (got: Received[], c: string) => got.map((r) => JSON.parse(r.body) as ReleaseEvent).filter((e) => "component" in e.data && e.data.component === c);

describe("webhooks: signed, durable, in order, never blocked by another receiver", () => {
  it("[release-events] the secret is shown once; the signature verifies with standardwebhooks and fails with a wrong secret; viewers may not manage webhooks", async () => {
    const { app } = await start(await template.fresh());
    const rx = await receiver();
    const c = component();
    const sub = await subscribe(app, rx.url, { components: [c] });
    expect(sub.secret).toMatch(/^whsec_/);
    const listed = (await api(app, "GET", "/v1/webhooks")).json<{ webhooks: Array<Record<string, unknown>> }>().webhooks.find((w) => w["id"] === sub.id)!;
    expect(listed).toMatchObject({ url: rx.url, state: "active", filters: { components: [c], types: [] } });
    expect(JSON.stringify(listed)).not.toContain(sub.secret);
    const one = await api(app, "GET", `/v1/webhooks/${sub.id}`);
    expect(one.statusCode).toBe(200);
    expect(one.body).not.toContain(sub.secret);
    expect(one.body).not.toContain("whsec_");
    expect((await api(app, "GET", "/v1/webhooks", undefined, VIEWER)).statusCode).toBe(403);
    expect((await api(app, "POST", "/v1/webhooks", { url: rx.url }, VIEWER)).statusCode).toBe(403);

    await rollout(c, ["web-1.example.com"]);
    await waitFor("4 deliveries", () => (eventsFor(rx.got, c).length >= 4 ? true : undefined), { timeoutMs: 20_000 });
    const r = rx.got[0]!;
    const verified = new Webhook(sub.secret).verify(r.body, r.headers) as ReleaseEvent;
    expect(verified.id).toBe(r.id);
    expect(ReleaseEvent.safeParse(verified).success).toBe(true);
    const wrong = `whsec_${Buffer.alloc(32, 7).toString("base64")}`;
    expect(() => new Webhook(wrong).verify(r.body, r.headers)).toThrow(/signature/i);
    expect(() => new Webhook(sub.secret).verify(r.body.replace("2.0.0", "6.6.6"), r.headers)).toThrow(/signature/i);
  });

  it("[release-events] a receiver down for many retry periods gets every event when back, each id exactly once, in order per deployment; a 500 or hanging receiver does not delay another", async () => {
    // A long attempt timeout: the hanging receiver holds its first attempt open for 10 s.
    const { app } = await start(await template.fresh(), { timings: { timeoutMs: 10_000 } });
    const [late, good, failing, hanging] = await Promise.all([receiver(), receiver(), receiver("500"), receiver("hang")]);
    const c = component();
    const subs = {
      late: await subscribe(app, late.url, { components: [c] }),
      good: await subscribe(app, good.url, { components: [c] }),
      failing: await subscribe(app, failing.url, { components: [c] }),
      hanging: await subscribe(app, hanging.url, { components: [c] }),
    };
    await late.down();
    const hosts = ["web-1.example.com", "web-2.example.com", "web-3.example.com"];
    const ids = [await rollout(c, hosts, ["web-2.example.com"]), await rollout(c, hosts)];
    const total = ids.length * (3 + hosts.length);
    const attempts = async (id: string) => (await api(app, "GET", `/v1/webhooks/${id}/attempts?limit=1000`)).json<{ attempts: Array<{ ok: boolean; status: number | null; error: string | null; eventId: string }> }>().attempts;
    await waitFor("the good receiver has all", () => (eventsFor(good.got, c).length >= total ? true : undefined), { timeoutMs: 20_000 });
    // Served while the hanging receiver held its first attempt open (one at most has timed out
    // since): were the subscriptions served in turn, the good one would get one event per timeout.
    expect((await attempts(subs.hanging.id)).length).toBeLessThanOrEqual(1);
    await waitFor("the late one failed several times", async () => ((await attempts(subs.late.id)).length >= 5 ? true : undefined), { timeoutMs: 20_000 });
    expect((await attempts(subs.failing.id)).some((a) => a.status === 500 && !a.ok)).toBe(true);
    await waitFor("the hanging one timed out", async () => ((await attempts(subs.hanging.id)).some((a) => !a.ok && a.status === null) ? true : undefined), { timeoutMs: 40_000 });
    expect(eventsFor(late.got, c)).toEqual([]);

    await late.up();
    await waitFor("the late receiver has all", () => (eventsFor(late.got, c).length >= total ? true : undefined), { timeoutMs: 30_000 });
    for (const rx of [late, good]) {
      const got = eventsFor(rx.got, c);
      expect(got.length).toBe(total);
      expect(new Set(got.map((e) => e.id)).size).toBe(total);
      // In stream order, so in order per deployment: each deployment's started first and completed last.
      for (const id of ids) {
        const types = got.filter((e) => e.source === `/molt/deployments/${id}`).map((e) => e.type);
        expect(types[0]).toBe("dev.molt.deployment.started.v1");
        expect(types.at(-1)).toBe("dev.molt.deployment.completed.v1");
      }
    }
    expect(eventsFor(good.got, c).map((e) => e.id)).toEqual(eventsFor(late.got, c).map((e) => e.id));
    // Each id exactly once, in the stream's order, still after several more poll and retry periods
    // (delivery is at least once by nature: a repeat is possible only when an answer is lost).
    await new Promise((r) => setTimeout(r, 500));
    const order = (await streamEvents(STREAM_RELEASE)).filter((e) => e.subject.startsWith(`molt.release.${c}.`)).map((e) => e.event.id);
    expect(order).toHaveLength(total);
    for (const rx of [late, good]) expect(rx.got.map((r) => r.id)).toEqual(order);
    // The attempts say the same: one successful attempt per event, in order; while down, the late
    // one retried its first event only (its position held).
    const lateAttempts = await attempts(subs.late.id);
    expect(lateAttempts.filter((a) => a.ok).map((a) => a.eventId)).toEqual(order);
    expect([...new Set(lateAttempts.filter((a) => !a.ok).map((a) => a.eventId))]).toEqual([order[0]]);
    expect(lateAttempts.filter((a) => !a.ok).length).toBeGreaterThanOrEqual(5);
    for (const s of [subs.failing, subs.hanging]) expect((await api(app, "DELETE", `/v1/webhooks/${s.id}`)).statusCode).toBe(204);
  }, 120_000);

  it("[release-events] each subscription's position is durable: the service restarted on its database delivers what came while it was down, none twice, none skipped", async () => {
    const db = await template.fresh();
    const first = await start(db);
    const rx = await receiver();
    const c = component();
    const sub = await subscribe(first.app, rx.url, { components: [c] });
    const d1 = await rollout(c, ["web-1.example.com"]);
    // Delivered and acknowledged (the cursor moved past it): a stop mid-request would be the
    // at-least-once case, where the receiver may see that one event again.
    const okAttempts = async () => (await api(first.app, "GET", `/v1/webhooks/${sub.id}/attempts`)).json<{ attempts: Array<{ ok: boolean }> }>().attempts.filter((a) => a.ok).length;
    await waitFor("the first rollout delivered", async () => ((await okAttempts()) >= 4 ? true : undefined), { timeoutMs: 20_000 });
    await first.app.close();
    apps.splice(apps.indexOf(first.app), 1);
    const d2 = await rollout(c, ["web-1.example.com"]);
    const second = await start(db);
    await waitFor("the second rollout delivered", () => (eventsFor(rx.got, c).length >= 8 ? true : undefined), { timeoutMs: 20_000 });
    await new Promise((r) => setTimeout(r, 300));
    const order = (await streamEvents(STREAM_RELEASE)).filter((e) => e.subject.startsWith(`molt.release.${c}.`)).map((e) => e.event.id);
    expect(rx.got.map((r) => r.id)).toEqual(order);
    expect([...new Set(eventsFor(rx.got, c).map((e) => e.source))]).toEqual([d1, d2].map((d) => `/molt/deployments/${d}`));
    const after = (await api(second.app, "GET", `/v1/webhooks/${sub.id}`)).json<{ cursor: number; state: string }>();
    expect(after.state).toBe("active");
    expect(after.cursor).toBeGreaterThanOrEqual(order.length);
  });

  it("[release-events] paused while a receiver's 2xx answer is still arriving: the event counts as delivered, it does not come again on resume; an attempt cut short by a pause is recorded", async () => {
    const { app } = await start(await template.fresh());
    const rx = await receiver("slow-body");
    const c = component();
    const sub = await subscribe(app, rx.url, { components: [c], types: ["deployment.completed"] });
    await rollout(c, ["web-1.example.com"]);
    await waitFor("the receiver took it", () => (rx.got.length >= 1 ? true : undefined), { timeoutMs: 20_000 });
    // Its 200 sent (Molt reads it within these 200 ms), its body not ended (1 s): paused then.
    await new Promise((r) => setTimeout(r, 200));
    expect((await api(app, "POST", `/v1/webhooks/${sub.id}/pause`)).json()).toMatchObject({ state: "paused" });
    rx.state.mode = "ok";
    expect((await api(app, "POST", `/v1/webhooks/${sub.id}/resume`)).json()).toMatchObject({ state: "active" });
    await rollout(c, ["web-1.example.com"]);
    await waitFor("the second completed", () => (rx.got.length >= 2 ? true : undefined), { timeoutMs: 20_000 });
    await new Promise((r) => setTimeout(r, 300));
    expect(new Set(rx.got.map((r) => r.id)).size).toBe(2);
    expect(rx.got).toHaveLength(2);

    // An attempt cut short by a pause (the receiver hangs) is recorded and listed too.
    const hanging = await receiver("hang");
    const sub2 = await subscribe(app, hanging.url, { components: [c], types: ["deployment.completed"] }, { startAt: "beginning" });
    await waitFor("the hanging receiver was called", () => (hanging.state.hits >= 1 ? true : undefined), { timeoutMs: 20_000 });
    await api(app, "POST", `/v1/webhooks/${sub2.id}/pause`);
    const cut = (await api(app, "GET", `/v1/webhooks/${sub2.id}/attempts`)).json<{ attempts: Array<{ ok: boolean; status: number | null; error: string | null }> }>().attempts;
    expect(cut).toMatchObject([{ ok: false, status: null, error: expect.stringMatching(/^stopped mid-attempt/) as unknown }]);
  });

  it("[release-events] after the give-up time a subscription is marked failing and paused; resumed, it goes on from the event it stopped at", async () => {
    const { app } = await start(await template.fresh(), { timings: { giveUpMs: 300 } });
    const rx = await receiver("500");
    const c = component();
    const sub = await subscribe(app, rx.url, { components: [c], types: ["host.upgraded", "dev.molt.deployment.completed.v1"] });
    await rollout(c, ["web-1.example.com", "web-2.example.com"]);
    const get = async () => (await api(app, "GET", `/v1/webhooks/${sub.id}`)).json<{ state: string; lastError: string | null }>();
    await waitFor("failing", async () => ((await get()).state === "failing" ? true : undefined), { timeoutMs: 20_000 });
    expect((await get()).lastError).toMatch(/answered 500/);
    rx.state.mode = "ok";
    expect((await api(app, "POST", `/v1/webhooks/${sub.id}/resume`)).json()).toMatchObject({ state: "active" });
    await waitFor("3 deliveries", () => (eventsFor(rx.got, c).length >= 3 ? true : undefined), { timeoutMs: 20_000 });
    expect(eventsFor(rx.got, c).map((e) => e.type)).toEqual(["dev.molt.host.upgraded.v1", "dev.molt.host.upgraded.v1", "dev.molt.deployment.completed.v1"]);
    // Paused by the operator: nothing is delivered until resumed, then what came meanwhile.
    expect((await api(app, "POST", `/v1/webhooks/${sub.id}/pause`)).json()).toMatchObject({ state: "paused" });
    await rollout(c, ["web-3.example.com"]);
    await new Promise((r) => setTimeout(r, 300));
    expect(eventsFor(rx.got, c).length).toBe(3);
    await api(app, "POST", `/v1/webhooks/${sub.id}/resume`);
    await waitFor("5 deliveries", () => (eventsFor(rx.got, c).length >= 5 ? true : undefined), { timeoutMs: 20_000 });
  });

  it("[release-events] the give-up clock is kept across a restart: retrying since longer than the give-up time, the first failure after the restart marks it failing", async () => {
    const db = await template.fresh();
    const first = await start(db);
    const rx = await receiver("500");
    const c = component();
    const sub = await subscribe(first.app, rx.url, { components: [c], types: ["deployment.completed"] });
    await rollout(c, ["web-1.example.com"]);
    const attempts = async (app: App) => (await api(app, "GET", `/v1/webhooks/${sub.id}/attempts`)).json<{ attempts: unknown[] }>().attempts.length;
    await waitFor("a few failed attempts", async () => ((await attempts(first.app)) >= 3 ? true : undefined), { timeoutMs: 20_000 });
    await first.app.close();
    apps.splice(apps.indexOf(first.app), 1);
    // The service stays down past the give-up time (60 s here): moved back rather than waited for.
    const moved = await db.query("UPDATE webhooks SET retry_since = retry_since - interval '2 minutes' WHERE id = $1 AND retry_since IS NOT NULL RETURNING 1", [sub.id]);
    expect(moved.rows, "the retrying event's first failure is stored").toHaveLength(1);
    const second = await start(db);
    const get = async () => (await api(second.app, "GET", `/v1/webhooks/${sub.id}`)).json<{ state: string; lastError: string | null }>();
    await waitFor("failing", async () => ((await get()).state === "failing" ? true : undefined), { timeoutMs: 10_000 });
    // Resumed, the clock starts again: it retries rather than failing at once.
    await api(second.app, "POST", `/v1/webhooks/${sub.id}/resume`);
    const before = await attempts(second.app);
    await waitFor("retrying again", async () => ((await attempts(second.app)) >= before + 3 ? true : undefined), { timeoutMs: 10_000 });
    expect((await get()).state).toBe("active");
  });

  it("[release-events] a new subscription starts where asked: now by default, from the beginning of the stream, or from a date-time", async () => {
    const { app } = await start(await template.fresh());
    const c = component();
    const onStream = (n: number) => waitFor(`${n} events of ${c} on the stream`, async () => ((await streamEvents(STREAM_RELEASE)).filter((e) => e.subject.startsWith(`molt.release.${c}.`)).length >= n ? true : undefined), { timeoutMs: 20_000 });
    const d1 = await rollout(c, ["web-1.example.com"]);
    await onStream(4);
    await new Promise((r) => setTimeout(r, 5));
    const between = new Date().toISOString();
    const d2 = await rollout(c, ["web-1.example.com"]);
    await onStream(8);
    const [now, beginning, since] = await Promise.all([receiver(), receiver(), receiver()]);
    const subs = [
      await subscribe(app, now.url, { components: [c] }),
      await subscribe(app, beginning.url, { components: [c] }, { startAt: "beginning" }),
      await subscribe(app, since.url, { components: [c] }, { startAt: between }),
    ];
    const d3 = await rollout(c, ["web-1.example.com"]);
    const done = (rx: Awaited<ReturnType<typeof receiver>>) => eventsFor(rx.got, c).some((e) => e.source === `/molt/deployments/${d3}` && e.type === "dev.molt.deployment.completed.v1");
    await waitFor("each has the third rollout", () => ([now, beginning, since].every(done) ? true : undefined), { timeoutMs: 20_000 });
    const deployments = (rx: Awaited<ReturnType<typeof receiver>>) => [...new Set(eventsFor(rx.got, c).map((e) => e.source.replace("/molt/deployments/", "")))];
    expect(deployments(now)).toEqual([d3]);
    expect(deployments(beginning)).toEqual([d1, d2, d3]);
    expect(deployments(since)).toEqual([d2, d3]);
    expect(eventsFor(beginning.got, c)).toHaveLength(12);
    // Answered with where it starts; a start that is neither now, beginning nor a date-time is refused.
    expect(subs[0]!.cursor).toBeGreaterThan(subs[2]!.cursor);
    expect(subs[1]!.cursor).toBe(0);
    const bad = await api(app, "POST", "/v1/webhooks", { url: now.url, startAt: "yesterday" });
    expect(bad.statusCode, bad.body).toBe(400);
  });

  it("[release-events] SSRF: private, link-local, metadata and (not allowed) loopback URLs are refused, after DNS too; a redirect to loopback is refused (redirects are never followed)", async () => {
    // Only 127.0.0.2 is allowed: the redirecting receiver lives there, its target on 127.0.0.1.
    const { app } = await start(await template.fresh(), { allowNets: ["127.0.0.2/32"] });
    for (const url of ["http://10.1.2.3/hook", "http://192.168.1.1/hook", "http://169.254.169.254/latest/meta-data", "http://[::1]:8080/hook", "http://127.0.0.1:9/hook", "http://localhost:9/hook", "http://[::ffff:127.0.0.1]/hook", "http://0.0.0.0/hook"]) {
      const r = await api(app, "POST", "/v1/webhooks", { url });
      expect(r.statusCode, `${url}: ${r.body}`).toBe(400);
      expect(r.json<{ error: { message: string } }>().error.message).toMatch(/refused/);
    }
    expect((await api(app, "GET", "/v1/webhooks")).json<{ webhooks: unknown[] }>().webhooks).toEqual([]);

    const target = await receiver();
    const redirector = createServer((req, res) => res.writeHead(307, { location: target.url }).end());
    servers.push(redirector);
    await new Promise<void>((r) => redirector.listen(0, "127.0.0.2", r));
    const sub = await subscribe(app, `http://127.0.0.2:${(redirector.address() as AddressInfo).port}/hook`);
    const c = component();
    await rollout(c, ["web-1.example.com"]);
    const attempts = async () => (await api(app, "GET", `/v1/webhooks/${sub.id}/attempts`)).json<{ attempts: Array<{ status: number | null; error: string | null }> }>().attempts;
    await waitFor("a refused redirect", async () => ((await attempts()).length >= 2 ? true : undefined), { timeoutMs: 20_000 });
    // Refused as SSRF (the target is loopback, not allowed); a redirect is never followed anyway.
    expect((await attempts())[0]).toMatchObject({ status: 307, ok: false, error: expect.stringMatching(/^redirect to http:\/\/127\.0\.0\.1:\d+\/hook refused: .*loopback/) as unknown });
    expect(target.got).toEqual([]);
  });
});
