import { mkdtemp, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ReleaseEvent, releaseSubjects, STREAM_EVENTS, STREAM_RELEASE, subjects } from "@molt/contracts";
import { createEventStore, type EventStore } from "@molt/event-store";
import { startNatsServer, startProcess, startSystem, waitFor, type RunningProcess, type SecureNatsServer, type System } from "@molt/testkit";
import { DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { CloudEvent } from "cloudevents";
import { Webhook } from "standardwebhooks";
import { Parser } from "@asyncapi/parser";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { COMPONENT, history, operatorApi, simIds, teardown } from "../roll-engine/harness.js";

const OPERATOR = "operator-token-release-0001";
const ADMIN = "admin-token-release-000001";
const HOSTS = simIds("sim-", 6);
const FAILING = "sim-004";
const TIMINGS = { MOLT_HEARTBEAT_MS: "500", MOLT_POLL_MS: "1000", MOLT_RETRY_DELAY_MS: "100", MOLT_WEBHOOK_ALLOW_NETS: "127.0.0.0/8", MOLT_WEBHOOK_RETRY_MIN_MS: "50", MOLT_WEBHOOK_RETRY_MAX_MS: "200", MOLT_WEBHOOK_POLL_MS: "100", MOLT_WEBHOOK_TIMEOUT_MS: "5000" };

let nats: SecureNatsServer;
let nc: NatsConnection;
let store: EventStore;
let system: System;
let dataDir: string;
let receiver: Server;
const received: Array<{ body: string; headers: Record<string, string> }> = [];
const extra: RunningProcess[] = [];
const op = operatorApi(() => system, OPERATOR);
const admin = operatorApi(() => system, ADMIN);

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "molt-release-"));
  const faultFile = join(dataDir, "fault.json");
  await writeFile(faultFile, JSON.stringify({ hosts: [FAILING], step: "download", message: "injected: mirror down" }));
  nats = await startNatsServer({ secure: true });
  nc = await nats.bus.connect("admin");
  store = createEventStore(nc);
  receiver = createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => (body += c.toString()));
    req.on("end", () => {
      received.push({ body, headers: req.headers as Record<string, string> });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => receiver.listen(0, "127.0.0.1", r));
  system = await startSystem({
    nats,
    dataDir,
    tokens: { [OPERATOR]: { actor: "otto", role: "operator" }, [ADMIN]: { actor: "ada", role: "admin" } },
    sim: { count: HOSTS.length, seed: `${COMPONENT}@1.0.0`, stepDelayMs: 150 },
    env: { ...TIMINGS, MOLT_SIM_FAULT_FILE: faultFile },
  });
  await waitFor(`${HOSTS.length} hosts in the fleet view`, async () => {
    const r = await op.api<{ hosts: unknown[] }>("GET", "/v1/hosts?limit=100");
    return r.body.hosts.length === HOSTS.length ? true : undefined;
  }, { timeoutMs: 60_000 });
}, 180_000);

afterAll(async () => {
  await new Promise((r) => receiver?.close(r));
  await teardown({ extra, system, nc, nats, dataDir });
});

/** Every message of MOLT_RELEASE, in stream order. */
async function releaseStream() {
  const jsm = await jetstreamManager(nc);
  const last = (await jsm.streams.info(STREAM_RELEASE)).state.last_seq;
  const out: Array<{ seq: number; subject: string; json: Record<string, unknown>; msgId: string | undefined }> = [];
  for (let s = 1; s <= last; s++) {
    const m = await jsm.streams.getMessage(STREAM_RELEASE, { seq: s });
    if (m) out.push({ seq: m.seq, subject: m.subject, json: m.json(), msgId: m.header?.get("Nats-Msg-Id") });
  }
  return out;
}
const forDeployment = (all: Awaited<ReturnType<typeof releaseStream>>, id: string) => all.filter((m) => m.json["source"] === `/molt/deployments/${id}`);

describe("release events from a real rollout", () => {
  it("[release-events] a rollout with one failed host publishes the expected events; each parses with the cloudevents SDK and validates; the signed webhook gets them; the admin API works through the gateway", async () => {
    // The admin API and the AsyncAPI document, through the gateway.
    const hook = await admin.api<{ id: string; secret: string }>("POST", "/v1/webhooks", { url: `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`, filters: { components: [COMPONENT] } });
    expect(hook.status, JSON.stringify(hook.body)).toBe(201);
    const doc = await fetch(`${system.gatewayUrl}/asyncapi.json`);
    expect(doc.status).toBe(200);
    const { diagnostics } = await new Parser().parse(await doc.text());
    expect(diagnostics.filter((d) => Number(d.severity) === 0)).toEqual([]);

    await op.upload("2.0.0");
    const id = await op.deploy({ version: "2.0.0", hosts: HOSTS, strategy: { maxUnavailable: { percent: 50 } } }, "release-1");
    await history(store).waitFor(id, "DeploymentCompleted", 90_000);
    await waitFor("deployment.completed on MOLT_RELEASE", async () => (forDeployment(await releaseStream(), id).some((m) => m.json["type"] === "dev.molt.deployment.completed.v1") ? true : undefined), { timeoutMs: 30_000 });

    const all = await releaseStream();
    const mine = forDeployment(all, id);
    for (const m of all) {
      // The SDK checks the envelope (spec version, required attributes, their formats).
      const ce = new CloudEvent(m.json, true);
      expect(ce.validate()).toBe(true);
      const parsed = ReleaseEvent.parse(m.json);
      expect(m.msgId).toBe(parsed.id);
      expect(m.subject).toBe(releaseSubjects.of(COMPONENT, parsed.type.replace(/^dev\.molt\.|\.v1$/g, "") as never));
    }
    expect(all.filter((m) => m.json["type"] === "dev.molt.package.published.v1").map((m) => (m.json["data"] as { version: string }).version)).toContain("2.0.0");
    const types = mine.map((m) => m.json["type"] as string);
    expect(types[0]).toBe("dev.molt.deployment.started.v1");
    expect(types.at(-1)).toBe("dev.molt.deployment.completed.v1");
    expect(types.filter((t) => t === "dev.molt.host.upgraded.v1")).toHaveLength(HOSTS.length - 1);
    expect(types.filter((t) => t === "dev.molt.deployment.batch-completed.v1").length).toBeGreaterThanOrEqual(2);
    const failed = mine.filter((m) => m.json["type"] === "dev.molt.host.upgrade-failed.v1");
    expect(failed).toHaveLength(1);
    expect(failed[0]!.json).toMatchObject({ subject: FAILING, data: { hostId: FAILING, component: COMPONENT, fromVersion: "1.0.0", toVersion: "2.0.0", step: "download", deploymentId: id } });
    expect((failed[0]!.json["data"] as { reason: string }).reason).toContain("injected: mirror down");
    expect(mine.find((m) => m.json["type"] === "dev.molt.deployment.completed.v1")!.json["data"]).toMatchObject({ succeeded: HOSTS.length - 1, failed: 1, component: COMPONENT, version: "2.0.0" });

    // The webhook got the same events, in the same order, each signed.
    const ids = all.map((m) => m.json["id"] as string);
    await waitFor("the webhook has them all", () => (received.length >= ids.length ? true : undefined), { timeoutMs: 30_000 });
    expect(received.map((r) => (new Webhook(hook.body.secret).verify(r.body, r.headers) as { id: string }).id)).toEqual(ids);
    const attempts = await admin.api<{ attempts: Array<{ ok: boolean }> }>("GET", `/v1/webhooks/${hook.body.id}/attempts?limit=1000`);
    expect(attempts.body.attempts.filter((a) => a.ok)).toHaveLength(ids.length);

    // The rest of the admin API through the gateway: list (never the secret), pause, resume,
    // delete; an operator may not; each type's data schema is public.
    const listed = await admin.api<{ webhooks: Array<{ id: string }> }>("GET", "/v1/webhooks");
    expect(listed.body.webhooks.map((w) => w.id)).toEqual([hook.body.id]);
    expect(JSON.stringify(listed.body)).not.toContain(hook.body.secret);
    expect((await op.api("GET", "/v1/webhooks")).status).toBe(403);
    expect((await admin.api<{ state: string }>("POST", `/v1/webhooks/${hook.body.id}/pause`)).body.state).toBe("paused");
    expect((await admin.api<{ state: string }>("POST", `/v1/webhooks/${hook.body.id}/resume`)).body.state).toBe("active");
    expect((await admin.api("DELETE", `/v1/webhooks/${hook.body.id}`)).status).toBe(204);
    expect((await admin.api("GET", `/v1/webhooks/${hook.body.id}`)).status).toBe(404);
    const schema = await fetch(`${system.gatewayUrl}/v1/release-events/schemas/host.upgrade-failed.v1.json`);
    expect(schema.status).toBe(200);
    expect(((await schema.json()) as { $id: string }).$id).toBe(failed[0]!.json["dataschema"]);
  });

  it("[release-events] release-events killed with SIGKILL mid-rollout and restarted: no event lost, none published twice (ids counted on the stream)", async () => {
    await op.upload("3.0.0");
    const id = await op.deploy({ version: "3.0.0", hosts: HOSTS.filter((h) => h !== FAILING), strategy: { maxUnavailable: { hosts: 1 } } }, "release-2");
    await waitFor("some of the rollout published", async () => (forDeployment(await releaseStream(), id).length >= 2 ? true : undefined), { timeoutMs: 60_000, intervalMs: 50 });
    const proc = system.processes.find((p) => p.name === "release-events")!;
    await proc.kill();
    // Down while the rollout goes on.
    await history(store).waitFor(id, "HostOutcomeRecorded", 60_000);
    const port = new URL(system.urls.releaseEvents).port;
    extra.push(
      await startProcess("release-events-r1", "release-events", {
        ...(await nats.bus.env("release-events")),
        ...TIMINGS,
        MOLT_HTTP_PORT: port,
        MOLT_DATA_DIR: join(dataDir, "release-events"),
        MOLT_TOKEN_FILE: join(dataDir, "tokens.json"),
      }, join(dataDir, "logs"), /"msg":"listening"/),
    );
    await history(store).waitFor(id, "DeploymentCompleted", 90_000);
    await waitFor("deployment.completed on MOLT_RELEASE", async () => (forDeployment(await releaseStream(), id).some((m) => m.json["type"] === "dev.molt.deployment.completed.v1") ? true : undefined), { timeoutMs: 30_000 });

    const mine = forDeployment(await releaseStream(), id);
    const ids = mine.map((m) => m.json["id"] as string);
    expect(new Set(ids).size).toBe(ids.length);
    // None lost: exactly the ids of the source events that give one, read from the event store.
    const deploymentIds = (await history(store).events(id)).filter(({ e }) => ["DeploymentPlanned", "BatchCompleted", "DeploymentCompleted"].includes(e.type)).map(({ e }) => e.id);
    const tasks = new Set<string>();
    const taskIds: string[] = [];
    for (const c of await history(store).slotCommits())
      for (const e of c.commit.events) {
        if (e.type === "TaskAllocated" && e.data.deploymentId === id) tasks.add(e.data.taskId);
        if ((e.type === "TaskSucceeded" || e.type === "TaskFailed") && tasks.has(e.data.taskId)) taskIds.push(e.id);
      }
    expect([...ids].sort()).toEqual([...deploymentIds, ...taskIds].sort());
    expect(mine.filter((m) => m.json["type"] === "dev.molt.host.upgraded.v1")).toHaveLength(HOSTS.length - 1);
  });

  it("[release-events] an integrator's NATS identity (release-reader) reads MOLT_RELEASE with its own consumer from any point, filtered by component; it can neither read the event store nor publish", async () => {
    const all = await releaseStream();
    const ofComponent = (m: { subject: string }) => m.subject.startsWith(`molt.release.${COMPONENT}.`);
    // From the middle of the stream: the second rollout's deployment.started.
    const from = all.filter((m) => ofComponent(m) && m.json["type"] === "dev.molt.deployment.started.v1").at(-1)!.seq;
    const want = all.filter((m) => m.seq >= from && ofComponent(m)).map((m) => m.json["id"] as string);
    expect(want.length).toBeGreaterThan(3);
    const reader = await nats.bus.connect("release-reader", { reconnect: false });
    try {
      const consumer = await jetstream(reader).consumers.get(STREAM_RELEASE, { filter_subjects: [`molt.release.${COMPONENT}.>`], deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: from });
      const got: string[] = [];
      while (got.length < want.length) {
        const m = await consumer.next({ expires: 5_000 });
        if (!m) break;
        got.push(m.json<{ id: string }>().id);
      }
      expect(got).toEqual(want);
      const refused = async (attempt: () => Promise<unknown>) => {
        const err = await attempt().then(() => null, (e: unknown) => e as Error);
        expect(err?.message ?? "the attempt succeeded").toMatch(/permission|timeout|authorization/i);
      };
      await refused(() => jetstream(reader, { timeout: 2_000 }).publish(releaseSubjects.of(COMPONENT, "host.upgraded"), "{}"));
      const jsm = await jetstreamManager(reader, { timeout: 2_000 });
      await refused(() => jsm.streams.info(STREAM_EVENTS));
      await refused(() => jsm.direct.getMessage(STREAM_EVENTS, { seq: 1 }));
    } finally {
      await reader.close();
    }
  });

  it("[release-events] least privilege: release-events appends nothing to the event store and manages no stream; no other service can forge a release event", async () => {
    const own = await nats.bus.connect("release-events", { reconnect: false });
    const projector = await nats.bus.connect("projector", { reconnect: false });
    try {
      const refused = async (attempt: () => Promise<unknown>) => {
        const err = await attempt().then(() => null, (e: unknown) => e as Error);
        expect(err?.message ?? "the attempt succeeded").toMatch(/permission|timeout|authorization/i);
      };
      await refused(() => jetstream(own, { timeout: 2_000 }).publish(subjects.deployment("forged"), "{}"));
      const jsm = await jetstreamManager(own, { timeout: 2_000 });
      await refused(() => jsm.streams.delete(STREAM_RELEASE));
      await refused(() => jsm.streams.update(STREAM_EVENTS, { max_age: 1_000_000_000 }));
      await refused(() => jetstream(projector, { timeout: 2_000 }).publish(releaseSubjects.of(COMPONENT, "host.upgraded"), "{}"));
      // What it may do: read the event store and its own stream.
      expect((await jsm.streams.info(STREAM_RELEASE)).config.name).toBe(STREAM_RELEASE);
    } finally {
      await own.close();
      await projector.close();
    }
  });
});
