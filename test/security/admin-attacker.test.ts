import { randomUUID } from "node:crypto";
import { mkdtemp, readdir, readFile, readlink, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  desiredKey,
  KV_DESIRED,
  platformOf,
  signManifest,
  signRepositoryMetadata,
  subjects,
  type DesiredState,
  type PackageManifest,
  type PackageRef,
  type SignedRepositoryMetadata,
} from "@molt/contracts";
import { generatePublisherKey, manifestOf, signAndPush, yankPackage, type PublisherKeyPair } from "@molt/publisher";
import { buildPackage, hostCredsFile, startNatsServer, startSystem, waitFor, type SecureNatsServer, type System } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

/**
 * Issue 7: "a bus attacker who can write a desired key anyway (a test with admin credentials)
 * still cannot make a host install unsigned, wrongly signed, revoked-key, yanked or
 * older-metadata packages". The real system on a secured bus; the host's agent trusts the
 * release key and lists a retired (revoked) one; the attacker holds the admin's bus credentials
 * (and the retired key's private half), writes the host's desired key and nudges it directly.
 */
const OPERATOR = "operator-token-attacker-01";
const HOST = "victim.example.com";
const COMPONENT = "metrics-agent";
const PLATFORM = platformOf(process.platform, process.arch);

let nats: SecureNatsServer;
let admin: NatsConnection;
let system: System;
let dataDir: string;
let release: PublisherKeyPair;
let retired: PublisherKeyPair;
let stranger: PublisherKeyPair;

async function api<T>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${system.gatewayUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${OPERATOR}`, ...(body !== undefined ? { "content-type": "application/json" } : {}), ...headers },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  return { status: res.status, body: (text ? JSON.parse(text) : null) as T };
}

async function publish(version: string) {
  const archive = await buildPackage({ VERSION: `${version}\n`, "bin/run.sh": `#!/bin/sh\necho ${version}\n` });
  const pushed = await signAndPush({ url: system.gatewayUrl, token: OPERATOR, ids: { component: COMPONENT, version, platform: PLATFORM }, archive, privateKey: release.privateKeyPem });
  expect(pushed.status, JSON.stringify(pushed.body)).toBe(201);
  expect(pushed.metadata?.status, JSON.stringify(pushed.metadata?.body)).toBe(201);
}

/** The package reference the allocator would write, read back from the repository. */
async function refOf(version: string, metadata: SignedRepositoryMetadata): Promise<PackageRef> {
  const d = await api<{ sha256: string; size: number; url: string; manifest: PackageManifest; signature: string; keyId: string }>("GET", `/v1/packages/${COMPONENT}/${version}/${PLATFORM}`);
  expect(d.status).toBe(200);
  const b = d.body;
  return { platform: PLATFORM, sha256: b.sha256, size: b.size, url: b.url, signed: { manifest: b.manifest, signature: b.signature, keyId: b.keyId }, metadata };
}

const component = () => join(system.hostRoot(HOST), "components", COMPONENT);

/** What is installed: `current`'s target, the version dirs, and the bytes of the running version's files. */
async function installed() {
  const dir = component();
  return { current: await readlink(join(dir, "current")), versions: (await readdir(join(dir, "versions"))).sort(), version: await readFile(join(dir, "current", "VERSION"), "utf8") };
}

/** Writes the host's desired key as the attacker, nudges the host, and waits for the task's last journal entry. */
async function attack(version: string, pkg: PackageRef) {
  const taskId = `t-evil-${randomUUID().slice(0, 8)}`;
  const desired: DesiredState = {
    taskId,
    deploymentId: "d-evil",
    hostId: HOST,
    component: COMPONENT,
    kind: "upgrade",
    version,
    fromVersion: "3.0.0",
    attempt: 1,
    deadline: new Date(Date.now() + 120_000).toISOString(),
    package: pkg,
  };
  const kv = await new Kvm(admin).open(KV_DESIRED);
  await kv.put(desiredKey(HOST, COMPONENT), JSON.stringify(desired));
  admin.publish(subjects.nudge(HOST));
  const journal = join(system.hostRoot(HOST), "agent", "tasks", taskId, "journal.jsonl");
  return waitFor(
    `task ${taskId} to end`,
    async () => {
      const lines = (await readFile(journal, "utf8").catch(() => "")).split("\n").filter((l) => l.trim() !== "");
      const last = lines.length > 0 ? (JSON.parse(lines.at(-1)!) as { kind: string; step?: string; reason?: string }) : undefined;
      return last && ["succeeded", "failed", "rejected", "rolled-back"].includes(last.kind) ? last : undefined;
    },
    { timeoutMs: 60_000, intervalMs: 100 },
  );
}

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "molt-attacker-"));
  release = generatePublisherKey();
  retired = generatePublisherKey();
  stranger = generatePublisherKey();
  nats = await startNatsServer({ secure: true });
  admin = await nats.bus.connect("admin");
  const config = join(dataDir, "agent.json");
  await writeFile(
    config,
    JSON.stringify({
      hostId: HOST,
      root: join(dataDir, "hosts", HOST),
      nats: { urls: [nats.url], credentials: (await hostCredsFile(nats.bus, HOST, join(dataDir, "creds"))).file },
      trustedKeys: [
        { publicKey: release.publicKey, comment: "the release key" },
        { publicKey: retired.publicKey, revoked: true, comment: "retired: its private half leaked" },
      ],
      components: [{ name: COMPONENT, kind: "third-party" }],
    }),
  );
  system = await startSystem({
    nats,
    dataDir,
    tokens: { [OPERATOR]: { actor: "otto", role: "operator" } },
    trustedPublisherKeys: [{ publicKey: release.publicKey }],
    agents: [{ hostId: HOST, seed: `${COMPONENT}@1.0.0`, env: { MOLT_CONFIG: config, MOLT_HEARTBEAT_MS: "500", MOLT_POLL_MS: "1000" } }],
    env: { MOLT_TICK_MS: "500", MOLT_RETRY_DELAY_MS: "200", MOLT_ACK_WAIT_MS: "2000" },
  });
  await waitFor("host registered", async () => ((await api<unknown>("GET", `/v1/hosts/${HOST}`)).status === 200 ? true : undefined), { timeoutMs: 60_000 });
}, 240_000);

afterAll(async () => {
  await admin?.close();
  await system?.stop();
  await nats?.stop();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

describe("an attacker with the admin's bus credentials", () => {
  it("[security] cannot make a host install unsigned, wrongly signed, revoked-key, yanked or older-metadata packages: refused with the reason in the host's journal, nothing on disk changed", async () => {
    // The publisher: 2.0.0, 2.1.0, 3.0.0, then 2.1.0 yanked (metadata versions 1 to 4).
    await publish("2.0.0");
    const v1 = (await api<SignedRepositoryMetadata>("GET", `/v1/packages/${COMPONENT}/metadata`)).body;
    await publish("2.1.0");
    await publish("3.0.0");
    const v3 = (await api<SignedRepositoryMetadata>("GET", `/v1/packages/${COMPONENT}/metadata`)).body;
    expect(v3.metadata.version).toBe(3);
    const yank = await yankPackage({ url: system.gatewayUrl, token: OPERATOR, component: COMPONENT, version: "2.1.0", reason: "CVE-2026-0007", privateKey: release.privateKeyPem });
    expect(yank.status, JSON.stringify(yank.body)).toBe(201);
    const latest = (await api<SignedRepositoryMetadata>("GET", `/v1/packages/${COMPONENT}/metadata`)).body;
    expect(latest.metadata.version).toBe(4);

    // A new plan of the yanked version skips the host as yanked: nothing to deploy (422).
    const refusedPlan = await api<{ error: { message: string } }>("POST", "/v1/deployments", { component: COMPONENT, version: "2.1.0", hosts: [HOST] }, { "idempotency-key": "attacker-yanked" });
    expect(refusedPlan.status, JSON.stringify(refusedPlan.body)).toBe(422);
    expect(JSON.stringify(refusedPlan.body)).toMatch(/yanked/);

    // The legitimate path: a deployment of 3.0.0 carries the latest metadata; the host records version 4.
    const dep = await api<{ deploymentId: string }>("POST", "/v1/deployments", { component: COMPONENT, version: "3.0.0", hosts: [HOST] }, { "idempotency-key": "attacker-3.0.0" });
    expect(dep.status, JSON.stringify(dep.body)).toBe(202);
    await waitFor("3.0.0 installed", async () => ((await installed().catch(() => null))?.current.endsWith("3.0.0") ? true : undefined), { timeoutMs: 90_000, intervalMs: 200 });
    expect(JSON.parse(await readFile(join(system.hostRoot(HOST), "agent", "metadata", `${COMPONENT}.json`), "utf8"))).toMatchObject({ version: 4 });
    const before = await installed();
    expect(before.version).toBe("3.0.0\n");

    // The attacker's packages: its own bytes, under a version nobody published.
    const evilBytes = await buildPackage({ VERSION: "6.6.6\n", "bin/run.sh": "#!/bin/sh\necho pwned\n" });
    const evilManifest = await manifestOf(evilBytes, { component: COMPONENT, version: "6.6.6", platform: PLATFORM });
    const evilListed = (key: PublisherKeyPair): SignedRepositoryMetadata => {
      const metadata = { ...latest.metadata, version: 5, packages: [...latest.metadata.packages, { version: "6.6.6", platform: PLATFORM, sha256: evilManifest.sha256, yanked: false }] };
      return { metadata, ...signRepositoryMetadata(metadata, key.privateKeyPem) };
    };
    const evil = (signed: PackageRef["signed"], metadata: SignedRepositoryMetadata): PackageRef => ({
      platform: PLATFORM,
      sha256: evilManifest.sha256,
      size: evilManifest.size,
      url: `${system.gatewayUrl}/v1/blobs/${evilManifest.sha256}`,
      ...(signed ? { signed } : {}),
      metadata,
    });
    const signedBy = (key: PublisherKeyPair) => ({ manifest: evilManifest, ...signManifest(evilManifest, key.privateKeyPem) });

    const attacks: Array<[string, string, PackageRef, RegExp]> = [
      ["unsigned", "6.6.6", evil(undefined, evilListed(stranger)), /carries no signature/],
      ["signed by a key the host does not trust", "6.6.6", evil(signedBy(stranger), evilListed(stranger)), /signature refused \(unknown-key\)/],
      ["signed by the retired, revoked key", "6.6.6", evil(signedBy(retired), evilListed(retired)), /signature refused \(revoked-key\)/],
      ["a release-signed manifest with the signature of another package", "6.6.6", evil({ ...signedBy(release), manifest: { ...evilManifest, version: "6.6.7" } }, latest), /bad-signature|version 6\.6\.7, not 6\.6\.6/],
      ["the yanked 2.1.0 with the latest metadata", "2.1.0", await refOf("2.1.0", latest), /2\.1\.0 .* is yanked/],
      ["the yanked 2.1.0 with the metadata from before its yank (a rollback)", "2.1.0", await refOf("2.1.0", v3), /metadata version 3 is older than version 4, which this host has seen/],
      ["2.0.0 with metadata version 1 (older than the host has seen)", "2.0.0", await refOf("2.0.0", v1), /metadata version 1 is older than version 4, which this host has seen/],
      ["2.0.0 with its metadata stripped", "2.0.0", { ...(await refOf("2.0.0", latest)), metadata: undefined }, /carries no repository metadata, and this host has seen version 4/],
    ];
    for (const [what, version, pkg, reason] of attacks) {
      const last = await attack(version, pkg);
      expect({ what, kind: last.kind, step: last.step }).toEqual({ what, kind: "failed", step: "download" });
      expect(last.reason, what).toMatch(reason);
      // Nothing installed: the same current, the same version dirs, the same bytes running.
      expect(await installed(), what).toEqual(before);
    }
    // The host's record of the newest metadata did not move back.
    expect(JSON.parse(await readFile(join(system.hostRoot(HOST), "agent", "metadata", `${COMPONENT}.json`), "utf8"))).toMatchObject({ version: 4 });
  }, 300_000);
});

