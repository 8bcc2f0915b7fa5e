import { copyFile, mkdir, mkdtemp, readFile, readlink, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { KV_PRESENCE, PackagePublished, presenceKey, subjects } from "@molt/contracts";
import { createEventStore, type EventStore } from "@molt/event-store";
import { generatePublisherKey, signAndPush, type PublisherKeyPair } from "@molt/publisher";
import { buildAgentBundle, buildPackage, hostCredsFile, startNatsServer, startSystem, waitFor, type SecureNatsServer, type System } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

/**
 * What ships, end to end: a publisher signs on its own machine and pushes through the gateway to
 * a package-repo that holds only its public key; hosts run the one-file agent bundle (copied alone,
 * no sources, no node_modules), configured by a file that trusts the publisher's key, and whose
 * client is `node <bundle> client …`; an operator deploys; each host checks the signature.
 */
const OPERATOR = "operator-token-shipped-01";
const HOSTS = ["ship-1.eu-1.example.com", "10.0.9.2"];
const COMPONENT = "metrics-agent";

let nats: SecureNatsServer;
let nc: NatsConnection;
let store: EventStore;
let system: System;
let dataDir: string;
let publisher: PublisherKeyPair;

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "molt-shipped-"));
  const built = await buildAgentBundle(join(dataDir, "build", "molt-agent.mjs"), { version: "1.2.3-shipped" });
  const opt = join(dataDir, "opt");
  await mkdir(opt);
  await copyFile(built.outfile, join(opt, "molt-agent.mjs"));
  publisher = generatePublisherKey();
  nats = await startNatsServer({ secure: true });
  nc = await nats.bus.connect("admin");
  store = createEventStore(nc);
  // Each host's config file, as infra/agent/agent.example.json: it trusts the publisher's key only.
  const configs = new Map<string, string>();
  for (const hostId of HOSTS) {
    const file = join(dataDir, `agent-${hostId}.json`);
    const config = {
      hostId,
      root: join(dataDir, "hosts", hostId),
      nats: { urls: [nats.url], credentials: (await hostCredsFile(nats.bus, hostId, join(dataDir, "creds"))).file },
      trustedKeys: [{ keyId: publisher.keyId, publicKey: publisher.publicKey, comment: "the release key" }],
      components: [{ name: COMPONENT, kind: "third-party" }],
    };
    await writeFile(file, JSON.stringify(config));
    configs.set(hostId, file);
  }
  system = await startSystem({
    nats,
    dataDir,
    tokens: { [OPERATOR]: { actor: "otto", role: "operator" } },
    trustedPublisherKeys: [{ keyId: publisher.keyId, publicKey: publisher.publicKey }],
    agentBundle: join(opt, "molt-agent.mjs"),
    agents: HOSTS.map((hostId) => ({ hostId, seed: `${COMPONENT}@1.0.0`, env: { MOLT_CONFIG: configs.get(hostId)!, MOLT_HEARTBEAT_MS: "500", MOLT_POLL_MS: "2000" } })),
    env: { MOLT_TICK_MS: "500", MOLT_RETRY_DELAY_MS: "200", MOLT_ACK_WAIT_MS: "2000" },
  });
  await waitFor("hosts registered", async () => {
    for (const h of HOSTS) if (!(await store.readLast(subjects.hostMeta(h)))) return undefined;
    return true;
  });
}, 180_000);

afterAll(async () => {
  await system?.stop();
  await nc?.close();
  await nats?.stop();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

describe("what ships", () => {
  it("[upgrade-client] a publisher-signed package deployed through the gateway to hosts running the agent bundle", async () => {
    const archive = await buildPackage({ VERSION: "2.0.0\n", "bin/run.sh": `#!/bin/sh\necho ${COMPONENT} 2.0.0\n` });
    const ids = { component: COMPONENT, version: "2.0.0", platform: "linux-amd64" };
    // The repository holds only the public key: an unsigned push is refused, the signed one lands.
    const unsigned = await fetch(`${system.gatewayUrl}/v1/packages?${new URLSearchParams(ids).toString()}`, {
      method: "POST",
      headers: { authorization: `Bearer ${OPERATOR}`, "content-type": "application/gzip" },
      body: new Uint8Array(archive),
    });
    expect(unsigned.status).toBe(400);
    const pushed = await signAndPush({ url: system.gatewayUrl, token: OPERATOR, ids, archive, privateKey: publisher.privateKeyPem });
    expect(pushed.status, JSON.stringify(pushed.body)).toBe(201);
    const [published] = (await store.read(subjects.package(COMPONENT))).flatMap((c) => c.commit.events);
    expect(PackagePublished.parse(published).data).toMatchObject({ keyId: publisher.keyId, signature: pushed.signature.signature });

    const dep = await fetch(`${system.gatewayUrl}/v1/deployments`, {
      method: "POST",
      headers: { authorization: `Bearer ${OPERATOR}`, "content-type": "application/json", "idempotency-key": "shipped-2.0.0" },
      body: JSON.stringify({ component: COMPONENT, version: "2.0.0", hosts: HOSTS }),
    });
    expect(dep.status).toBe(202);
    const { deploymentId } = (await dep.json()) as { deploymentId: string };
    type View = { counts: Record<string, number>; tasks: Array<{ hostId: string; state: string; error: string | null }> };
    const view = await waitFor(
      `deployment ${deploymentId} to finish`,
      async () => {
        const r = await fetch(`${system.gatewayUrl}/v1/deployments/${deploymentId}`, { headers: { authorization: `Bearer ${OPERATOR}` } });
        if (r.status !== 200) return undefined;
        const v = (await r.json()) as View;
        return (v.counts["succeeded"] ?? 0) + (v.counts["failed"] ?? 0) === HOSTS.length ? v : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 200 },
    );
    expect(view.counts["succeeded"], JSON.stringify(view.tasks)).toBe(HOSTS.length);
    for (const h of HOSTS) {
      const dir = join(system.hostRoot(h), "components", COMPONENT);
      expect(await readlink(join(dir, "current"))).toMatch(/versions\/2\.0\.0$/);
      expect(await readFile(join(dir, "current", "VERSION"), "utf8")).toBe("2.0.0\n");
      // The host checked the publisher's signature with its own trusted key before it extracted.
      const steps = (await store.read(subjects.slot(h, COMPONENT))).flatMap((c) => c.commit.events).filter((e) => e.type === "TaskStepSucceeded");
      expect(JSON.stringify(steps)).toContain(`signed by ${publisher.keyId}`);
    }
    // The hosts run the bundle: their presence carries the version stamped into it at build time.
    const presence = await new Kvm(nc).open(KV_PRESENCE);
    for (const h of HOSTS) expect((await presence.get(presenceKey(h)))?.json<{ agentVersion: string }>()).toMatchObject({ agentVersion: "1.2.3-shipped" });
  });
});
