import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { readdir, readFile, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import type { ObjectStore } from "@nats-io/obj";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  PackagePublished,
  PUBLISHER_KEY_ID_HEADER,
  PUBLISHER_SIGNATURE_HEADER,
  signManifest,
  SignedManifest,
  subjects,
  trustedKeys,
  verifyManifest,
  type TrustedKeyConfig,
} from "@molt/contracts";
import type { EventStore } from "@molt/event-store";
import { generatePublisherKey, manifestOf, PUBLISHER_BIN, pushPackage, signAndPush, type PublisherKeyPair } from "@molt/publisher";
import { buildPackage } from "@molt/testkit";
import type { buildApp } from "./app.js";
import { startRepoTestBed, type RepoTestBed } from "./test-bed.js";

/**
 * Publisher signing end to end: the key pair and the signature are made by the real
 * `molt-publish` process on the "publisher's machine"; package-repo holds only public keys and
 * refuses, before storing anything, a signature that does not verify over the manifest it
 * recomputes from the bytes.
 */
const OPERATOR = "operator-token-publisher-01";
const run = promisify(execFile);

let bed: RepoTestBed;
let store: EventStore;
let objects: ObjectStore;
let work: string;
let dataDir: string;
let base: string;
let app: ReturnType<typeof buildApp>;
let current: PublisherKeyPair;
let retired: PublisherKeyPair;
let n = 0;
const uniq = () => `p${++n}-${Date.now().toString(36)}`;
const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/** `molt-publish …` as its own process, as a publisher would run it. */
async function publish(args: string[], env: Record<string, string> = {}) {
  try {
    const r = await run(process.execPath, ["--import", "tsx", PUBLISHER_BIN, ...args], {
      cwd: dirname(PUBLISHER_BIN),
      env: { ...process.env, ...env },
    });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

async function nothingStored(component: string, digest: string) {
  expect(await store.readLast(subjects.package(component))).toBeNull();
  expect(await objects.info(digest)).toBeNull();
  expect(await readdir(join(dataDir, "cache")).catch(() => [])).not.toContain(digest);
  expect(await readdir(join(dataDir, "tmp")).catch(() => [])).toEqual([]);
}

/** A package-repo app on the shared bus that trusts `keys` and holds no signing key itself. */
function repoTrusting(dir: string, keys: TrustedKeyConfig[]) {
  return bed.app({
    tokens: { [OPERATOR]: { actor: "pia", role: "operator" } },
    dataDir: dir,
    publicUrl: "http://127.0.0.1/",
    maxPackageBytes: 1024 * 1024,
    publisherKeys: trustedKeys(keys),
    signer: null,
  });
}

const ids = (component: string) => ({ component, version: "1.0.0", platform: "linux-amd64" });
const pkg = (text: string) => buildPackage({ VERSION: "1.0.0\n", "bin/run.sh": `#!/bin/sh\necho ${text}\n` });

beforeAll(async () => {
  bed = await startRepoTestBed("publisher");
  ({ store, objects, work } = bed);
  dataDir = join(work, "data");
  current = generatePublisherKey();
  retired = generatePublisherKey();
  // No key on the server: what it publishes is signed by the publisher or not at all.
  app = repoTrusting(dataDir, [{ publicKey: current.publicKey }, { publicKey: retired.publicKeyPem, revoked: true }]);
  base = await app.listen({ host: "127.0.0.1", port: 0 });
});

afterAll(async () => {
  await app?.close();
  await bed?.close();
});

describe("publisher signing", () => {
  it("[upgrade-client] molt-publish keygen → sign → push: the event carries the publisher's signature and a host's keys verify it", async () => {
    const keyDir = join(work, `keys-${++n}`);
    const gen = await publish(["keygen", "--out", keyDir, "--name", "release"]);
    expect(gen.code, gen.stderr).toBe(0);
    const made = JSON.parse(gen.stdout) as { keyId: string; publicKey: string; privateKeyFile: string };
    expect((await stat(made.privateKeyFile)).mode & 0o777).toBe(0o600);
    // keygen never overwrites a key hosts may already trust.
    expect((await publish(["keygen", "--out", keyDir, "--name", "release"])).code).toBe(1);

    // This repository trusts `current` only; run a second app trusting the new key.
    const repo = repoTrusting(join(work, `data-${n}`), [{ keyId: made.keyId, publicKey: made.publicKey }]);
    const url = await repo.listen({ host: "127.0.0.1", port: 0 });
    try {
      const component = uniq();
      const archive = join(work, `${component}.tar.gz`);
      const bytes = await pkg(component);
      await writeFile(archive, bytes);
      // Signed where the key is…
      const signed = await publish(["sign", "--key", made.privateKeyFile, "--component", component, "--version", "1.0.0", "--platform", "linux-amd64", archive]);
      expect(signed.code, signed.stderr).toBe(0);
      const detached = SignedManifest.parse(JSON.parse(await readFile(`${archive}.sig.json`, "utf8")));
      expect(detached.manifest).toMatchObject({ component, sha256: sha256(bytes), size: bytes.length, files: 2 });
      // …pushed from elsewhere, with no private key at hand.
      const pushed = await publish(["push", "--url", url, "--signature", `${archive}.sig.json`, archive], { MOLT_TOKEN: OPERATOR });
      expect(pushed.code, pushed.stderr).toBe(0);
      expect(JSON.parse(pushed.stdout)).toMatchObject({ status: 201, keyId: made.keyId, package: { component, sha256: sha256(bytes) } });

      const [commit] = await store.read(subjects.package(component));
      const event = PackagePublished.parse(commit!.commit.events[0]);
      expect(event.data).toMatchObject({ signature: detached.signature, keyId: made.keyId });
      // What a host does with it: its configured keys, the manifest and signature from the event.
      const host = trustedKeys([{ publicKey: made.publicKey }]);
      expect(verifyManifest(event.data.manifest, event.data.signature, event.data.keyId, host)).toMatchObject({ ok: true });
    } finally {
      await repo.close();
    }
  });

  it("[upgrade-client] push --key signs and pushes in one go; a signature file for other bytes is caught before any upload", async () => {
    const keyFile = join(work, "current.key");
    await writeFile(keyFile, current.privateKeyPem, { mode: 0o600 });
    const component = uniq();
    const archive = join(work, `${component}.tar.gz`);
    await writeFile(archive, await pkg("one"));
    const id = ["--component", component, "--version", "1.0.0", "--platform", "linux-amd64"];
    expect((await publish(["sign", "--key", keyFile, ...id, "--out", join(work, "one.sig.json"), archive])).code).toBe(0);
    const other = join(work, `${component}-other.tar.gz`);
    const otherBytes = await pkg("two");
    await writeFile(other, otherBytes);
    const mismatch = await publish(["push", "--url", base, "--signature", join(work, "one.sig.json"), other], { MOLT_TOKEN: OPERATOR });
    expect(mismatch.code).toBe(1);
    expect(mismatch.stderr).toMatch(/signs another manifest than .*sha256/);
    await nothingStored(component, sha256(otherBytes));

    const pushed = await publish(["push", "--url", base, "--key", keyFile, ...id, archive], { MOLT_TOKEN: OPERATOR });
    expect(pushed.code, pushed.stderr).toBe(0);
    expect(JSON.parse(pushed.stdout)).toMatchObject({ status: 201, keyId: current.keyId });
    expect((await publish(["push", "--url", base, "--key", keyFile, archive], { MOLT_TOKEN: OPERATOR })).stderr).toMatch(/--component is required/);
  });

  it("[upgrade-client] refused with the reason and nothing stored: unknown key, revoked key, a signature over other bytes, malformed, unsigned", async () => {
    const stranger = generatePublisherKey();
    const cases: Array<{ what: string; key: PublisherKeyPair | null; tamper?: boolean; headers?: Record<string, string>; status: number; message: RegExp }> = [
      { what: "unknown key", key: stranger, status: 403, message: new RegExp(`unknown-key.*${stranger.keyId} is not a trusted publisher key`) },
      { what: "revoked key", key: retired, status: 403, message: new RegExp(`revoked-key.*${retired.keyId} is revoked`) },
      { what: "other bytes", key: current, tamper: true, status: 403, message: /bad-signature.*does not verify/ },
      { what: "malformed", key: null, headers: { [PUBLISHER_SIGNATURE_HEADER]: "bm9wZQ==", [PUBLISHER_KEY_ID_HEADER]: current.keyId }, status: 400, message: /publisher signature: signature must be 64 bytes/ },
      { what: "half", key: null, headers: { [PUBLISHER_KEY_ID_HEADER]: current.keyId }, status: 400, message: /together/ },
      { what: "unsigned", key: null, status: 400, message: /publisher-signed packages only/ },
    ];
    for (const c of cases) {
      const component = uniq();
      const bytes = await pkg(c.what);
      let headers = c.headers ?? {};
      if (c.key) {
        // A valid signature, but over the manifest of other bytes when tampered.
        const signedBytes = c.tamper ? await pkg(`${c.what}-original`) : bytes;
        const sig = signManifest(await manifestOf(signedBytes, ids(component)), c.key.privateKeyPem);
        headers = { [PUBLISHER_SIGNATURE_HEADER]: sig.signature, [PUBLISHER_KEY_ID_HEADER]: sig.keyId };
      }
      const qs = new URLSearchParams(ids(component)).toString();
      const res = await fetch(`${base}/v1/packages?${qs}`, {
        method: "POST",
        headers: { authorization: `Bearer ${OPERATOR}`, "content-type": "application/gzip", ...headers },
        body: new Uint8Array(bytes),
      });
      const body = (await res.json()) as { error: { message: string } };
      expect(res.status, `${c.what}: ${JSON.stringify(body)}`).toBe(c.status);
      expect(body.error.message, c.what).toMatch(c.message);
      await nothingStored(component, sha256(bytes));
    }
  });

  it("[upgrade-client] signAndPush (what the demo uses): 201 and the variant added to the signed metadata, then the same bytes again replay with the first signature", async () => {
    const component = uniq();
    const bytes = await pkg("lib");
    const first = await signAndPush({ url: base, token: OPERATOR, ids: ids(component), archive: bytes, privateKey: current.privateKeyPem });
    expect(first.status, JSON.stringify(first.body)).toBe(201);
    const again = await pushPackage({ url: base, token: OPERATOR, ids: ids(component), archive: bytes, signature: first.signature });
    expect(again.status).toBe(200);
    // The publish, then the publisher-signed metadata that lists it; the replay added nothing.
    expect((await store.read(subjects.package(component))).map((c) => c.commit.events.map((e) => e.type))).toEqual([["PackagePublished"], ["PackageMetadataSigned"]]);
  });
});
