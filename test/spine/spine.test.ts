import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtemp, readFile, readlink, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import { subjects } from "@molt/contracts";
import { createEventStore, type EventStore } from "@molt/event-store";
import { buildPackage, startNatsServer, startSystem, waitFor, type SecureNatsServer, type System } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

/**
 * The whole upgrade path as separate processes: gateway, action, two allocator replicas,
 * package-repo, feedback, projector, audit, and five agents that spawn real upgrade-client
 * processes on real host directories.
 */
const OPERATOR = "operator-token-spine-0001";
const VIEWER = "viewer-token-spine-00001";
const HOSTS = ["web-1.eu-1.example.com", "web-2.eu-1.example.com", "10.0.0.7", "db-1.eu-1.example.com", "i-0abc123def"];
const TAMPERED = "10.0.0.7";
const COMPONENT = "metrics-agent";

let nats: SecureNatsServer;
let nc: NatsConnection;
let store: EventStore;
let system: System;
let dataDir: string;
let mirror: Server;
let tamper = false;

async function api<T>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}, token = OPERATOR) {
  const res = await fetch(`${system.gatewayUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body !== undefined && !(body instanceof Buffer) ? { "content-type": "application/json" } : {}), ...headers },
    ...(body !== undefined ? { body: body instanceof Buffer ? new Uint8Array(body) : JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  return { status: res.status, body: (text ? JSON.parse(text) : null) as T };
}

async function upload(version: string) {
  const pkg = await buildPackage({ VERSION: `${version}\n`, "bin/run.sh": `#!/bin/sh\necho ${COMPONENT} ${version}\n`, "etc/defaults.conf": `version=${version}\n` });
  const r = await api<{ sha256: string }>("POST", `/v1/packages?component=${COMPONENT}&version=${version}&platform=linux-amd64`, pkg, { "content-type": "application/gzip" });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body;
}

type View = { counts: Record<string, number>; tasks: Array<{ hostId: string; state: string; error: string | null }> };
async function deployAndWait(version: string, key: string) {
  const r = await api<{ deploymentId: string }>("POST", "/v1/deployments", { component: COMPONENT, version, hosts: HOSTS }, { "idempotency-key": key });
  expect(r.status, JSON.stringify(r.body)).toBe(202);
  const id = r.body.deploymentId;
  const view = await waitFor(
    `deployment ${id} to finish on all hosts`,
    async () => {
      const v = await api<View>("GET", `/v1/deployments/${id}`);
      if (v.status !== 200) return undefined;
      return (v.body.counts["succeeded"] ?? 0) + (v.body.counts["failed"] ?? 0) === HOSTS.length ? v.body : undefined;
    },
    { timeoutMs: 90_000, intervalMs: 200 },
  );
  return { id, view };
}

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "molt-spine-"));
  nats = await startNatsServer({ secure: true });
  nc = await nats.bus.connect("admin");
  store = createEventStore(nc);
  // A mirror in front of the gateway for one host, as an operator would run nginx; when armed it
  // flips one byte of every package it serves.
  mirror = createServer((req, res) => {
    void fetch(`${system.gatewayUrl}${req.url}`, { headers: req.headers.range ? { range: req.headers.range } : {} }).then(async (up) => {
      const bytes = Buffer.from(await up.arrayBuffer());
      if (tamper && bytes.length > 100) bytes[100] = bytes[100]! ^ 0xff;
      res.writeHead(up.status, { "content-length": bytes.length, "content-type": up.headers.get("content-type") ?? "application/octet-stream" });
      res.end(bytes);
    });
  });
  await new Promise<void>((r) => mirror.listen(0, "127.0.0.1", r));
  const mirrorUrl = `http://127.0.0.1:${(mirror.address() as AddressInfo).port}`;
  system = await startSystem({
    nats,
    dataDir,
    tokens: { [OPERATOR]: { actor: "otto", role: "operator" }, [VIEWER]: { actor: "vera", role: "viewer" } },
    allocatorReplicas: 2,
    agents: HOSTS.map((hostId) => ({
      hostId,
      seed: `${COMPONENT}@1.0.0`,
      env: { MOLT_HEARTBEAT_MS: "500", MOLT_POLL_MS: "2000", ...(hostId === TAMPERED ? { MOLT_PACKAGE_MIRROR: mirrorUrl } : {}) },
    })),
    env: { MOLT_TICK_MS: "500", MOLT_RETRY_DELAY_MS: "200", MOLT_ACK_WAIT_MS: "2000" },
  });
  // Every host has registered with its version before anything is planned against it.
  await waitFor("hosts registered", async () => {
    for (const h of HOSTS) if (!(await store.readLast(subjects.hostMeta(h)))) return undefined;
    return true;
  });
}, 180_000);

afterAll(async () => {
  await system?.stop();
  mirror?.close();
  await nc?.close();
  await nats?.stop();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

describe("the spine, end to end", () => {
  it("[spine] deploys 2.0.0 to 5 hosts at 1.0.0: files switched, one allocation per slot, timeline, view and audit agree", async () => {
    await upload("2.0.0");
    const { id, view } = await deployAndWait("2.0.0", "spine-2.0.0");
    expect(view.counts["succeeded"]).toBe(5);
    expect(view.counts["failed"]).toBe(0);

    for (const h of HOSTS) {
      const dir = join(system.hostRoot(h), "components", COMPONENT);
      expect(await readlink(join(dir, "current"))).toMatch(/versions\/2\.0\.0$/);
      expect(await readFile(join(dir, "current", "VERSION"), "utf8")).toBe("2.0.0\n");
      expect((await readdir(join(dir, "versions"))).sort()).toEqual(["1.0.0", "2.0.0"]);
      const allocated = (await store.read(subjects.slot(h, COMPONENT))).flatMap((c) => c.commit.events).filter((e) => e.type === "TaskAllocated");
      expect(allocated).toHaveLength(1);
    }

    const host = HOSTS[0]!;
    const timeline = await api<{ events: Array<{ type: string; occurredAt: string; step: string | null; streamSeq: number }> }>("GET", `/v1/hosts/${host}/timeline`, undefined, {}, VIEWER);
    expect(timeline.status).toBe(200);
    const task = timeline.body.events.filter((e) => e.type.startsWith("Task"));
    const stepsDone = task.filter((e) => e.type === "TaskStepSucceeded").map((e) => e.step);
    expect(stepsDone).toEqual(["begin", "backup", "download", "override", "end-action"]);
    expect(task[0]!.type).toBe("TaskAllocated");
    expect(task.at(-1)!.type).toBe("TaskSucceeded");
    for (const e of task) expect(Number.isNaN(Date.parse(e.occurredAt))).toBe(false);
    const seqs = task.map((e) => e.streamSeq);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));

    const audit = await api<{ entries: Array<{ kind: string; actor: string; target: string | null; outcome: string }> }>("GET", `/v1/audit?kind=create-deployment`, undefined, {}, VIEWER);
    expect(audit.status).toBe(200);
    expect(audit.body.entries.some((e) => e.actor === "otto" && e.target === id && e.outcome === "accepted")).toBe(true);
  });

  it("[spine] bytes tampered on the way to one host (by its mirror): refused with the reason, and the verified origin's bytes installed instead", async () => {
    await upload("2.1.0");
    tamper = true;
    const { view } = await deployAndWait("2.1.0", "spine-2.1.0");
    tamper = false;
    // Since hosts try their mirrors, then the origin: the mirror's bytes fail the sha256 check and
    // are never installed; the origin's verified bytes are.
    expect(view.counts["succeeded"]).toBe(5);
    const slot = (await store.read(subjects.slot(TAMPERED, COMPONENT))).flatMap((c) => c.commit.events);
    const download = slot.filter((e) => e.type === "TaskStepSucceeded" && e.data.step === "download").at(-1);
    expect(download?.type === "TaskStepSucceeded" ? download.data.detail : undefined).toMatch(/sha256/);
    for (const h of HOSTS) expect(await readFile(join(system.hostRoot(h), "components", COMPONENT, "current", "VERSION"), "utf8")).toBe("2.1.0\n");
  });

  it("[spine] through the gateway: same key twice → one deployment; other body → 422; no token → 401; viewer write → 403", async () => {
    // The host is already at 2.1.0: an empty plan is refused (422) unless the request allows it.
    const body = { component: COMPONENT, version: "2.1.0", hosts: [HOSTS[1]!], allowEmpty: true };
    const a = await api<{ deploymentId: string }>("POST", "/v1/deployments", body, { "idempotency-key": "gw-1" });
    const b = await api<{ deploymentId: string }>("POST", "/v1/deployments", body, { "idempotency-key": "gw-1" });
    expect(a.status).toBe(202);
    expect(b).toEqual(a);
    expect((await api("POST", "/v1/deployments", { ...body, version: "2.0.0" }, { "idempotency-key": "gw-1" })).status).toBe(422);
    const noToken = await fetch(`${system.gatewayUrl}/v1/deployments`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    expect(noToken.status).toBe(401);
    expect((await api("POST", "/v1/deployments", body, {}, VIEWER)).status).toBe(403);
    const requested = (await store.read(subjects.deployment(a.body.deploymentId))).flatMap((c) => c.commit.events).filter((e) => e.type === "DeploymentRequested");
    expect(requested).toHaveLength(1);
  });

  it("[spine] an allocator replica killed mid-rollout loses nothing: the other finishes, one allocation per slot", async () => {
    await upload("2.2.0");
    const r = await api<{ deploymentId: string }>("POST", "/v1/deployments", { component: COMPONENT, version: "2.2.0", hosts: HOSTS }, { "idempotency-key": "spine-2.2.0" });
    expect(r.status).toBe(202);
    const id = r.body.deploymentId;
    // Kill one replica at once (SIGKILL: no drain). Whatever it had taken from the shared durable
    // consumer is unacked and comes back to the other replica after ack_wait.
    await system.processes.find((p) => p.name === "allocator-1")!.kill();
    const view = await waitFor(
      "deployment to finish with one replica",
      async () => {
        const v = await api<View & { deployment: { state: string } }>("GET", `/v1/deployments/${id}`);
        return v.body?.deployment?.state === "completed" ? v.body : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 200 },
    );
    expect(view.counts["succeeded"]).toBe(5);
    expect(view.counts["failed"]).toBe(0);
    for (const h of HOSTS) {
      const allocated = (await store.read(subjects.slot(h, COMPONENT)))
        .flatMap((c) => c.commit.events)
        .filter((e) => e.type === "TaskAllocated" && e.data.deploymentId === id);
      expect(allocated, h).toHaveLength(1);
    }
  });
});
