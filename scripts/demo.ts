/**
 * Starts Molt on one machine — nats-server, every service as its own process, two allocator
 * replicas, and one agent process simulating a fleet — then uploads a package, rolls it out and
 * prints the progress live. Everything keeps running (so you can use the API) until Ctrl-C.
 *
 *   scripts/start.sh [--hosts 20] [--step-delay-ms 600] [--data-dir .molt/demo]
 */
import { randomBytes } from "node:crypto";
import { rm } from "node:fs/promises";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { subjects } from "@molt/contracts";
import { createEventStore } from "@molt/event-store";
import { generatePublisherKey, signAndPush, writePublisherKey } from "@molt/publisher";
import { buildPackage, startNatsServer, startSystem, waitFor } from "@molt/testkit";

const { values } = parseArgs({
  options: {
    hosts: { type: "string", default: "20" },
    "step-delay-ms": { type: "string", default: "600" },
    "data-dir": { type: "string", default: ".molt/demo" },
    "exit-when-done": { type: "boolean", default: false },
  },
});
const hostCount = Number(values.hosts);
if (!Number.isInteger(hostCount) || hostCount < 1 || hostCount > 5000) throw new Error("--hosts must be 1..5000");
const dataDir = resolve(values["data-dir"]);
await rm(dataDir, { recursive: true, force: true });

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
const system = await startSystem({
  nats,
  dataDir,
  trustedPublisherKeys: [{ keyId: publisher.keyId, publicKey: publisher.publicKey, comment: "demo publisher" }],
  tokens: { [operatorToken]: { actor: "demo-operator", role: "operator" }, [viewerToken]: { actor: "demo-viewer", role: "viewer" } },
  allocatorReplicas: 2,
  sim: { count: hostCount, seed: `${component}@1.0.0`, stepDelayMs: Number(values["step-delay-ms"]) },
  env: { MOLT_HEARTBEAT_MS: "2000" },
});
let stopping = false;
const shutdown = async () => {
  if (stopping) return;
  stopping = true;
  console.log(`\n${stamp()} stopping…`);
  await system.stop();
  await nats.stop({ keepData: true });
  process.exit(0);
};
process.on("SIGINT", () => void shutdown());
process.on("SIGTERM", () => void shutdown());

const auth = { authorization: `Bearer ${operatorToken}` };
console.log(`${stamp()} gateway:        ${system.gatewayUrl}`);
console.log(`${stamp()} operator token: ${operatorToken}`);
console.log(`${stamp()} viewer token:   ${viewerToken}`);
console.log(`${stamp()} nats:           ${nats.url} (no anonymous access; credentials in ${join(dataDir, "nats", "auth", "creds")}, admin.creds for you)`);
console.log(`${stamp()} publisher key:  ${publisher.keyId} (${publisherFiles.privateKeyFile}; push more with pnpm molt-publish push --key …)`);

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
console.log(`${stamp()} deployment ${deploymentId} accepted; watch it with:`);
console.log(`           curl -s -H 'Authorization: Bearer ${viewerToken}' ${system.gatewayUrl}/v1/deployments/${deploymentId}`);

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
console.log(`${stamp()} rollout finished. Try:`);
console.log(`           curl -s -H 'Authorization: Bearer ${viewerToken}' ${system.gatewayUrl}/v1/hosts/${hosts[0]}/timeline`);
console.log(`           curl -s -H 'Authorization: Bearer ${viewerToken}' '${system.gatewayUrl}/v1/audit?limit=5'`);
await nc.close();
if (values["exit-when-done"]) await shutdown();
console.log(`${stamp()} the system keeps running; press Ctrl-C to stop.`);
