/**
 * Memory of the host agent as it ships (the bundle), against bare Node, measured in one run.
 * Baseline: a bare `node -e` process's resident set. Measured: the idle bundled agent's resident
 * set (connected, heartbeating, nothing to do), and the upgrade client's peak resident set
 * (VmHWM) while it upgrades a component to a 20 MiB package.
 * Targets: idle agent ≤ 30 MB above bare Node; client peak ≤ 80 MB.
 * Usage: pnpm bench:agent [--package-mib 20] [--upgrades 3] [--idle-ms 3000]
 *
 * Every figure is read from /proc/<pid>/status of a real process (Linux only), the same way for
 * the baseline and the measured processes.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { create as createTar } from "tar";
import { desiredKey, type DesiredState, KV_DESIRED, subjects } from "@molt/contracts";
import { buildAgentBundle, startFeedbackStandIn, startNatsServer, waitFor } from "@molt/testkit";

const { values } = parseArgs({
  options: {
    "package-mib": { type: "string", default: "20" },
    upgrades: { type: "string", default: "3" },
    "idle-ms": { type: "string", default: "3000" },
  },
});
const packageMiB = Number(values["package-mib"]);
const upgrades = Number(values.upgrades);
const idleMs = Number(values["idle-ms"]);
const IDLE_TARGET_MB = 30;
const CLIENT_TARGET_MB = 80;
const MB = 1024 * 1024;

/** VmRSS and VmHWM of a live process, in bytes; null once it is gone. */
async function memoryOf(pid: number): Promise<{ rss: number; hwm: number } | null> {
  try {
    const status = await readFile(`/proc/${pid}/status`, "utf8");
    const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN) * 1024;
    const rss = kb("VmRSS");
    const hwm = kb("VmHWM");
    // A zombie has no memory fields: it is gone as far as we are concerned.
    return Number.isFinite(rss) && Number.isFinite(hwm) ? { rss, hwm } : null;
  } catch {
    return null;
  }
}

/** Samples a process's VmRSS every `everyMs` for `forMs`: the median is its settled size. */
async function settledRss(pid: number, forMs: number, everyMs = 100): Promise<number> {
  const samples: number[] = [];
  const until = Date.now() + forMs;
  while (Date.now() < until) {
    const m = await memoryOf(pid);
    if (m) samples.push(m.rss);
    await new Promise((r) => setTimeout(r, everyMs));
  }
  if (samples.length === 0) throw new Error(`process ${pid} vanished while measured`);
  return [...samples].sort((a, b) => a - b)[Math.floor(samples.length / 2)]!;
}

/** Follows a process until it exits, keeping its last VmHWM (the kernel's peak RSS so far). */
async function peakOf(pid: number): Promise<number> {
  let peak = 0;
  for (;;) {
    const m = await memoryOf(pid);
    if (!m) return peak;
    // BENCH_DEBUG=1: the client's growth over time, to set against its steps (printed at the end).
    if (process.env["BENCH_DEBUG"] && m.hwm > peak + MB) process.stderr.write(`client ${new Date().toISOString()}: VmRSS ${mb(m.rss).toFixed(1)} MB, VmHWM ${mb(m.hwm).toFixed(1)} MB\n`);
    peak = Math.max(peak, m.hwm);
    await new Promise((r) => setTimeout(r, 2));
  }
}

const mb = (bytes: number) => bytes / MB;
const work = await mkdtemp(join(tmpdir(), "molt-bench-agent-"));
const processes: ChildProcess[] = [];
try {
  // ---- the bundle, alone in a directory, as on a host
  const built = join(work, "build", "molt-agent.mjs");
  await buildAgentBundle(built, { version: "0.0.0-bench" });
  const hostDir = join(work, "host");
  await mkdir(hostDir);
  const bundle = join(hostDir, "molt-agent.mjs");
  await copyFile(built, bundle);
  const hostEnv = (extra: Record<string, string>) => ({ PATH: process.env["PATH"] ?? "/usr/bin:/bin", ...extra });

  // ---- baseline: bare node, idle
  const bare = spawn(process.execPath, ["-e", "setInterval(() => {}, 1 << 30)"], { env: hostEnv({}), stdio: "ignore" });
  processes.push(bare);
  await new Promise((r) => setTimeout(r, 500));
  const bareRss = await settledRss(bare.pid!, idleMs);
  bare.kill("SIGKILL");

  // ---- the pieces around the agent: nats-server, feedback's stand-in, a package server
  const nats = await startNatsServer();
  const nc = await connect({ servers: nats.url });
  const feedback = await startFeedbackStandIn(nc);
  const served = new Map<string, Buffer>();
  const http = createServer((req, res) => {
    const body = served.get(req.url ?? "");
    if (!body) return void res.writeHead(404).end();
    res.writeHead(200, { "content-length": body.length }).end(body);
  });
  await new Promise<void>((r) => http.listen(0, "127.0.0.1", r));
  const base = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;

  // ---- the idle agent
  const hostId = "bench-1.example.com";
  const memoryTrace = join(work, "client-memory.trace");
  const root = join(work, "root");
  const agent = spawn(process.execPath, [bundle], {
    cwd: hostDir,
    env: hostEnv({
      MOLT_HOST_ID: hostId,
      MOLT_ROOT: root,
      MOLT_NATS_URL: nats.url,
      MOLT_SEED: "bench-app@1.0.0",
      MOLT_HEARTBEAT_MS: "1000",
      MOLT_LOG_LEVEL: "info",
      // BENCH_DEBUG=1: the client samples process.memoryUsage() into this file (printed after each upgrade).
      ...(process.env["BENCH_DEBUG"] ? { MOLT_MEMORY_TRACE: memoryTrace } : {}),
    }),
    stdio: ["ignore", "pipe", "inherit"],
  });
  processes.push(agent);
  const clientPids: number[] = [];
  let pendingLine = "";
  agent.stdout.on("data", (d: Buffer) => {
    const lines = (pendingLine + d.toString()).split("\n");
    pendingLine = lines.pop() ?? "";
    for (const line of lines) {
      if (process.env["BENCH_DEBUG"]) process.stderr.write(`agent: ${line}\n`);
      // The agent logs each client's pid as it starts it: that is the process to follow.
      const pid = /"clientPid":(\d+)/.exec(line)?.[1];
      if (pid) clientPids.push(Number(pid));
    }
  });
  await waitFor("the agent's first heartbeat", () => (feedback.heartbeats.length > 0 ? true : undefined), { timeoutMs: 30_000 });
  // Let start-up garbage be collected and the heap settle, then measure.
  await new Promise((r) => setTimeout(r, 1000));
  const agentIdleRss = await settledRss(agent.pid!, idleMs);

  // ---- the client upgrading to a package of `packageMiB` (incompressible: the download is the full size)
  const clientPeaks: number[] = [];
  let packageBytes = 0;
  for (let i = 1; i <= upgrades; i++) {
    const version = `${i + 1}.0.0`;
    const src = join(work, `src-${i}`);
    await mkdir(join(src, "lib"), { recursive: true });
    await writeFile(join(src, "VERSION"), `${version}\n`);
    await writeFile(join(src, "lib", "payload.bin"), randomBytes(packageMiB * MB));
    const file = join(work, `bench-app-${version}.tar.gz`);
    await createTar({ gzip: true, cwd: src, file, portable: true }, ["."]);
    const bytes = await readFile(file);
    packageBytes = bytes.length;
    const path = `/bench-app-${version}.tar.gz`;
    served.set(path, bytes);
    const task: DesiredState = {
      taskId: `t-bench-${i}-${randomBytes(3).toString("hex")}`,
      hostId,
      deploymentId: "d-bench",
      kind: "upgrade",
      component: "bench-app",
      version,
      fromVersion: `${i}.0.0`,
      attempt: 1,
      deadline: new Date(Date.now() + 120_000).toISOString(),
      package: { platform: "linux-amd64", sha256: createHash("sha256").update(bytes).digest("hex"), size: bytes.length, url: `${base}${path}` },
    };
    const seen = clientPids.length;
    const kv = await new Kvm(nc).create(KV_DESIRED);
    await kv.put(desiredKey(hostId, task.component), JSON.stringify(task));
    nc.publish(subjects.nudge(hostId));
    const pid = await waitFor("the client to start", () => clientPids[seen], { timeoutMs: 30_000, intervalMs: 1 });
    clientPeaks.push(await peakOf(pid));
    const verdict = await waitFor(
      `task ${task.taskId}'s verdict`,
      () => feedback.entriesOf(task.taskId).find((e) => ["succeeded", "failed", "rejected"].includes(e.kind)),
      { timeoutMs: 60_000 },
    );
    if (process.env["BENCH_DEBUG"]) {
      for (const e of feedback.entriesOf(task.taskId)) process.stderr.write(`step   ${e.at}: ${e.kind} ${"step" in e ? e.step : ""}\n`);
      const trace = (await readFile(memoryTrace, "utf8").catch(() => "")).trim().split("\n");
      process.stderr.write(`memory (ms rss heapTotal heapUsed external arrayBuffers, MB): the samples that raised the peak, and the last\n`);
      let top = 0;
      for (const [n, line] of trace.entries()) {
        const rss = Number(line.split(" ")[1]);
        if (rss > top + 0.5 || n === trace.length - 1) process.stderr.write(`memory ${line}\n`);
        top = Math.max(top, rss);
      }
      await rm(memoryTrace, { force: true });
    }
    if (verdict.kind !== "succeeded") throw new Error(`upgrade ${i} ended ${verdict.kind}: ${JSON.stringify(verdict)}`);
    await rm(src, { recursive: true, force: true });
  }
  agent.kill("SIGTERM");
  await nc.close();
  await nats.stop();
  http.close();

  const above = agentIdleRss - bareRss;
  const clientPeak = Math.max(...clientPeaks);
  const idlePass = mb(above) <= IDLE_TARGET_MB;
  const clientPass = mb(clientPeak) <= CLIENT_TARGET_MB;
  console.log(`bare node -e:      RSS ${mb(bareRss).toFixed(1)} MB (median over ${idleMs} ms)`);
  console.log(`idle agent bundle: RSS ${mb(agentIdleRss).toFixed(1)} MB = ${(agentIdleRss / bareRss).toFixed(2)}× bare, +${mb(above).toFixed(1)} MB (target ≤ +${IDLE_TARGET_MB} MB) ${idlePass ? "ok" : "OVER"}`);
  console.log(
    `client peak:       VmHWM ${mb(clientPeak).toFixed(1)} MB = ${(clientPeak / bareRss).toFixed(2)}× bare, over ${upgrades} upgrades to a ${mb(packageBytes).toFixed(1)} MB package [${clientPeaks.map((p) => mb(p).toFixed(1)).join(", ")}] (target ≤ ${CLIENT_TARGET_MB} MB) ${clientPass ? "ok" : "OVER"}`,
  );
  console.log(
    JSON.stringify({
      bench: "agent",
      node: process.version,
      packageBytes,
      upgrades,
      bareRssMB: Number(mb(bareRss).toFixed(1)),
      agentIdleRssMB: Number(mb(agentIdleRss).toFixed(1)),
      agentAboveBareMB: Number(mb(above).toFixed(1)),
      agentRatio: Number((agentIdleRss / bareRss).toFixed(2)),
      clientPeakMB: Number(mb(clientPeak).toFixed(1)),
      clientPeaksMB: clientPeaks.map((p) => Number(mb(p).toFixed(1))),
      targets: { agentAboveBareMB: IDLE_TARGET_MB, clientPeakMB: CLIENT_TARGET_MB },
      pass: idlePass && clientPass,
    }),
  );
} finally {
  for (const p of processes) if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
  await rm(work, { recursive: true, force: true });
}
