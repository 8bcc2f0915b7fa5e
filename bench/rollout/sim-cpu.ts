/**
 * The simulated hosts' CPU per upgrade, alone: one `--sim`-style fleet (startSim, in this
 * process) on its own nats-server, a package served from a local HTTP server, and a stand-in for
 * feedback that answers every report and heartbeat at once. N tasks are put in KV (with a nudge),
 * and this process's CPU (utime + stime) is measured from the first put to the last verdict.
 * The stand-ins run in this process too and cost the same before and after a change; nothing
 * else (no PGlite, no services) has to start, so it runs where the whole rollout cannot (a
 * machine so loaded that services miss their readiness deadline).
 * Usage: node --import tsx bench/rollout/sim-cpu.ts [--hosts 500] [--heartbeat-ms 600000]
 * Baseline, same run: the same fleet size with a tenth of the tasks (the per-task figure should match).
 */
import { createServer } from "node:http";
import { mkdtemp, rm } from "node:fs/promises";
import { createHash } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { kvDesiredSource, startSim } from "@molt/agent";
import { desiredKey, KV_DESIRED, StepReport, subjects } from "@molt/contracts";
import { createLogger } from "@molt/runtime";
import { buildPackage, startNatsServer, waitFor } from "@molt/testkit";

const { values } = parseArgs({ options: { hosts: { type: "string", default: "500" }, "heartbeat-ms": { type: "string", default: "600000" } } });
const HOSTS = Number(values.hosts);
/** Heartbeats cost CPU per second of wall time, not per task: off by default (one per 10 min), so the figure is the tasks'. */
const HEARTBEAT_MS = Number(values["heartbeat-ms"]);
const C = "metrics-agent";

const nats = await startNatsServer();
const nc = await connect({ servers: nats.url });
const pkg = await buildPackage({ VERSION: "2.0.0\n" });
const sha256 = createHash("sha256").update(pkg).digest("hex");
const http = createServer((_req, res) => {
  res.writeHead(200, { "content-type": "application/gzip", "content-length": pkg.length });
  res.end(pkg);
});
await new Promise<void>((r) => http.listen(0, "127.0.0.1", r));
const port = (http.address() as { port: number }).port;
const verdicts = new Set<string>();
nc.subscribe("molt.feedback.report.>", {
  callback: (_err, msg) => {
    const report = StepReport.parse(msg.json());
    if (report.entries.some((e) => e.kind === "succeeded" || e.kind === "failed" || e.kind === "rejected")) verdicts.add(report.taskId);
    msg.respond(JSON.stringify({ status: "accepted" }));
  },
});
nc.subscribe("molt.feedback.heartbeat.>", { callback: (_err, msg) => void msg.respond(JSON.stringify({ status: "ok" })) });
const kv = await new Kvm(nc).create(KV_DESIRED);
const log = createLogger("sim-cpu");
log.level = "warn";
const rootBase = await mkdtemp(join(tmpdir(), "molt-sim-cpu-"));
const hostIds = Array.from({ length: HOSTS }, (_, i) => `s-${String(i + 1).padStart(4, "0")}`);
const sim = await startSim({
  nc,
  desired: kvDesiredSource(nc),
  log,
  hostIds,
  rootBase,
  components: [],
  labels: {},
  seeds: [{ component: C, version: "1.0.0" }],
  agentVersion: "0.1.0-bench",
  timing: { pollMs: 30_000, heartbeatMs: HEARTBEAT_MS, reportRetryMs: 1_000, reportTimeoutMs: 10_000, keepTasks: 20 },
  stepDelayMs: 0,
});

let round = 0;
async function upgrade(hosts: readonly string[], version: string) {
  round++;
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const ids = hosts.map((hostId) => ({ hostId, taskId: `t-bench-${round}-${hostId}` }));
  for (const { hostId, taskId } of ids) {
    const task = {
      taskId,
      deploymentId: `d-bench-${round}`,
      kind: "upgrade",
      hostId,
      component: C,
      version,
      fromVersion: null,
      attempt: 1,
      deadline: new Date(Date.now() + 600_000).toISOString(),
      package: { platform: "linux-amd64", url: `http://127.0.0.1:${port}/p.tar.gz`, sha256, size: pkg.length },
    };
    await kv.put(desiredKey(hostId, C), JSON.stringify(task));
    nc.publish(subjects.nudge(hostId));
  }
  await waitFor("every verdict", () => (ids.every((t) => verdicts.has(t.taskId)) ? true : undefined), { timeoutMs: 600_000, intervalMs: 100 });
  const c = process.cpuUsage(c0);
  const cpuMs = (c.user + c.system) / 1000;
  return { tasks: ids.length, wallS: Number(((performance.now() - t0) / 1000).toFixed(2)), cpuMsPerTask: Number((cpuMs / ids.length).toFixed(2)) };
}

try {
  // Versions are made up per round: each round is a real upgrade (download, extract, switch).
  const baseline = await upgrade(hostIds.slice(0, Math.max(10, Math.round(HOSTS / 10))), "1.1.0");
  console.log("baseline", JSON.stringify(baseline));
  const measured = await upgrade(hostIds, "2.0.0");
  console.log("measured", JSON.stringify(measured));
  console.log(JSON.stringify({ bench: "sim-cpu", hosts: HOSTS, baseline, measured, ratio: Number((measured.cpuMsPerTask / baseline.cpuMsPerTask).toFixed(2)) }));
} finally {
  await sim.stop();
  await nc.close();
  await nats.stop();
  http.close();
  await rm(rootBase, { recursive: true, force: true });
}
