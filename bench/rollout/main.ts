/**
 * A rollout through every service, each a process, with simulated hosts (one --sim process, zero
 * step delay) in batches of 25 %: wall time from the request to DeploymentCompleted,
 * host-upgrades/s, and the allocator's and feedback's CPU seconds and peak RSS.
 * Baseline, measured in the same run on a fresh system: the same rollout at a tenth of the hosts.
 * Ratio = throughput at N / throughput at N/10: about 1 means the engine scales linearly
 * (nothing O(N²)). Targets at 10,000 hosts: <= 20 s wall, >= 500 host-upgrades/s.
 * Usage: pnpm bench:rollout [--hosts 10000]
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { subjects } from "@molt/contracts";
import { createEventStore } from "@molt/event-store";
import { buildPackage, startNatsServer, startSystem, waitFor, type RunningProcess } from "@molt/testkit";

const { values } = parseArgs({ options: { hosts: { type: "string", default: "10000" } } });
const HOSTS = Number(values.hosts);
const TOKEN = "operator-token-bench-0001";
const C = "metrics-agent";

/** utime + stime (s) and peak RSS (MiB) of a live process, from /proc. */
async function usage(p: RunningProcess): Promise<{ cpuS: number; peakRssMiB: number }> {
  const stat = (await readFile(`/proc/${p.proc.pid}/stat`, "utf8")).split(") ")[1]!.split(" ");
  const ticks = Number(stat[11]) + Number(stat[12]);
  const hwm = /VmHWM:\s+(\d+) kB/.exec(await readFile(`/proc/${p.proc.pid}/status`, "utf8"))?.[1];
  return { cpuS: ticks / 100, peakRssMiB: Math.round(Number(hwm) / 1024) };
}

async function rollout(hosts: number) {
  const dataDir = await mkdtemp(join(tmpdir(), "molt-bench-rollout-"));
  const nats = await startNatsServer({ secure: true });
  const nc = await nats.bus.connect("admin");
  const store = createEventStore(nc);
  const system = await startSystem({
    nats,
    dataDir,
    tokens: { [TOKEN]: { actor: "bench", role: "operator" } },
    sim: { count: hosts, prefix: "b-", seed: `${C}@1.0.0`, stepDelayMs: 0 },
    // Info logs stay on: readiness is read from them (testkit), and production runs at info too.
    env: { MOLT_HEARTBEAT_MS: "10000", MOLT_POLL_MS: "5000" },
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
    const [allocator, feedback] = ["allocator-1", "feedback"].map((n) => system.processes.find((p) => p.name === n)!);
    const before = await Promise.all([usage(allocator!), usage(feedback!)]);
    const t0 = performance.now();
    const r = await api("POST", "/v1/deployments", { component: C, version: "2.0.0", hosts: ids, strategy: { maxUnavailable: { percent: 25 } } }, { "content-type": "application/json", "idempotency-key": "bench" });
    if (r.status !== 202) throw new Error(`deploy answered ${r.status}: ${JSON.stringify(r.body)}`);
    const done = await waitFor(
      "deployment completed",
      async () => (await store.read(subjects.deployment(r.body.deploymentId!), {})).flatMap((c) => c.commit.events).find((e) => e.type === "DeploymentCompleted" || e.type === "DeploymentFailed"),
      { timeoutMs: 600_000, intervalMs: 250 },
    );
    const wallS = (performance.now() - t0) / 1000;
    const after = await Promise.all([usage(allocator!), usage(feedback!)]);
    const succeeded = done.type === "DeploymentCompleted" ? done.data.succeeded : 0;
    return {
      hosts,
      outcome: done.type,
      succeeded,
      wallS: Number(wallS.toFixed(2)),
      upgradesPerS: Math.round(succeeded / wallS),
      allocator: { cpuS: Number((after[0].cpuS - before[0].cpuS).toFixed(1)), peakRssMiB: after[0].peakRssMiB },
      feedback: { cpuS: Number((after[1].cpuS - before[1].cpuS).toFixed(1)), peakRssMiB: after[1].peakRssMiB },
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
const ratio = Number((measured.upgradesPerS / Math.max(1, baseline.upgradesPerS)).toFixed(2));
console.log(`ratio (throughput at ${HOSTS} / at ${baseline.hosts}): ${ratio}; targets: wall <= 20 s (${measured.wallS} s), >= 500 upgrades/s (${measured.upgradesPerS})`);
console.log(JSON.stringify({ bench: "rollout", baseline, measured, ratio }));
