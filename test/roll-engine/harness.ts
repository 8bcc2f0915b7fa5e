import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import { SlotState, subjects, type MoltEvent } from "@molt/contracts";
import { createEventStore, type EventStore, type StoredCommit } from "@molt/event-store";
import { buildPackage, startNatsServer, startSystem, waitFor, type SecureBus, type RunningProcess, type System } from "@molt/testkit";
import { expect } from "vitest";

export const COMPONENT = "metrics-agent";
export const simIds = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}${String(i + 1).padStart(3, "0")}`);

/** The gateway as an operator's client sees it. */
export function operatorApi(system: () => System, token: string) {
  const api = async <T>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}) => {
    const res = await fetch(`${system().gatewayUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body !== undefined && !(body instanceof Buffer) ? { "content-type": "application/json" } : {}), ...headers },
      ...(body !== undefined ? { body: body instanceof Buffer ? new Uint8Array(body) : JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, body: (text ? JSON.parse(text) : null) as T };
  };
  return {
    api,
    async upload(version: string) {
      const pkg = await buildPackage({ VERSION: `${version}\n`, "bin/run.sh": `#!/bin/sh\necho ${COMPONENT} ${version}\n` });
      const r = await api("POST", `/v1/packages?component=${COMPONENT}&version=${version}&platform=linux-amd64`, pkg, { "content-type": "application/gzip" });
      expect(r.status, JSON.stringify(r.body)).toBe(201);
    },
    async deploy(body: Record<string, unknown>, key: string): Promise<string> {
      const r = await api<{ deploymentId: string }>("POST", "/v1/deployments", { component: COMPONENT, ...body }, { "idempotency-key": key });
      expect(r.status, JSON.stringify(r.body)).toBe(202);
      return r.body.deploymentId;
    },
    async command(id: string, name: string, key = `${name}-${id}`) {
      const r = await api<{ deploymentId: string; status: string }>("POST", `/v1/deployments/${id}/${name}`, {}, { "idempotency-key": key });
      expect(r.status, JSON.stringify(r.body)).toBeLessThan(300);
      return r.body;
    },
  };
}

/** Reads back what happened, in stream order, from the event store. */
export function history(store: EventStore) {
  const deploymentCommits = (id: string) => store.read(subjects.deployment(id));
  const events = async (id: string) => (await deploymentCommits(id)).flatMap((c) => c.commit.events.map((e) => ({ seq: c.seq, e })));
  const first = async (id: string, type: MoltEvent["type"]) => (await events(id)).find((x) => x.e.type === type);
  return {
    events,
    first,
    /** Waits for an event on the deployment; fails fast if it ended otherwise. */
    async waitFor(id: string, type: MoltEvent["type"], timeoutMs = 45_000) {
      return waitFor(`${type} on ${id}`, () => first(id, type), { timeoutMs, intervalMs: 100 });
    },
    /** Every slot commit of the component, in stream order. */
    slotCommits: async (): Promise<StoredCommit[]> => store.read(`molt.es.host.*.task.${COMPONENT}`),
    async slot(hostId: string): Promise<SlotState | null> {
      const last = await store.readLast(subjects.slot(hostId, COMPONENT));
      return last ? SlotState.parse(last.commit.state) : null;
    },
  };
}

/** Tasks of one deployment (or of all) in flight after each slot commit, replayed in stream order; the maximum. */
export { maxInFlight } from "@molt/testkit";

/** Replays every slot: a TaskAllocated while another task is active would be two active tasks on one slot. */
export function doubleActive(commits: StoredCommit[]): string[] {
  const active = new Map<string, string>();
  const out: string[] = [];
  for (const c of commits)
    for (const e of c.commit.events) {
      if (e.type === "TaskAllocated") {
        const held = active.get(c.subject);
        if (held !== undefined && held !== e.data.taskId) out.push(`${c.subject}: ${e.data.taskId} while ${held}`);
        active.set(c.subject, e.data.taskId);
      } else if (e.type === "TaskSucceeded" || e.type === "TaskFailed" || e.type === "TaskRejected" || e.type === "TaskTimedOut" || e.type === "TaskCancelled") {
        if (active.get(c.subject) === e.data.taskId) active.delete(c.subject);
      }
    }
  return out;
}

/** Lines of a process log (package-repo's request log) that name a package download. */
export async function downloadRequests(logFile: string): Promise<number> {
  const text = await readFile(logFile, "utf8").catch(() => "");
  return text.split("\n").filter((l) => l.includes('"incoming request"') && l.includes("/download")).length;
}

/**
 * A scenario's bed: its own nats-server, the whole system with `hosts` simulated in one `--sim`
 * process (ids `<prefix>001`…), an event store to read back, and a wait until every host has
 * registered.
 */
export async function startScenario(opts: {
  name: string;
  operator: string;
  prefix: string;
  hosts: readonly string[];
  allocatorReplicas: number;
  stepDelayMs: number;
  env: Record<string, string>;
  /** The bus to run on (a cluster); a fresh single server when absent. */
  nats?: Bus;
  /** An admin token too (rebuilds, audit verification). */
  admin?: string;
}) {
  const dataDir = await mkdtemp(join(tmpdir(), `molt-${opts.name}-`));
  const nats = opts.nats ?? (await startNatsServer({ secure: true }));
  // The test's own connection reconnects for as long as the services' do (runtime's connectNats):
  // with nats.js' default of 10 attempts it gave up during the cluster suite's 30 s bus outage under
  // load, and every later read failed with "closed connection".
  const nc = await nats.bus.connect("admin", { maxReconnectAttempts: -1, reconnectTimeWait: 250 });
  const store = createEventStore(nc);
  const system = await startSystem({
    nats,
    dataDir,
    tokens: { [opts.operator]: { actor: "otto", role: "operator" }, ...(opts.admin ? { [opts.admin]: { actor: "ada", role: "admin" as const } } : {}) },
    allocatorReplicas: opts.allocatorReplicas,
    sim: { count: opts.hosts.length, prefix: opts.prefix, seed: `${COMPONENT}@1.0.0`, stepDelayMs: opts.stepDelayMs },
    env: opts.env,
  });
  await waitFor(`${opts.hosts.length} hosts registered`, async () => {
    for (const id of opts.hosts) if (!(await store.readLast(subjects.hostMeta(id)))) return undefined;
    return true;
  }, { timeoutMs: 60_000 });
  return {
    dataDir,
    nats,
    nc,
    store,
    system,
    /** Stops it all, `extra` processes (replicas started again after a kill) first. */
    stop: (extra: RunningProcess[]) => teardown({ extra, system, nc, nats, dataDir }),
  };
}
export type Scenario = Awaited<ReturnType<typeof startScenario>>;

/** A secured server or cluster: what a scenario runs on and stops. */
export interface Bus {
  readonly bus: SecureBus;
  stop(): Promise<void>;
}

/** Stops what a scenario started, extra processes first, and removes its data dir. */
export async function teardown(parts: { extra: RunningProcess[]; system?: System; nc?: NatsConnection; nats?: Bus; dataDir?: string }) {
  await Promise.all(parts.extra.map((p) => p.stop()));
  await parts.system?.stop();
  await parts.nc?.close();
  await parts.nats?.stop();
  if (parts.dataDir && process.env["MOLT_KEEP_DATA"] === "1") process.stderr.write(`data dir kept (MOLT_KEEP_DATA=1): ${parts.dataDir}\n`);
  else if (parts.dataDir) await rm(parts.dataDir, { recursive: true, force: true });
}
