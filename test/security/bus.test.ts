import { randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AckPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { encodeHostToken, KV_DESIRED, STREAM_EVENTS, subjects } from "@molt/contracts";
import { STREAM_AUDIT } from "@molt/event-store";
import { natsSecurityOptions } from "@molt/runtime";
import { startNatsServer, startSystem, waitFor, type SecureNatsServer, type System } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { publishBlocked, refused } from "./bus-probes.js";

/**
 * Issue 7's bus attacks, scripted against the running system on its shipped auth: a secured
 * nats-server (operator, accounts, a user per identity), every service with its own credentials,
 * two agents with their own host identities, and an attacker holding host A's credentials as the
 * enrolment route handed them out (or a service's, or none).
 */
const OPERATOR = "operator-token-security-01";
const VIEWER = "viewer-token-security-0001";
const HOST_A = "web-a.example.com";
const HOST_B = "web-b.example.com";
const COMPONENT = "metrics-agent";

let nats: SecureNatsServer;
let admin: NatsConnection;
let system: System;
let dataDir: string;
const open: NatsConnection[] = [];

async function api<T>(method: string, path: string, token: string | null = OPERATOR) {
  const res = await fetch(`${system.gatewayUrl}${path}`, { method, headers: token ? { authorization: `Bearer ${token}` } : {} });
  const text = await res.text();
  return { status: res.status, body: (text ? JSON.parse(text) : null) as T, headers: res.headers };
}

/** A heartbeat as an agent sends it, claiming to come from `hostId`. */
const heartbeat = (hostId: string) =>
  JSON.stringify({ hostId, at: new Date().toISOString(), os: "linux", arch: "x64", labels: {}, components: { [COMPONENT]: "1.0.0" }, agentVersion: "test" });

type Enrolment = { hostId: string; userKey: string; inboxPrefix: string; credentials: string };
async function enrol(hostId: string): Promise<Enrolment> {
  const r = await api<Enrolment>("POST", `/v1/hosts/${hostId}/enrol`);
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body;
}

async function as(who: Parameters<SecureNatsServer["bus"]["connect"]>[0]): Promise<NatsConnection> {
  const nc = await nats.bus.connect(who, { reconnect: false });
  open.push(nc);
  return nc;
}

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "molt-security-"));
  nats = await startNatsServer({ secure: true });
  admin = await nats.bus.connect("admin");
  system = await startSystem({
    nats,
    dataDir,
    tokens: { [OPERATOR]: { actor: "otto", role: "operator" }, [VIEWER]: { actor: "vera", role: "viewer" } },
    agents: [HOST_A, HOST_B].map((hostId) => ({ hostId, seed: `${COMPONENT}@1.0.0`, env: { MOLT_HEARTBEAT_MS: "500", MOLT_POLL_MS: "2000" } })),
  });
  // Both agents run on their own host identities: their heartbeats registered them.
  const js = jetstreamManager(admin);
  await waitFor("both hosts registered", async () => {
    for (const h of [HOST_A, HOST_B])
      if (!(await (await js).direct.getMessage(STREAM_EVENTS, { last_by_subj: subjects.hostMeta(h) }).catch(() => null))) return undefined;
    return true;
  });
  // Desired state for both hosts (as the allocator would write it), to read and to steal.
  const kv = await new Kvm(admin).open(KV_DESIRED);
  await kv.put(`${encodeHostToken(HOST_A)}.probe`, JSON.stringify({ for: HOST_A }));
  await kv.put(`${encodeHostToken(HOST_B)}.probe`, JSON.stringify({ for: HOST_B, secret: "b-only" }));
}, 180_000);

afterAll(async () => {
  await Promise.all(open.map((nc) => nc.close().catch(() => undefined)));
  await admin?.close();
  await system?.stop();
  await nats?.stop();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

describe("the bus", () => {
  it("[security] anonymous and forged clients are refused: no credentials, or a user signed by someone else's account", async () => {
    const anon = await refused(() => connect({ servers: nats.url, reconnect: false }));
    expect(anon.toLowerCase()).toMatch(/authorization/);
    // A self-made operator and account: a well-formed JWT the server does not trust.
    const other = await startNatsServer({ secure: true });
    try {
      const forged = await refused(async () => connect({ servers: nats.url, reconnect: false, ...natsSecurityOptions({ credsFile: await other.bus.credsFile("admin") }) }));
      expect(forged.toLowerCase()).toMatch(/authorization/);
    } finally {
      await other.stop();
    }
  });

  it("[security] enrolment: an operator command through the gateway returns the host's credentials once, audited; viewers and anonymous callers get none", async () => {
    expect((await api("POST", `/v1/hosts/${HOST_A}/enrol`, null)).status).toBe(401);
    expect((await api("POST", `/v1/hosts/${HOST_A}/enrol`, VIEWER)).status).toBe(403);
    expect((await api("POST", `/v1/hosts/bad%20host/enrol`)).status).toBe(400);
    const r = await api<Enrolment>("POST", `/v1/hosts/${HOST_A}/enrol`);
    expect(r.status).toBe(201);
    expect(r.headers.get("cache-control")).toBe("no-store");
    expect(r.body.credentials).toContain("BEGIN NATS USER JWT");
    expect(r.body.userKey).toMatch(/^U[A-Z0-9]{55}$/);
    // The credentials work (host A's own heartbeat subject answers) ...
    const a = await as({ creds: r.body.credentials, inboxPrefix: r.body.inboxPrefix });
    const answer = await a.request(subjects.heartbeat(HOST_A), heartbeat(HOST_A), { timeout: 5_000 });
    expect(answer.json<{ status: string }>().status).toBe("ok");
    // ... and the audit log has the command, without the secret.
    const audit = await waitFor("enrol-host audited", async () => {
      const q = await api<{ entries: Array<{ kind: string; target: string | null; actor: string; detail?: unknown }> }>("GET", "/v1/audit?kind=enrol-host&limit=50", VIEWER);
      const mine = q.body.entries?.filter((e) => e.target === HOST_A && e.actor === "otto") ?? [];
      return mine.length >= 1 ? q.body : undefined;
    });
    expect(JSON.stringify(audit)).not.toContain("BEGIN NATS USER JWT");
  });

  it("[security] host A cannot publish heartbeats or reports for host B, nor receive B's nudges or replies", async () => {
    const e = await enrol(HOST_A);
    const a = await as({ creds: e.credentials, inboxPrefix: e.inboxPrefix });
    expect(await publishBlocked(admin, a, subjects.heartbeat(HOST_B), subjects.heartbeat(HOST_A))).toBe(true);
    expect(await publishBlocked(admin, a, subjects.report(HOST_B), subjects.report(HOST_A))).toBe(true);
    // On its own subject, a heartbeat that claims to be B's is refused by feedback.
    const answer = await a.request(subjects.heartbeat(HOST_A), heartbeat(HOST_B), { timeout: 5_000 });
    expect(answer.json<{ status: string; reason?: string }>()).toMatchObject({ status: "refused" });
    // Subscriptions beyond its own nudge and inbox are refused by the server.
    const got: string[] = [];
    const refusedSubs: string[] = [];
    const watch = (subject: string) =>
      a.subscribe(subject, { callback: (err, m) => void (err ? refusedSubs.push(subject) : got.push(m.subject)) });
    for (const subject of [subjects.nudge(HOST_B), "_INBOX.>", "molt.>", ">"]) watch(subject);
    watch(subjects.nudge(HOST_A));
    await a.flush();
    admin.publish(subjects.nudge(HOST_B));
    admin.publish("_INBOX.someone-else.1");
    admin.publish(subjects.nudge(HOST_A));
    // The server's refusals of the four subscriptions arrive on their own schedule: wait for them too.
    await waitFor("A's own nudge and the four refusals", () => (got.includes(subjects.nudge(HOST_A)) && refusedSubs.length >= 4 ? true : undefined));
    expect(got).toEqual([subjects.nudge(HOST_A)]);
    expect(refusedSubs.sort()).toEqual([subjects.nudge(HOST_B), "_INBOX.>", "molt.>", ">"].sort());
  });

  it("[security] host A reads only its own desired-state keys and writes none", async () => {
    const e = await enrol(HOST_A);
    const a = await as({ creds: e.credentials, inboxPrefix: e.inboxPrefix });
    const kv = await new Kvm(a).open(KV_DESIRED, { allow_direct: true });
    expect((await kv.get(`${encodeHostToken(HOST_A)}.probe`))?.json()).toEqual({ for: HOST_A });
    await refused(() => kv.get(`${encodeHostToken(HOST_B)}.probe`));
    // Not by the stream API either (a last-by-subject get names the key only in its body).
    const jsm = await jetstreamManager(a, { timeout: 2_000 });
    await refused(() => jsm.streams.getMessage(`KV_${KV_DESIRED}`, { last_by_subj: `$KV.${KV_DESIRED}.${encodeHostToken(HOST_B)}.probe` }));
    // Nor by a watch (its consumer's filter is in the API subject, and must be A's keys).
    await refused(async () => {
      const w = await kv.watch({ key: `${encodeHostToken(HOST_B)}.>` });
      for await (const _ of w) return;
    });
    // Writing any key, its own included, is refused; the bucket is unchanged.
    const before = await (await new Kvm(admin).open(KV_DESIRED)).status();
    await refused(() => kv.put(`${encodeHostToken(HOST_A)}.probe`, JSON.stringify({ version: "6.6.6" }), { timeout: 2_000 }));
    await refused(() => kv.put(`${encodeHostToken(HOST_B)}.${COMPONENT}`, JSON.stringify({ version: "6.6.6" }), { timeout: 2_000 }));
    expect((await (await new Kvm(admin).open(KV_DESIRED)).status()).values).toBe(before.values);
  });

  it("[security] host A cannot publish on molt.es.> nor call the JetStream management API", async () => {
    const e = await enrol(HOST_A);
    const a = await as({ creds: e.credentials, inboxPrefix: e.inboxPrefix });
    const jsmAdmin = await jetstreamManager(admin);
    const lastSeq = (await jsmAdmin.streams.info(STREAM_EVENTS)).state.last_seq;
    await refused(() => jetstream(a, { timeout: 2_000 }).publish(subjects.hostMeta(HOST_B), "{}"));
    expect(await publishBlocked(admin, a, subjects.slot(HOST_B, COMPONENT), subjects.heartbeat(HOST_A))).toBe(true);
    const jsm = await jetstreamManager(a, { timeout: 2_000 });
    await refused(() => jsm.streams.delete(STREAM_EVENTS));
    await refused(() => jsm.streams.update(STREAM_EVENTS, { max_msgs: 1 }));
    await refused(() => jsm.streams.purge(STREAM_EVENTS));
    await refused(() => jsm.consumers.delete(STREAM_EVENTS, "molt-allocator"));
    await refused(() => jsm.streams.add({ name: "EVIL", subjects: ["evil.>"] }));
    const info = await jsmAdmin.streams.info(STREAM_EVENTS);
    expect(info.config.max_msgs).toBe(-1);
    expect(info.state.last_seq).toBeGreaterThanOrEqual(lastSeq);
    await jsmAdmin.consumers.info(STREAM_EVENTS, "molt-allocator");
  });

  it("[security] a service cannot act beyond its permissions: feedback writes no desired key, projector and audit append nothing, nobody but admin manages streams", async () => {
    const feedback = await as("feedback");
    await refused(() => new Kvm(feedback).open(KV_DESIRED).then((kv) => kv.put(`${encodeHostToken(HOST_B)}.${COMPONENT}`, "{}", { timeout: 2_000 })));
    expect(await publishBlocked(admin, feedback, `$KV.${KV_DESIRED}.${encodeHostToken(HOST_B)}.${COMPONENT}`, subjects.hostMeta(HOST_A))).toBe(true);
    for (const reader of ["projector", "audit"] as const) {
      const nc = await as(reader);
      await refused(() => jetstream(nc, { timeout: 2_000 }).publish(subjects.deployment("forged"), "{}"));
    }
    for (const who of ["action", "allocator", "feedback", "package-repo", "projector", "audit"] as const) {
      const jsm = await jetstreamManager(await as(who), { timeout: 2_000 });
      await refused(() => jsm.streams.delete(STREAM_AUDIT));
      await refused(() => jsm.streams.update(STREAM_EVENTS, { max_age: 1_000_000_000 }));
    }
    // The allocator's durable consumers are its own: another service cannot rewrite them.
    const projector = await jetstreamManager(await as("projector"), { timeout: 2_000 });
    await refused(() => projector.consumers.add(STREAM_EVENTS, { durable_name: "molt-allocator", ack_policy: AckPolicy.None }));
  });

  it("[security] a forged command record cannot enter the audit log: hosts, feedback and the allocator cannot publish on molt.audit.command.> (only the HTTP services, which record their commands and refusals)", async () => {
    const forged = { id: randomUUID(), at: new Date().toISOString(), kind: "create-deployment", actor: "mallory", role: "admin", target: null, outcome: "accepted", status: 202, body: null };
    const e = await enrol(HOST_A);
    for (const who of [{ creds: e.credentials, inboxPrefix: e.inboxPrefix }, "feedback", "allocator"] as const) {
      const nc = await as(who);
      await refused(() => jetstream(nc, { timeout: 2_000 }).publish(subjects.command("create-deployment"), JSON.stringify(forged), { msgID: forged.id }));
    }
    // A real command goes through (action's identity), and is the last thing the log shows.
    expect((await api("POST", `/v1/hosts/${HOST_B}/enrol`)).status).toBe(201);
    await waitFor("the real command audited", async () => {
      const q = await api<{ entries: Array<{ target: string | null }> }>("GET", "/v1/audit?kind=enrol-host&limit=100", VIEWER);
      return q.body.entries?.some((x) => x.target === HOST_B) ? true : undefined;
    });
    const mallory = await api<{ entries: unknown[] }>("GET", "/v1/audit?actor=mallory", VIEWER);
    expect(mallory.status).toBe(200);
    expect(mallory.body.entries).toEqual([]);
  });

  it("[security] revoking a host's credentials cuts it off at once, without restarting the server; other hosts carry on", async () => {
    const e = await enrol(HOST_A);
    const a = await nats.bus.connect({ creds: e.credentials, inboxPrefix: e.inboxPrefix }, { reconnect: false });
    const closed = a.closed();
    await a.request(subjects.heartbeat(HOST_A), heartbeat(HOST_A), { timeout: 5_000 });
    const serverPid = nats.pid;
    await nats.bus.revoke([e.userKey]);
    await closed; // the server dropped it
    const again = await refused(() => nats.bus.connect({ creds: e.credentials, inboxPrefix: e.inboxPrefix }, { reconnect: false }));
    expect(again.toLowerCase()).toMatch(/authorization|revoked/);
    expect(nats.pid).toBe(serverPid);
    // Host B's agent is still connected and heartbeating on its own identity.
    const b = await enrol(HOST_B);
    const nb = await as({ creds: b.credentials, inboxPrefix: b.inboxPrefix });
    expect((await nb.request(subjects.heartbeat(HOST_B), heartbeat(HOST_B), { timeout: 5_000 })).json<{ status: string }>().status).toBe("ok");
  });
});
