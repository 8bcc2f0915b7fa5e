/**
 * Starts Molt on one machine — nats-server, every service as its own process, two allocator
 * replicas, and one agent process simulating a fleet — then uploads a package, rolls it out and
 * prints the progress live. Everything keeps running (so you can use the API) until Ctrl-C.
 */
import { randomBytes } from "node:crypto";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { subjects } from "@molt/contracts";
import { createEventStore } from "@molt/event-store";
import { generatePublisherKey, signAndPush, writePublisherKey } from "@molt/publisher";
import { buildPackage, startNatsServer, startSystem, waitFor } from "@molt/testkit";

const USAGE = `usage: scripts/start.sh [options]

Starts nats-server, every service and a simulated fleet, uploads metrics-agent 2.0.0 and rolls it
out, printing the progress; the system keeps running until Ctrl-C.

  --hosts N            simulated hosts (1..5000, default 20)
  --step-delay-ms MS   how long each simulated upgrade step takes (default 600)
  --port PORT          the gateway's port (default 4280; the URL stays the same across runs)
  --data-dir DIR       where everything is kept (default .molt/demo; wiped at start)
  --exit-when-done     stop everything once the rollout ends
  -h, --help           this text

It writes DIR/env (export GW=… OP=… VIEW=… MOLT_URL=… MOLT_TOKEN=… DEP=…): \`. .molt/demo/env\` in
another shell, then \`./molt hosts\`.
`;

function fail(message: string): never {
  process.stderr.write(`start.sh: ${message}\n`);
  process.exit(2);
}

let values;
try {
  ({ values } = parseArgs({
    options: {
      hosts: { type: "string", default: "20" },
      "step-delay-ms": { type: "string", default: "600" },
      port: { type: "string", default: "4280" },
      "data-dir": { type: "string", default: ".molt/demo" },
      "exit-when-done": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  }));
} catch (err) {
  process.stderr.write(USAGE);
  fail((err as Error).message);
}
if (values.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}
const hostCount = Number(values.hosts);
if (!Number.isInteger(hostCount) || hostCount < 1 || hostCount > 5000) fail("--hosts must be 1..5000");
const port = Number(values.port);
if (!Number.isInteger(port) || port < 1 || port > 65_535) fail("--port must be 1..65535");
const dataDir = resolve(values["data-dir"]);

// One demo per data dir: a second one would wipe the running one's data under its feet.
const pidFile = join(dataDir, "demo.pid");
const running = Number((await readFile(pidFile, "utf8").catch(() => "")).trim());
if (running > 0 && running !== process.pid && isAlive(running))
  fail(`a demo (pid ${running}) is running on ${dataDir}: stop it (Ctrl-C there, or kill ${running}) or pass another --data-dir and --port`);
await assertPortFree(port);
await rm(dataDir, { recursive: true, force: true });
await mkdir(dataDir, { recursive: true });
await writeFile(pidFile, `${process.pid}\n`, { flag: "wx" }).catch(() => fail(`another demo started on ${dataDir} just now`));

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

async function assertPortFree(p: number): Promise<void> {
  await new Promise<void>((res) => {
    const srv = createServer();
    srv.once("error", () => fail(`port ${p} is in use (another demo with another --data-dir?): pass --port`));
    srv.listen(p, "127.0.0.1", () => srv.close(() => res()));
  });
}

const operatorToken = `op-${randomBytes(16).toString("hex")}`;
const viewerToken = `view-${randomBytes(16).toString("hex")}`;
const component = "metrics-agent";
const hosts = Array.from({ length: hostCount }, (_, i) => `sim-${String(i + 1).padStart(3, "0")}`);
const t0 = Date.now();
const stamp = () => `[${((Date.now() - t0) / 1000).toFixed(1).padStart(6)}s]`;

// The demo plays the publisher too: package-repo trusts this key and takes only packages it signed.
const publisher = generatePublisherKey();
const publisherFiles = await writePublisherKey(dataDir, "publisher", publisher);

console.log(`${stamp()} starting nats-server and the services (logs in ${join(dataDir, "logs")})`);
const nats = await startNatsServer({ dataDir: join(dataDir, "nats"), secure: true });
// A service that does not come up must not leave nats-server (and the pid file) behind.
const system = await startSystem({
  nats,
  dataDir,
  trustedPublisherKeys: [{ keyId: publisher.keyId, publicKey: publisher.publicKey, comment: "demo publisher" }],
  tokens: { [operatorToken]: { actor: "demo-operator", role: "operator" }, [viewerToken]: { actor: "demo-viewer", role: "viewer" } },
  allocatorReplicas: 2,
  sim: { count: hostCount, seed: `${component}@1.0.0`, stepDelayMs: Number(values["step-delay-ms"]) },
  env: { MOLT_HEARTBEAT_MS: "2000" },
  gatewayPort: port,
}).catch(async (err: unknown) => {
  await nats.stop({ keepData: true });
  await rm(pidFile, { force: true });
  fail(`${(err as Error).message}\n(logs in ${join(dataDir, "logs")})`);
});
let stopping = false;
const shutdown = async () => {
  if (stopping) return;
  stopping = true;
  console.log(`\n${stamp()} stopping…`);
  await system.stop();
  await nats.stop({ keepData: true });
  await rm(pidFile, { force: true });
  process.exit(0);
};
process.on("SIGINT", () => void shutdown());
process.on("SIGTERM", () => void shutdown());

const auth = { authorization: `Bearer ${operatorToken}` };
console.log(`${stamp()} gateway:        ${system.gatewayUrl}`);
console.log(`${stamp()} operator token: ${operatorToken}`);
console.log(`${stamp()} viewer token:   ${viewerToken}`);
console.log(`${stamp()} nats:           ${nats.url} (no anonymous access; credentials in ${join(dataDir, "nats", "auth", "creds")}, admin.creds for you)`);
console.log(`${stamp()} publisher key:  ${publisher.keyId} (${publisherFiles.privateKeyFile}; push more with ./molt package push … --sign-key ${publisherFiles.privateKeyFile})`);
// For another shell: `. .molt/demo/env` sets what the README's commands use (the CLI reads MOLT_URL/MOLT_TOKEN).
const envFile = join(dataDir, "env");
const exports = [`export GW=${system.gatewayUrl} OP=${operatorToken} VIEW=${viewerToken}`, `export MOLT_URL=$GW MOLT_TOKEN=$OP`];
await writeFile(envFile, `${exports.join("\n")}\n`, { mode: 0o600 });
console.log(`${stamp()} in another shell (or: . ${envFile}):`);
for (const line of exports) console.log(`           ${line}`);

const nc = await nats.bus.connect("admin");
const store = createEventStore(nc);
await waitFor(
  `${hostCount} simulated hosts to register`,
  async () => {
    for (const h of hosts) if (!(await store.readLast(subjects.hostMeta(h)))) return undefined;
    return true;
  },
  { timeoutMs: 60_000, intervalMs: 250 },
);
console.log(`${stamp()} ${hostCount} simulated hosts registered at ${component} 1.0.0`);

const pkg = await buildPackage({ VERSION: "2.0.0\n", "bin/run.sh": `#!/bin/sh\necho ${component} 2.0.0\n` });
const up = await signAndPush({
  url: system.gatewayUrl,
  token: operatorToken,
  ids: { component, version: "2.0.0", platform: "linux-amd64" },
  archive: pkg,
  privateKey: publisher.privateKeyPem,
});
if (up.status !== 201) throw new Error(`upload failed: ${up.status} ${JSON.stringify(up.body)}`);
const info = up.body as { sha256: string; size: number };
console.log(`${stamp()} uploaded ${component} 2.0.0 signed by ${up.signature.keyId} (${info.size} B, sha256 ${info.sha256.slice(0, 12)}…)`);

const dep = await fetch(`${system.gatewayUrl}/v1/deployments`, {
  method: "POST",
  headers: { ...auth, "content-type": "application/json", "idempotency-key": `demo-${Date.now()}` },
  body: JSON.stringify({ component, version: "2.0.0", hosts }),
});
if (dep.status !== 202) throw new Error(`deployment refused: ${dep.status} ${await dep.text()}`);
const { deploymentId } = (await dep.json()) as { deploymentId: string };
await writeFile(envFile, `export DEP=${deploymentId}\n`, { flag: "a" });
console.log(`${stamp()} deployment ${deploymentId} accepted; follow it with:`);
console.log(`           export DEP=${deploymentId}`);
console.log(`           ./molt watch $DEP`);

type View = { deployment: { state: string }; counts: Record<string, number>; tasks: Array<{ currentStep: string | null; state: string }> };
let last = "";
for (;;) {
  const r = await fetch(`${system.gatewayUrl}/v1/deployments/${deploymentId}`, { headers: auth });
  if (r.ok) {
    const v = (await r.json()) as View;
    const c = v.counts;
    const done = (c["succeeded"] ?? 0) + (c["failed"] ?? 0) + (c["timed-out"] ?? 0) + (c["rejected"] ?? 0) + (c["cancelled"] ?? 0);
    const steps = new Map<string, number>();
    for (const t of v.tasks) if (t.state === "running" && t.currentStep) steps.set(t.currentStep, (steps.get(t.currentStep) ?? 0) + 1);
    const width = 30;
    const filled = Math.round((done / hostCount) * width);
    const line = `${v.deployment.state.padEnd(9)} [${"#".repeat(filled)}${"-".repeat(width - filled)}] ${done}/${hostCount}  ok ${c["succeeded"] ?? 0}  failed ${c["failed"] ?? 0}  running ${c["running"] ?? 0}${steps.size ? ` (${[...steps].map(([s, n]) => `${s} ${n}`).join(", ")})` : ""}`;
    if (line !== last) console.log(`${stamp()} ${line}`);
    last = line;
    if (v.deployment.state === "completed" || v.deployment.state === "failed") break;
  }
  await new Promise((res) => setTimeout(res, 300));
}
console.log(`${stamp()} rollout finished. Try (after . ${envFile}):`);
console.log(`           ./molt timeline ${hosts[0]}`);
console.log(`           ./molt versions ${component}`);
console.log(`           ./molt audit --limit 5`);
await nc.close();
if (values["exit-when-done"]) await shutdown();
console.log(`${stamp()} the system keeps running; press Ctrl-C to stop.`);
