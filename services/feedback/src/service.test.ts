import { Kvm, type KV } from "@nats-io/kv";
import { connect, createInbox, type NatsConnection } from "@nats-io/transport-node";
import { slotRepository } from "@molt/aggregates";
import { HostState, KV_PRESENCE, presenceKey, ReportAnswer, subjects, type StepReport } from "@molt/contracts";
import { createEventStore, ensureEventStream, type EventStore } from "@molt/event-store";
import { createLogger } from "@molt/runtime";
import { metricSample, startNatsServer, waitFor, type NatsServer } from "@molt/testkit";
import { Registry } from "prom-client";
import { feedbackMetrics } from "./metrics.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startFeedback } from "./service.js";

let server: NatsServer;
let nc: NatsConnection;
let store: EventStore;
let presence: KV;
let feedback: ReturnType<typeof startFeedback>;
let n = 0;

beforeAll(async () => {
  server = await startNatsServer();
  nc = await connect({ servers: server.url });
  await ensureEventStream(nc);
  store = createEventStore(nc);
  presence = await new Kvm(nc).create(KV_PRESENCE, { ttl: 60_000 });
  feedback = startFeedback({ nc, store, presence, logger: createLogger("feedback-test"), concurrency: 8 });
});
afterAll(async () => {
  await feedback?.stop();
  await nc?.close();
  await server?.stop();
});

const now = () => new Date().toISOString();

/** A dispatched task on a fresh slot, as the allocator leaves it. */
async function dispatchedTask(hostId: string) {
  const taskId = `t-fb${++n}`;
  const slots = slotRepository(store);
  const meta = { now: now(), actor: "allocator", correlationId: "d-1" };
  await slots.handle(
    hostId,
    "agent",
    {
      type: "AllocateTask",
      data: {
        taskId,
        deploymentId: "d-1",
        hostId,
        component: "agent",
        version: "2.0.0",
        fromVersion: "1.0.0",
        attempt: 1,
        deadline: new Date(Date.now() + 60_000).toISOString(),
        package: { platform: "linux-amd64", sha256: "a".repeat(64), size: 10, url: "http://127.0.0.1:1/p" },
      },
    },
    meta,
    `${taskId}:allocated`,
  );
  await slots.handle(hostId, "agent", { type: "DispatchTask", data: { taskId, revision: 1 } }, meta, `${taskId}:dispatched`);
  return taskId;
}

async function send(onHost: string, report: StepReport) {
  const m = await nc.request(subjects.report(onHost), JSON.stringify(report), { timeout: 5000 });
  return ReportAnswer.parse(m.json());
}

describe("feedback", () => {
  it("[spine] accepts in-order reports, answers a late duplicate `duplicate`", async () => {
    const host = "web-1.eu-1.example.com";
    const taskId = await dispatchedTask(host);
    const r1 = { hostId: host, taskId, component: "agent", entries: [{ kind: "accepted" as const, seq: 1, at: now() }] };
    expect(await send(host, r1)).toEqual({ status: "accepted" });
    const r2: StepReport = {
      hostId: host,
      taskId,
      component: "agent",
      entries: [
        { kind: "step-started", seq: 2, at: now(), step: "begin" },
        { kind: "step-succeeded", seq: 3, at: now(), step: "begin", durationMs: 3 },
      ],
    };
    expect(await send(host, r2)).toEqual({ status: "accepted" });
    expect(await send(host, r1)).toMatchObject({ status: "duplicate" });
    const commits = await store.read(subjects.slot(host, "agent"));
    // allocated, dispatched, accepted, and the step's start+end as one commit
    expect(commits.map((c) => c.commit.events.map((e) => e.type))).toEqual([
      ["TaskAllocated"],
      ["TaskDispatched"],
      ["TaskAccepted"],
      ["TaskStepStarted", "TaskStepSucceeded"],
    ]);
  });

  it("[spine] refuses a report for another host and an out-of-order report; nothing is appended", async () => {
    const host = "10.0.0.7";
    const taskId = await dispatchedTask(host);
    const before = await store.lastSequence(subjects.slot(host, "agent"));
    const good = { hostId: host, taskId, component: "agent", entries: [{ kind: "accepted" as const, seq: 1, at: now() }] };
    const otherHost = await send("10.0.0.8", good);
    expect(otherHost.status).toBe("refused");
    expect(otherHost.reason).toMatch(/host mismatch/);
    const outOfOrder = await send(host, { ...good, entries: [{ kind: "step-started", seq: 3, at: now(), step: "begin" }] });
    expect(outOfOrder.status).toBe("refused");
    expect(outOfOrder.reason).toMatch(/out of order/);
    const garbage = ReportAnswer.parse((await nc.request(subjects.report(host), "not json", { timeout: 5000 })).json());
    expect(garbage.status).toBe("refused");
    const unknown = await send(host, { ...good, taskId: "t-nope" });
    expect(unknown.status).toBe("refused");
    expect(await store.lastSequence(subjects.slot(host, "agent"))).toBe(before);
  });

  it("[views] [security] refuses a report dated where no database can store it (year 0000) with the reason; nothing is appended", async () => {
    const host = "10.0.0.9";
    const taskId = await dispatchedTask(host);
    const before = await store.lastSequence(subjects.slot(host, "agent"));
    const report = { hostId: host, taskId, component: "agent", entries: [{ kind: "accepted" as const, seq: 1, at: "0000-01-01T00:00:00Z" }] };
    const answer = ReportAnswer.parse((await nc.request(subjects.report(host), JSON.stringify(report), { timeout: 5000 })).json());
    expect(answer.status).toBe("refused");
    expect(answer.reason).toMatch(/between 1970 and 9999/);
    expect(await store.lastSequence(subjects.slot(host, "agent"))).toBe(before);
  });

  it("[spine] heartbeats register a host once, record version changes only, and refresh presence", async () => {
    const host = "i-0abc123";
    const hb = (v: string) => ({ hostId: host, at: now(), os: "linux", arch: "x64", labels: { cluster: "eu-1" }, components: { agent: v }, agentVersion: "0.1.0" });
    for (const v of ["1.0.0", "1.0.0", "1.0.0", "2.0.0"])
      expect((await nc.request(subjects.heartbeat(host), JSON.stringify(hb(v)), { timeout: 5000 })).json()).toEqual({ status: "ok" });
    const commits = await store.read(subjects.hostMeta(host));
    expect(commits.map((c) => c.commit.events.map((e) => e.type))).toEqual([
      ["HostRegistered", "ComponentVersionObserved"],
      ["ComponentVersionObserved"],
    ]);
    const state = HostState.parse(commits[1]!.commit.state);
    expect(state).toMatchObject({ platform: "linux-amd64", components: { agent: "2.0.0" }, labels: { cluster: "eu-1" } });
    expect(await presence.get(presenceKey(host))).not.toBeNull();
    const badPlatform = (await nc.request(subjects.heartbeat(host), JSON.stringify({ ...hb("2.0.0"), os: "Linux", arch: "x86-64" }), { timeout: 5000 })).json<{ status: string; reason: string }>();
    expect(badPlatform.status).toBe("refused");
    expect(badPlatform.reason).toMatch(/platform/);
    expect(await store.read(subjects.hostMeta(host))).toHaveLength(2);
    const mismatch = (await nc.request(subjects.heartbeat("other-host"), JSON.stringify(hb("2.0.0")), { timeout: 5000 })).json<{ status: string }>();
    expect(mismatch.status).toBe("refused");
  });
});

describe("feedback under more heartbeats than it can answer", () => {
  it("[scale-faults] heartbeats past the pending limit are shed (counted, unanswered) instead of queued, so the queue and memory stay bounded", async () => {
    // Its own server: the suite's feedback above would share the queue group.
    const own = await startNatsServer();
    const c = await connect({ servers: own.url });
    try {
      await ensureEventStream(c);
      const registry = new Registry();
      const fb = startFeedback({
        nc: c,
        store: createEventStore(c),
        presence: await new Kvm(c).create(KV_PRESENCE, { ttl: 60_000 }),
        logger: createLogger("feedback-test"),
        concurrency: 2,
        metrics: feedbackMetrics(registry),
        heartbeatMaxPending: 20,
      });
      const host = "burst-1";
      const hb = JSON.stringify({ hostId: host, at: now(), os: "linux", arch: "x64", labels: {}, components: { agent: "1.0.0" }, agentVersion: "0.1.0" });
      const inbox = createInbox();
      let replies = 0;
      c.subscribe(inbox, {
        callback: () => {
          replies++;
        },
      });
      // A fleet's worth at once, far faster than two at a time can be answered.
      const BURST = 2_000;
      for (let i = 0; i < BURST; i++) c.publish(subjects.heartbeat(host), hb, { reply: inbox });
      await c.flush();
      const count = async (status: string) => metricSample(await registry.metrics(), "molt_feedback_heartbeats_total", { status }) ?? 0;
      // Every heartbeat is either answered or shed.
      await waitFor("the burst taken in", async () => ((await count("ok")) + (await count("shed")) === BURST ? true : undefined), { timeoutMs: 60_000 });
      const ok = await count("ok");
      expect(await count("shed")).toBeGreaterThan(0);
      // What was answered is about the pending limit and the concurrency, not the burst.
      expect(ok).toBeLessThan(BURST / 4);
      await waitFor("the answers", () => Promise.resolve(replies === ok ? true : undefined), { timeoutMs: 10_000 });
      await fb.stop();
    } finally {
      await c.close();
      await own.stop();
    }
  });
});
