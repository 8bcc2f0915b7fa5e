/**
 * A rollout through every service, each a process, with simulated hosts (one --sim process, zero
 * step delay) in batches of 25 %: wall time from the request to DeploymentCompleted,
 * host-upgrades/s, and the allocator's and feedback's CPU seconds and peak RSS.
 * Baseline, measured in the same run on a fresh system: the same rollout at a tenth of the hosts.
 * Ratio = throughput at N / throughput at N/10: about 1 means the engine scales linearly
 * (nothing O(N²)). Targets at 10,000 hosts: <= 20 s wall, >= 500 host-upgrades/s.
 * Usage: pnpm bench:rollout [--hosts 10000]
 */
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { subjects } from "@molt/contracts";
import { createEventStore, storedCommitOf } from "@molt/event-store";
import { jetstreamManager } from "@nats-io/jetstream";
import { buildPackage, startNatsServer, startSystem, waitFor } from "@molt/testkit";

const { values } = parseArgs({ options: { hosts: { type: "string", default: "10000" }, "cpu-prof": { type: "string" } } });
const HOSTS = Number(values.hosts);
/** `--cpu-prof DIR`: every service writes a V8 CPU profile there when it stops (open in Chrome DevTools). */
const PROFILE_DIR = values["cpu-prof"];
const CPU_PROF_HOOK = pathToFileURL(fileURLToPath(new URL("./cpu-prof.ts", import.meta.url))).href;
async function profileDir(hosts: number): Promise<string> {
  const dir = resolve(PROFILE_DIR!, String(hosts));
  await mkdir(dir, { recursive: true });
  return dir;
}
async function profiledProcesses(hosts: number): Promise<Record<string, Record<string, string>>> {
  const env = { NODE_OPTIONS: `--import tsx --import ${CPU_PROF_HOOK}`, MOLT_BENCH_CPU_PROF_DIR: await profileDir(hosts) };
  const names = ["action", "projector", "package-repo", "audit", "release-events", "feedback", "allocator-1", "agent-sim"];
  return Object.fromEntries(names.map((n) => [n, env]));
}
const TOKEN = "operator-token-bench-0001";
const C = "metrics-agent";

/** utime + stime (s) and peak RSS (MiB) of a live process, from /proc. */
async function usage(pid: number): Promise<{ cpuS: number; peakRssMiB: number }> {
  const stat = (await readFile(`/proc/${pid}/stat`, "utf8")).split(") ")[1]!.split(" ");
  const ticks = Number(stat[11]) + Number(stat[12]);
  const hwm = /VmHWM:\s+(\d+) kB/.exec(await readFile(`/proc/${pid}/status`, "utf8"))?.[1];
  return { cpuS: ticks / 100, peakRssMiB: Math.round(Number(hwm) / 1024) };
}

type Usage = Record<string, { cpuS: number; peakRssMiB: number }>;

/**
 * CPU seconds (utime + stime) each process spent during the rollout, per 1,000 hosts: a figure the
 * machine's load does not change much, unlike wall time, so it says which process to make cheaper.
 */
function cpuPer1000(before: Usage, after: Usage, hosts: number) {
  return Object.fromEntries(
    Object.keys(after).map((name) => {
      const cpuS = after[name]!.cpuS - before[name]!.cpuS;
      return [name, { cpuS: Number(cpuS.toFixed(1)), cpuSPer1000: Number(((cpuS * 1000) / hosts).toFixed(2)), peakRssMiB: after[name]!.peakRssMiB }];
    }),
  );
}

async function rollout(hosts: number) {
  const dataDir = await mkdtemp(join(tmpdir(), "molt-bench-rollout-"));
  const nats = await startNatsServer({ secure: true });
  const nc = await nats.bus.connect("admin");
  const store = createEventStore(nc);
  // A service that is slow to start on a loaded machine fails startSystem: the server goes too.
  const system = await startSystem({
    nats,
    dataDir,
    tokens: { [TOKEN]: { actor: "bench", role: "operator" } },
    sim: { count: hosts, prefix: "b-", seed: `${C}@1.0.0`, stepDelayMs: 0 },
    // Info logs stay on: readiness is read from them (testkit), and production runs at info too.
    env: {
      // Heartbeats every 10 s; desired state on the nudge, with the agent's default slow poll (30 s)
      // as the safety net: a 5 s poll was 2,000 KV reads/s at 10,000 hosts, none of them needed.
      MOLT_HEARTBEAT_MS: "10000",
      MOLT_REPORT_LINGER_MS: process.env.MOLT_REPORT_LINGER_MS ?? "25",
    },
    // Every process but the gateway: it runs a worker thread, which inherits NODE_OPTIONS but not
    // tsx's loader, so the .ts hook kills it (or hangs it) before it listens. It only proxies.
    ...(PROFILE_DIR ? { processEnv: await profiledProcesses(hosts) } : {}),
  }).catch(async (err: unknown) => {
    await nc.close();
    await nats.stop();
    await rm(dataDir, { recursive: true, force: true });
    throw err;
  });
  try {
    const api = async (method: string, path: string, body: unknown, headers: Record<string, string> = {}) => {
      const res = await fetch(`${system.gatewayUrl}${path}`, {
        method,
        headers: { authorization: `Bearer ${TOKEN}`, ...headers },
        body: body instanceof Buffer ? new Uint8Array(body) : JSON.stringify(body),
      });
      return { status: res.status, body: (await res.json()) as { deploymentId?: string } };
    };
    const pkg = await buildPackage({ VERSION: "2.0.0\n" });
    await api("POST", `/v1/packages?component=${C}&version=2.0.0&platform=linux-amd64`, pkg, { "content-type": "application/gzip" });
    const last = `b-${String(hosts).padStart(3, "0")}`;
    await waitFor("hosts registered", async () => ((await store.readLast(subjects.hostMeta(last))) ? true : undefined), { timeoutMs: 300_000, intervalMs: 500 });
    const ids = Array.from({ length: hosts }, (_, i) => `b-${String(i + 1).padStart(3, "0")}`);
    const pids: Record<string, number> = { "nats-server": nats.pid!, bench: process.pid };
    for (const p of system.processes) if (p.proc.pid !== undefined) pids[p.name] = p.proc.pid;
    const sample = async (): Promise<Usage> => Object.fromEntries(await Promise.all(Object.entries(pids).map(async ([n, pid]) => [n, await usage(pid)] as const)));
    const jsm = await jetstreamManager(nc);
    /** Each stream's last sequence: what the rollout appended, per stream (messages per upgrade). */
    const streamSeqs = async () => Object.fromEntries((await jsm.streams.list().next()).map((s) => [s.config.name, s.state.last_seq]));
    const seqsBefore = await streamSeqs();
    const before = await sample();
    const t0 = performance.now();
    const r = await api("POST", "/v1/deployments", { component: C, version: "2.0.0", hosts: ids, strategy: { maxUnavailable: { percent: 25 } } }, { "content-type": "application/json", "idempotency-key": "bench" });
    if (r.status !== 202) throw new Error(`deploy answered ${r.status}: ${JSON.stringify(r.body)}`);
    const done = await waitFor(
      "deployment completed",
      // The deployment's last commit only (one direct get): re-reading its whole history every
      // 250 ms would cost the bench O(hosts) per poll, on the cores the rollout runs on.
      async () => (await store.readLast(subjects.deployment(r.body.deploymentId!)))?.commit.events.find((e) => e.type === "DeploymentCompleted" || e.type === "DeploymentFailed"),
      { timeoutMs: 600_000, intervalMs: 250 },
    );
    const wallS = (performance.now() - t0) / 1000;
    const after = await sample();
    const processes = cpuPer1000(before, after, hosts);
    const seqsAfter = await streamSeqs();
    const appendedPerHost = Object.fromEntries(
      Object.entries(seqsAfter)
        .map(([name, seq]) => [name, Number(((seq - (seqsBefore[name] ?? 0)) / hosts).toFixed(2))] as const)
        .filter(([, n]) => n > 0),
    );
    // What the rollout appended to MOLT_EVENTS, per host: commits by aggregate kind, events by type.
    const commitsPerHost: Record<string, number> = {};
    const eventsPerHost: Record<string, number> = {};
    await store.replay("molt.es.>", { fromSeq: (seqsBefore.MOLT_EVENTS ?? 0) + 1, toSeq: seqsAfter.MOLT_EVENTS! }, (m) => {
      const kind = m.subject.split(".")[2]!;
      commitsPerHost[kind] = (commitsPerHost[kind] ?? 0) + 1 / hosts;
      for (const e of storedCommitOf(m).commit.events) eventsPerHost[e.type] = (eventsPerHost[e.type] ?? 0) + 1 / hosts;
    });
    const round = (o: Record<string, number>) => Object.fromEntries(Object.entries(o).sort((a, b) => b[1] - a[1]).map(([k, v]) => [k, Number(v.toFixed(2))]));
    const succeeded = done.type === "DeploymentCompleted" ? done.data.succeeded : 0;
    return {
      hosts,
      outcome: done.type,
      succeeded,
      wallS: Number(wallS.toFixed(2)),
      upgradesPerS: Math.round(succeeded / wallS),
      cpuSTotal: Number(Object.values(processes).reduce((a, p) => a + p.cpuS, 0).toFixed(1)),
      processes,
      appendedPerHost,
      commitsPerHost: round(commitsPerHost),
      eventsPerHost: round(eventsPerHost),
    };
  } finally {
    await system.stop();
    await nc.close();
    await nats.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
}

const baseline = await rollout(Math.max(100, Math.round(HOSTS / 10)));
console.log("baseline", JSON.stringify(baseline));
const measured = await rollout(HOSTS);
console.log("measured", JSON.stringify(measured));
console.log("CPU seconds per 1,000 hosts, by process:");
for (const [name, p] of Object.entries(measured.processes).sort((a, b) => b[1].cpuS - a[1].cpuS))
  console.log(`  ${name.padEnd(14)} ${String(p.cpuSPer1000).padStart(7)}  (${p.cpuS} s, peak RSS ${p.peakRssMiB} MiB)`);
const ratio = Number((measured.upgradesPerS / Math.max(1, baseline.upgradesPerS)).toFixed(2));
console.log("messages appended per host, by stream:", JSON.stringify(measured.appendedPerHost));
console.log("MOLT_EVENTS per host: commits by aggregate", JSON.stringify(measured.commitsPerHost), "events by type", JSON.stringify(measured.eventsPerHost));
console.log(`ratio (throughput at ${HOSTS} / at ${baseline.hosts}): ${ratio}; targets: wall <= 20 s (${measured.wallS} s), >= 500 upgrades/s (${measured.upgradesPerS})`);
console.log(JSON.stringify({ bench: "rollout", baseline, measured, ratio }));
