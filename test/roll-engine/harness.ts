import { readFile, rm } from "node:fs/promises";
import type { NatsConnection } from "@nats-io/transport-node";
import { SlotState, subjects, type MoltEvent } from "@molt/contracts";
import type { EventStore, StoredCommit } from "@molt/event-store";
import { buildPackage, waitFor, type SecureNatsServer, type RunningProcess, type System } from "@molt/testkit";
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

/** Tasks of one deployment in flight after each slot commit, replayed in stream order; the maximum. */
export function maxInFlight(commits: StoredCommit[], deploymentId: string): number {
  const open = new Set<string>();
  let max = 0;
  const ours = new Set<string>();
  for (const c of commits)
    for (const e of c.commit.events) {
      if (e.type === "TaskAllocated" && e.data.deploymentId === deploymentId) {
        ours.add(e.data.taskId);
        open.add(e.data.taskId);
        max = Math.max(max, open.size);
      } else if ((e.type === "TaskSucceeded" || e.type === "TaskFailed" || e.type === "TaskRejected" || e.type === "TaskTimedOut" || e.type === "TaskCancelled") && ours.has(e.data.taskId))
        open.delete(e.data.taskId);
    }
  return max;
}

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

/** Stops what a scenario started, extra processes first, and removes its data dir. */
export async function teardown(parts: { extra: RunningProcess[]; system?: System; nc?: NatsConnection; nats?: SecureNatsServer; dataDir?: string }) {
  await Promise.all(parts.extra.map((p) => p.stop()));
  await parts.system?.stop();
  await parts.nc?.close();
  await parts.nats?.stop();
  if (parts.dataDir) await rm(parts.dataDir, { recursive: true, force: true });
}
