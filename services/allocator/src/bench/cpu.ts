/**
 * The allocator's CPU per host, alone: one allocator process (optionally under `node --cpu-prof`)
 * on its own nats-server, N registered hosts, one deployment of all of them in batches of 25 %.
 * This process plays the hosts and feedback: for each dispatched task it records a report per
 * step (as the agent forwards them, so the allocator's consumers see as many slot commits as in
 * a real rollout) and then success. Prints the allocator's CPU seconds (utime + stime from /proc)
 * from the request to DeploymentCompleted, and per 1,000 hosts, which does not depend on how
 * loaded the machine is.
 *
 *   node --import tsx services/allocator/src/bench/cpu.ts [--hosts 1000] [--prof DIR] [--fleet-cap N] [--entry PATH]
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { DeliverPolicy, jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { slotRepository } from "@molt/aggregates";
import { decodeHostToken, KV_DESIRED, STREAM_EVENTS, subjects, type HostState, type JournalEntry, type MoltEvent } from "@molt/contracts";
import { createEventStore, decodeCommit, ensureEventStream } from "@molt/event-store";
import { startNatsServer, startProcess, waitFor } from "@molt/testkit";

const { values } = parseArgs({ options: { hosts: { type: "string", default: "1000" }, prof: { type: "string" }, "fleet-cap": { type: "string" }, entry: { type: "string" } } });
const HOSTS = Number(values.hosts);
const C = "metrics-agent";
const STEPS = ["begin", "backup", "download", "override", "stop", "start", "verify", "end-action"] as const;
const out = (s: string) => process.stdout.write(`${s}\n`);

async function cpuSeconds(pid: number): Promise<number> {
  const stat = (await readFile(`/proc/${pid}/stat`, "utf8")).split(") ")[1]!.split(" ");
  return (Number(stat[11]) + Number(stat[12])) / 100;
}

const dataDir = await mkdtemp(join(tmpdir(), "molt-alloc-cpu-"));
const nats = await startNatsServer();
const nc = await connect({ servers: nats.url });
await ensureEventStream(nc);
await new Kvm(nc).create(KV_DESIRED, { history: 5 });
const store = createEventStore(nc);
const slots = slotRepository(store);
const now = () => new Date().toISOString();
const meta = (id: string) => ({ occurredAt: now(), actor: "bench", correlationId: id });

const ids = Array.from({ length: HOSTS }, (_, i) => `b-${String(i + 1).padStart(5, "0")}.example.com`);
const queue = [...ids];
await Promise.all(
  Array.from({ length: 64 }, async () => {
    for (let h = queue.shift(); h !== undefined; h = queue.shift()) {
      const state: HostState = { hostId: h, os: "linux", arch: "x64", platform: "linux-amd64", labels: { cluster: "eu-1" }, components: { [C]: "1.0.0" }, registeredAt: now() };
      const events: MoltEvent[] = [{ id: `reg-${h}/0`, type: "HostRegistered", data: { hostId: h, os: "linux", arch: "x64", platform: "linux-amd64", labels: state.labels }, metadata: meta(h) }];
      await store.append(subjects.hostMeta(h), { commitId: `reg-${h}`, events, state }, { expectedSequence: 0 });
    }
  }),
);
const manifest = { component: C, version: "2.0.0", platform: "linux-amd64", sha256: "b".repeat(64), size: 100, files: 1, entries: 1, unpackedSize: 10 };
await store.append(
  subjects.package(C),
  { commitId: "pkg-2.0.0", events: [{ id: "pkg-2.0.0/0", type: "PackagePublished", data: { ...manifest, manifest }, metadata: meta("p") }] },
  { expectedSequence: 0 },
);

// --entry: another allocator's composition root (an older checkout), for a before/after in one sitting.
const entry = values.entry ?? join(fileURLToPath(new URL(".", import.meta.url)), "..", "index.ts");
const argv = [...(values.prof ? ["--cpu-prof", "--cpu-prof-dir", values.prof] : []), "--import", "tsx", entry];
const allocator = await startProcess(
  "allocator",
  { argv },
  {
    MOLT_NATS_URL: nats.url,
    MOLT_PACKAGE_BASE_URL: "http://127.0.0.1:9",
    MOLT_LOG_LEVEL: "info",
    ...(values["fleet-cap"] ? { MOLT_FLEET_CAP: values["fleet-cap"] } : {}),
  },
  join(dataDir, "logs"),
  /allocator running/,
);

// The hosts: every TaskDispatched is answered with one report per step, then success.
const js = jetstream(nc);
const watcher = await js.consumers.get(STREAM_EVENTS, { filter_subjects: [`molt.es.host.*.task.${C}`], deliver_policy: DeliverPolicy.New });
const watching = await watcher.consume();
let reported = 0;
const decodeHostOf = (subject: string) => decodeHostToken(subject.split(".")[3]!);
const runTask = async (hostId: string, taskId: string) => {
  let seq = 0;
  const send = (entries: JournalEntry[]) => slots.record({ hostId, taskId, component: C, entries }, { now: now(), actor: `host:${hostId}`, correlationId: taskId });
  await send([{ kind: "accepted", seq: ++seq, at: now() }]);
  for (const step of STEPS) await send([{ kind: "step-started", seq: ++seq, at: now(), step }, { kind: "step-succeeded", seq: ++seq, at: now(), step, durationMs: 1 }]);
  await send([{ kind: "succeeded", seq: ++seq, at: now(), version: "2.0.0" }]);
  reported++;
};
void (async () => {
  for await (const m of watching)
    for (const e of decodeCommit(m).commit.events) if (e.type === "TaskDispatched") void runTask(decodeHostOf(m.subject), e.data.taskId);
})();

const pid = allocator.proc.pid!;
const before = await cpuSeconds(pid);
const t0 = performance.now();
const deploymentId = "d-cpu-bench";
const data = {
  deploymentId,
  component: C,
  version: "2.0.0",
  hosts: ids,
  idempotencyKey: null,
  requestHash: "c".repeat(64),
  taskTimeoutMs: 600_000,
  strategy: { canary: null, maxUnavailable: { percent: 25 }, pauseMs: 0, pauseFromThirdMs: null, concurrency: null, brake: null, orderByCluster: false },
};
await store.append(
  subjects.deployment(deploymentId),
  { commitId: `${deploymentId}:requested`, events: [{ id: `${deploymentId}:requested/0`, type: "DeploymentRequested", data, metadata: meta(deploymentId) }] },
  { expectedSequence: 0 },
);
const done = await waitFor(
  "deployment completed",
  async () => (await store.read(subjects.deployment(deploymentId))).flatMap((c) => c.commit.events).find((e) => e.type === "DeploymentCompleted" || e.type === "DeploymentFailed"),
  { timeoutMs: 900_000, intervalMs: 250 },
);
const wallS = (performance.now() - t0) / 1000;
const cpuS = (await cpuSeconds(pid)) - before;
out(JSON.stringify({ bench: "allocator-cpu", hosts: HOSTS, outcome: done.type, reported, wallS: Number(wallS.toFixed(2)), allocatorCpuS: Number(cpuS.toFixed(2)), cpuSPer1000Hosts: Number(((cpuS * 1000) / HOSTS).toFixed(2)) }));
await watching.close();
await allocator.stop();
await nc.close();
await nats.stop();
await rm(dataDir, { recursive: true, force: true });
