import { deploymentRepository } from "@molt/aggregates";
import { CommandRecord, subjects } from "@molt/contracts";
import { createEventStore, ensureAuditStream, ensureEventStream, STREAM_AUDIT, type EventStore } from "@molt/event-store";
import { commandLog, createLogger, parseTokens } from "@molt/runtime";
import { startNatsServer, waitFor, type NatsServer } from "@molt/testkit";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { buildApp } from "./routes.js";

let server: NatsServer;
let nc: NatsConnection;
let store: EventStore;
let app: ReturnType<typeof buildApp>;
const OP = { authorization: "Bearer operator-token-0123456789" };
const VIEWER = { authorization: "Bearer viewer-token-0123456789" };

beforeAll(async () => {
  server = await startNatsServer();
  nc = await connect({ servers: server.url });
  await ensureEventStream(nc);
  await ensureAuditStream(nc);
  store = createEventStore(nc);
  const logger = createLogger("action-test");
  app = buildApp({
    logger,
    tokens: parseTokens(
      JSON.stringify({
        "operator-token-0123456789": { actor: "otto", role: "operator" },
        "viewer-token-0123456789": { actor: "vera", role: "viewer" },
      }),
      "t",
    ),
    deployments: deploymentRepository(store),
    commands: commandLog(nc, logger),
    defaultTaskTimeoutMs: 60_000,
  });
});
afterAll(async () => {
  await app?.close();
  await nc?.close();
  await server?.stop();
});

const body = { component: "metrics-agent", version: "2.0.0", hosts: ["web-1.example.com", "10.0.0.7"] };

describe("action: POST /v1/deployments", () => {
  it("[spine] same Idempotency-Key and body twice → one deployment, same answer; other body → 422", async () => {
    const headers = { ...OP, "idempotency-key": "release-42" };
    const a = await app.inject({ method: "POST", url: "/v1/deployments", headers, payload: body });
    const b = await app.inject({ method: "POST", url: "/v1/deployments", headers, payload: { ...body, hosts: [...body.hosts] } });
    expect(a.statusCode).toBe(202);
    expect(b.statusCode).toBe(a.statusCode);
    expect(b.json()).toEqual(a.json());
    const id = a.json<{ deploymentId: string }>().deploymentId;
    const commits = await store.read(subjects.deployment(id));
    expect(commits.flatMap((c) => c.commit.events.map((e) => e.type))).toEqual(["DeploymentRequested"]);
    expect(commits[0]!.commit.events[0]!.metadata.actor).toBe("otto");

    const c = await app.inject({ method: "POST", url: "/v1/deployments", headers, payload: { ...body, version: "2.0.1" } });
    expect(c.statusCode).toBe(422);
    expect(c.json()).toMatchObject({ error: { code: "idempotency_mismatch" } });
    expect(await store.read(subjects.deployment(id))).toHaveLength(1);
  });

  it("[spine] concurrent requests with one key create one deployment", async () => {
    const headers = { ...OP, "idempotency-key": "race-1" };
    const rs = await Promise.all(Array.from({ length: 8 }, () => app.inject({ method: "POST", url: "/v1/deployments", headers, payload: body })));
    expect(new Set(rs.map((r) => r.statusCode))).toEqual(new Set([202]));
    expect(new Set(rs.map((r) => r.body)).size).toBe(1);
    const id = rs[0]!.json<{ deploymentId: string }>().deploymentId;
    expect(await store.read(subjects.deployment(id))).toHaveLength(1);
  });

  it("[spine] no token → 401, a viewer's write → 403, bad input → 400; nothing is appended", async () => {
    const before = await store.lastSequence();
    const noToken = await app.inject({ method: "POST", url: "/v1/deployments", payload: body });
    expect(noToken.statusCode).toBe(401);
    const viewer = await app.inject({ method: "POST", url: "/v1/deployments", headers: VIEWER, payload: body });
    expect(viewer.statusCode).toBe(403);
    for (const bad of [
      { ...body, hosts: ["bad host"] },
      { ...body, hosts: [] },
      { ...body, hosts: ["a", "a"] },
      { ...body, component: "Metrics Agent" },
      { ...body, extra: 1 },
    ]) {
      const r = await app.inject({ method: "POST", url: "/v1/deployments", headers: OP, payload: bad });
      expect(r.statusCode, JSON.stringify(bad)).toBe(400);
      expect(r.json<{ error: { message: string } }>().error.message.length).toBeGreaterThan(5);
    }
    const badKey = await app.inject({ method: "POST", url: "/v1/deployments", headers: { ...OP, "idempotency-key": "has space" }, payload: body });
    expect(badKey.statusCode).toBe(400);
    expect(await store.lastSequence()).toBe(before);
  });

  it("[spine] every command, refused ones too, is recorded on MOLT_AUDIT with its actor", async () => {
    await app.inject({ method: "POST", url: "/v1/deployments", headers: { ...OP, "idempotency-key": "audited" }, payload: body });
    const js = jetstream(nc);
    const records = await waitFor("command records", async () => {
      const c = await js.consumers.get(STREAM_AUDIT, { filter_subjects: "molt.audit.command.>" });
      const out: CommandRecord[] = [];
      const it = await c.fetch({ max_messages: 100, expires: 1000 });
      for await (const m of it) out.push(CommandRecord.parse(m.json()));
      return out.some((r) => r.outcome === "accepted") && out.some((r) => r.outcome === "refused") ? out : undefined;
    });
    expect(records.find((r) => r.outcome === "refused" && r.status === 403)?.actor).toBe("vera");
    expect(records.find((r) => r.outcome === "accepted")?.actor).toBe("otto");
  });
});

describe("action: the command record comes before the answer [security]", () => {
  const auditSeq = async () => (await (await jetstreamManager(nc)).streams.info(STREAM_AUDIT)).state.last_seq;
  it("[security] when the answer arrives, its command record is already on MOLT_AUDIT", async () => {
    const before = await auditSeq();
    const r = await app.inject({ method: "POST", url: "/v1/deployments", headers: { ...OP, "idempotency-key": "recorded-first" }, payload: body });
    expect(r.statusCode).toBe(202);
    expect(await auditSeq()).toBe(before + 1);
    const m = await (await jetstreamManager(nc)).streams.getMessage(STREAM_AUDIT, { seq: before + 1 });
    expect(CommandRecord.parse(m!.json())).toMatchObject({ kind: "create-deployment", actor: "otto", outcome: "accepted", target: r.json<{ deploymentId: string }>().deploymentId });
  });
  it("[security] a body nested 5,000 deep is refused (400) with no audit record and no event", async () => {
    const before = await auditSeq();
    const events = await store.lastSequence();
    const deep = `{"component":"metrics-agent","version":"1.0.0","hosts":${"[".repeat(5000)}${"]".repeat(5000)}}`;
    const r = await app.inject({ method: "POST", url: "/v1/deployments", headers: { ...OP, "content-type": "application/json" }, payload: deep });
    expect(r.statusCode).toBe(400);
    expect(r.json()).toMatchObject({ error: { code: "validation" } });
    expect(await auditSeq()).toBe(before);
    expect(await store.lastSequence()).toBe(events);
  });
});

describe("action: operator commands [roll-engine]", () => {
  const D_BODY = { component: "metrics-agent", version: "3.0.0", hosts: ["cmd-1.example.com"] };
  const create = async (key: string) =>
    (await app.inject({ method: "POST", url: "/v1/deployments", headers: { ...OP, "idempotency-key": key }, payload: D_BODY })).json<{ deploymentId: string }>().deploymentId;
  const command = (id: string, name: string, key?: string, headers = OP) =>
    app.inject({ method: "POST", url: `/v1/deployments/${id}/${name}`, headers: { ...headers, ...(key ? { "idempotency-key": key } : {}) }, payload: {} });
  const types = async (id: string) => (await store.read(subjects.deployment(id))).flatMap((c) => c.commit.events.map((e) => e.type));

  it("[roll-engine] pause, resume and cancel answer 200 with the state; after cancel, pause is 409 naming the state and appends nothing", async () => {
    const id = await create("cmd-a");
    expect((await command(id, "pause", "p1")).json()).toEqual({ deploymentId: id, status: "paused" });
    expect((await command(id, "resume", "r1")).json()).toEqual({ deploymentId: id, status: "requested" });
    const cancelled = await command(id, "cancel", "c1");
    expect(cancelled.statusCode).toBe(200);
    expect(cancelled.json()).toEqual({ deploymentId: id, status: "cancelled" });
    const before = await types(id);
    const late = await command(id, "pause", "p2");
    expect(late.statusCode).toBe(409);
    expect(late.json<{ error: { message: string } }>().error.message).toMatch(/is cancelled/);
    expect(await types(id)).toEqual(before);
  });

  it("[roll-engine] a command sent with no body at all (curl -X POST) is taken like an empty one", async () => {
    const id = await create("cmd-nobody");
    const res = await app.inject({ method: "POST", url: `/v1/deployments/${id}/pause`, headers: { ...OP, "idempotency-key": "nobody-1" } });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json()).toEqual({ deploymentId: id, status: "paused" });
  });

  it("[roll-engine] the same Idempotency-Key replays from the history (no new event); the key for another command is 422", async () => {
    const id = await create("cmd-b");
    expect((await command(id, "pause", "same")).statusCode).toBe(200);
    expect((await command(id, "resume", "other")).statusCode).toBe(200);
    // An old pause replayed after a resume must not pause again.
    const replay = await command(id, "pause", "same");
    expect(replay.statusCode).toBe(200);
    expect(await types(id)).toEqual(["DeploymentRequested", "DeploymentPaused", "DeploymentResumed"]);
    expect((await command(id, "cancel", "same")).statusCode).toBe(422);
  });

  it("[roll-engine] approve without a canary awaiting, retry with nothing failed: 409; unknown deployment 404; viewer 403; bad command 400", async () => {
    const id = await create("cmd-c");
    const approve = await command(id, "approve");
    expect(approve.statusCode).toBe(409);
    expect(approve.json<{ error: { message: string } }>().error.message).toMatch(/nothing awaits approval/);
    expect((await command(id, "retry")).statusCode).toBe(409);
    expect((await command("d-nope", "pause")).statusCode).toBe(404);
    expect((await command(id, "pause", undefined, VIEWER)).statusCode).toBe(403);
    expect((await command(id, "explode")).statusCode).toBe(400);
  });

  it("[roll-engine] an invalid strategy is refused with the field and the reason", async () => {
    for (const [strategy, field] of [
      [{ maxUnavailable: { percent: 80 } }, /maxUnavailable.*50 percent/],
      [{ canary: { size: { hosts: 0 } } }, /canary.*at least 1/],
      [{ brake: { threshold: 2 } }, /strategy\/brake\/threshold/],
      [{ pauseMs: -1 }, /pauseMs/],
      [{ bogus: true }, /bogus/],
    ] as const) {
      const r = await app.inject({ method: "POST", url: "/v1/deployments", headers: OP, payload: { ...D_BODY, strategy } });
      expect(r.statusCode, JSON.stringify(strategy)).toBe(400);
      expect(r.json<{ error: { message: string } }>().error.message).toMatch(field);
    }
    const neither = await app.inject({ method: "POST", url: "/v1/deployments", headers: OP, payload: { component: "metrics-agent", version: "3.0.0" } });
    expect(neither.statusCode).toBe(400);
    expect(neither.json<{ error: { message: string } }>().error.message).toMatch(/hosts or give a selector/);
  });

  it("[roll-engine] operator commands are audited with their actor and kind", async () => {
    const id = await create("cmd-d");
    await command(id, "pause", "audit-p");
    await command(id, "approve");
    const js = jetstream(nc);
    const records = await waitFor("command records", async () => {
      const c = await js.consumers.get(STREAM_AUDIT, { filter_subjects: "molt.audit.command.>" });
      const out: CommandRecord[] = [];
      for await (const m of await c.fetch({ max_messages: 1000, expires: 1000 })) out.push(CommandRecord.parse(m.json()));
      return out.some((r) => r.kind === "approve-deployment" && r.target === id) ? out : undefined;
    });
    expect(records.find((r) => r.kind === "pause-deployment" && r.target === id)).toMatchObject({ actor: "otto", outcome: "accepted", status: 200 });
    expect(records.find((r) => r.kind === "approve-deployment" && r.target === id)).toMatchObject({ actor: "otto", outcome: "refused", status: 409 });
  });
});
