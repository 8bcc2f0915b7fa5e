import { mkdir, mkdtemp, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { create as createTar } from "tar";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  signRepositoryMetadata,
  subjects,
  trustedKeys,
  verifyRepositoryMetadata,
  type RepositoryMetadata,
  type SignedRepositoryMetadata,
} from "@molt/contracts";
import type { EventStore } from "@molt/event-store";
import { fetchMetadata, generatePublisherKey, nextMetadata, runPublisherCli, signAndPush, signNextMetadata, yankPackage, type PublisherKeyPair } from "@molt/publisher";
import type { buildApp } from "./app.js";
import { startRepoTestBed, type RepoTestBed } from "./test-bed.js";

/**
 * Yank and signed repository metadata on a repository that takes publisher-signed packages only:
 * the publisher's key signs the metadata on the publisher's side; the repository checks it
 * against its trusted keys and its own history before storing it.
 */
const OPERATOR = "operator-token-0123456789";
const VIEWER = "viewer-token-0123456789";

let bed: RepoTestBed;
let store: EventStore;
let work: string;
let base: string;
let app: ReturnType<typeof buildApp>;
let publisher: PublisherKeyPair;
let stranger: PublisherKeyPair;

let n = 0;
const uniq = () => `y${++n}-${Date.now().toString(36)}`;
const auth = { authorization: `Bearer ${OPERATOR}`, "content-type": "application/json" };

async function tarGz(files: Record<string, string>): Promise<Buffer> {
  const dir = await mkdtemp(join(work, "src-"));
  for (const [name, body] of Object.entries(files)) {
    await mkdir(join(dir, name, ".."), { recursive: true });
    await writeFile(join(dir, name), body);
  }
  const out = join(work, `${++n}.tar.gz`);
  await createTar({ gzip: true, cwd: dir, file: out, portable: true }, ["."]);
  return readFile(out);
}

async function publish(component: string, version: string, platform = "linux-amd64") {
  const archive = await tarGz({ "bin/run": `#!/bin/sh\necho ${version}\n` });
  const pushed = await signAndPush({ url: base, token: OPERATOR, ids: { component, version, platform }, archive, privateKey: publisher.privateKeyPem });
  expect(pushed.status).toBe(201);
  expect(pushed.metadata?.status).toBe(201);
  return pushed.body as { sha256: string };
}

const commits = async (component: string) => (await store.read(subjects.package(component))).map((c) => c.commit.events.map((e) => e.type));

function yank(component: string, version: string, body: unknown, token = OPERATOR) {
  return fetch(`${base}/v1/packages/${component}/${version}/yank`, {
    method: "POST",
    headers: { ...auth, authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
  });
}

const signWith = (key: PublisherKeyPair, metadata: RepositoryMetadata): SignedRepositoryMetadata => ({ metadata, ...signRepositoryMetadata(metadata, key.privateKeyPem) });

beforeAll(async () => {
  bed = await startRepoTestBed("yank");
  ({ store, work } = bed);
  publisher = generatePublisherKey();
  stranger = generatePublisherKey();
  app = bed.app({
    tokens: { [OPERATOR]: { actor: "otto", role: "operator" }, [VIEWER]: { actor: "vera", role: "viewer" } },
    dataDir: join(work, "data"),
    publicUrl: "http://repo.example",
    maxPackageBytes: 1024 * 1024,
    publisherKeys: trustedKeys([{ publicKey: publisher.publicKey }]),
    signer: null,
  });
  base = await app.listen({ host: "127.0.0.1", port: 0 });
});

afterAll(async () => {
  await app?.close();
  await bed?.close();
});

describe("package yank and signed repository metadata", () => {
  it("[security] a push adds the variant to the publisher-signed metadata; the metadata verifies with the publisher's key", async () => {
    const component = uniq();
    const a = await publish(component, "1.0.0");
    const b = await publish(component, "1.1.0");
    const signed = await fetchMetadata(base, component);
    expect(signed?.metadata).toMatchObject({
      component,
      version: 2,
      packages: [
        { version: "1.0.0", platform: "linux-amd64", sha256: a.sha256, yanked: false },
        { version: "1.1.0", platform: "linux-amd64", sha256: b.sha256, yanked: false },
      ],
    });
    expect(verifyRepositoryMetadata(signed!.metadata, signed!.signature, signed!.keyId, trustedKeys([{ publicKey: publisher.publicKey }])).ok).toBe(true);
    expect(await commits(component)).toEqual([["PackagePublished"], ["PackageMetadataSigned"], ["PackagePublished"], ["PackageMetadataSigned"]]);
  });

  it("[security] yank: 201 with PackageYanked and the signed metadata in one commit; the same yank again 200, another reason 409, unknown 404, viewer 403", async () => {
    const component = uniq();
    await publish(component, "1.0.0");
    await publish(component, "1.0.0", "linux-arm64");
    const before = (await commits(component)).length;

    const res = await yankPackage({ url: base, token: OPERATOR, component, version: "1.0.0", platform: "linux-arm64", reason: "CVE-2026-1", privateKey: publisher.privateKeyPem });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ component, version: "1.0.0", platform: "linux-arm64", reason: "CVE-2026-1", metadataVersion: 3, yanked: [{ platform: "linux-arm64", yanked: { reason: "CVE-2026-1" } }] });
    const all = await commits(component);
    expect(all.slice(before)).toEqual([["PackageYanked", "PackageMetadataSigned"]]);
    const signed = await fetchMetadata(base, component);
    expect(signed?.metadata.packages.map((e) => [e.platform, e.yanked])).toEqual([["linux-amd64", false], ["linux-arm64", true]]);
    const listing = (await (await fetch(`${base}/v1/packages/${component}`, { headers: auth })).json()) as { packages: { platform: string; yanked?: unknown }[] };
    expect(listing.packages.find((p) => p.platform === "linux-arm64")?.yanked).toMatchObject({ reason: "CVE-2026-1" });
    const one = (await (await fetch(`${base}/v1/packages/${component}/1.0.0/linux-arm64`, { headers: auth })).json()) as { yanked?: unknown };
    expect(one.yanked).toMatchObject({ reason: "CVE-2026-1" });

    // The same yank again (a retried request): answered as the first, nothing appended.
    const again = await yank(component, "1.0.0", { reason: "CVE-2026-1", platform: "linux-arm64", metadata: signed });
    expect(again.status).toBe(200);
    expect(await yank(component, "1.0.0", { reason: "other", platform: "linux-arm64", metadata: signed }).then((r) => r.status)).toBe(409);
    expect(await yank(component, "9.9.9", { reason: "x", metadata: signed }).then((r) => r.status)).toBe(404);
    expect(await yank(component, "1.0.0", { reason: "x", metadata: signed }, VIEWER).then((r) => r.status)).toBe(403);
    expect((await commits(component)).length).toBe(all.length);
  });

  it("[security] a yank's metadata is refused unless it is newer, signed by a trusted key and true to the repository: nothing appended", async () => {
    const component = uniq();
    await publish(component, "1.0.0");
    await publish(component, "2.0.0");
    const before = (await commits(component)).length;
    const current = (await fetchMetadata(base, component))!.metadata;
    const yanked = nextMetadata(component, current, { kind: "yank", version: "1.0.0" }, current.expires);
    const cases: [string, unknown, number, RegExp][] = [
      ["no metadata (this repository takes publisher-signed metadata only)", { reason: "r" }, 400, /publisher-signed metadata/],
      ["signed by a key the repository does not trust", { reason: "r", metadata: signWith(stranger, yanked) }, 403, /unknown-key/],
      ["a signature over other content", { reason: "r", metadata: { ...signWith(publisher, yanked), metadata: { ...yanked, version: 7 } } }, 403, /bad-signature/],
      ["not newer than the stored metadata", { reason: "r", metadata: signWith(publisher, { ...yanked, version: current.version }) }, 409, /not newer/],
      ["saying the yanked version is not yanked", { reason: "r", metadata: signWith(publisher, { ...current, version: current.version + 1 }) }, 400, /1\.0\.0 linux-amd64 is yanked/],
      ["listing a variant that was never published", { reason: "r", metadata: signWith(publisher, { ...yanked, packages: [...yanked.packages, { version: "3.0.0", platform: "linux-amd64", sha256: "a".repeat(64), yanked: false }] }) }, 400, /3\.0\.0 linux-amd64 is not published/],
      ["expired", { reason: "r", metadata: signWith(publisher, { ...yanked, expires: "2020-01-01T00:00:00.000Z" }) }, 400, /expired/],
      ["for another component", { reason: "r", metadata: signWith(publisher, { ...yanked, component: "other" }) }, 400, /is for other/],
    ];
    for (const [what, body, status, message] of cases) {
      const res = await yank(component, "1.0.0", body);
      expect({ what, status: res.status }).toEqual({ what, status });
      expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(message);
    }
    expect((await commits(component)).length).toBe(before);
    expect((await fetchMetadata(base, component))?.metadata.version).toBe(current.version);
  });

  it("[security] PUT metadata: an older or replayed document is never stored over a newer one", async () => {
    const component = uniq();
    await publish(component, "1.0.0");
    const v1 = (await fetchMetadata(base, component))!;
    const next = await signNextMetadata({ url: base, token: OPERATOR, component, privateKey: publisher.privateKeyPem }, { kind: "add", entry: { ...v1.metadata.packages[0]! } });
    const put = (body: unknown) => fetch(`${base}/v1/packages/${component}/metadata`, { method: "PUT", headers: auth, body: JSON.stringify(body) });
    expect((await put(next)).status).toBe(201);
    expect((await put(next)).status).toBe(200);
    expect((await put(v1)).status).toBe(409);
    expect((await fetchMetadata(base, component))?.metadata.version).toBe(2);
  });

  it("[security] molt-publish yank signs the metadata with the publisher's key and yanks every platform of the version", async () => {
    const component = uniq();
    await publish(component, "1.0.0");
    const keyFile = join(work, `${component}.key`);
    await writeFile(keyFile, publisher.privateKeyPem);
    const out: string[] = [];
    const err: string[] = [];
    const io = { out: (l: string) => out.push(l), err: (l: string) => err.push(l), env: { MOLT_TOKEN: OPERATOR } };
    const code = await runPublisherCli(["yank", "--url", base, "--key", keyFile, "--component", component, "--version", "1.0.0", "--reason", "broken"], io);
    expect({ code, err }).toEqual({ code: 0, err: [] });
    expect(JSON.parse(out[0]!)).toMatchObject({ status: 201, yank: { reason: "broken", metadataVersion: 2 } });
    expect((await fetchMetadata(base, component))?.metadata.packages).toEqual([expect.objectContaining({ version: "1.0.0", yanked: true })]);
  });
});
