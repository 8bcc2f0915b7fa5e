import { access, readdir, readFile, readlink, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync, gzipSync } from "node:zlib";
import { type DesiredState, type JournalEntry, type PackageManifest, type RepositoryMetadata, signManifest, signRepositoryMetadata } from "@molt/contracts";
import { generatePublisherKey, manifestOf } from "@molt/publisher";
import { escapingSymlinkChain, longEscapingSymlinkChain } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { componentPaths, seedComponent } from "../host/layout.js";
import { readJournal, recordLaunch, taskPaths } from "../host/task-files.js";
import { silentLog } from "../log.js";
import { buildPackage, type BuiltPackage, describePackage, desiredTask, type PackageServer, rawTarGz, type RawEntry, startPackageServer, tempDir } from "../testing/fixtures.js";
import { treeDigest } from "../testing/tree.js";
import { testRunner } from "../testing/runner.js";

const HOST = "sig-1.example.com";
const COMPONENT = "metrics-agent";
const trusted = generatePublisherKey();
const stranger = generatePublisherKey();
let server: PackageServer;
let pkg: BuiltPackage;
let manifest: PackageManifest;
const roots: string[] = [];
/** A directory outside every host root: an archive that escapes would write here. */
let outside: string;

beforeAll(async () => {
  server = await startPackageServer();
  pkg = await buildPackage({ VERSION: "2.0.0\n", "bin/run.sh": { content: "#!/bin/sh\necho 2.0.0\n", mode: 0o755 } });
  manifest = await manifestOf(pkg.bytes, { component: COMPONENT, version: "2.0.0", platform: "linux-amd64" });
  outside = await tempDir("outside");
  roots.push(outside);
});
afterAll(async () => {
  await server.close();
  await Promise.all(roots.map((r) => rm(r, { recursive: true, force: true })));
});

type Signed = NonNullable<NonNullable<DesiredState["package"]>["signed"]>;
const sign = (m: PackageManifest, key = trusted): Signed => ({ manifest: m, ...signManifest(m, key.privateKeyPem) });

type Metadata = NonNullable<NonNullable<DesiredState["package"]>["metadata"]>;

async function run(opts: { body: Buffer; size?: number; sha256: string; signed?: Signed; metadata?: Metadata; root?: string; version?: string }): Promise<{ root: string; entries: JournalEntry[]; path: string }> {
  let root = opts.root;
  if (root === undefined) {
    root = await tempDir("sig");
    roots.push(root);
    await seedComponent(root, { component: COMPONENT, version: "1.0.0" });
  }
  const path = `/sig-${Math.random().toString(36).slice(2)}.tar.gz`;
  const url = server.serve(path, { body: opts.body });
  const t = desiredTask({
    hostId: HOST,
    ...(opts.version !== undefined ? { version: opts.version } : {}),
    package: { platform: "linux-amd64", sha256: opts.sha256, size: opts.size ?? opts.body.length, url, ...(opts.signed ? { signed: opts.signed } : {}), ...(opts.metadata ? { metadata: opts.metadata } : {}) },
  });
  await recordLaunch(root, t, { component: { name: COMPONENT, kind: "third-party" }, trustedKeys: [{ publicKey: trusted.publicKey }] });
  expect((await testRunner({ log: silentLog() }).start(root, t, () => undefined).exited).code).toBe(0);
  return { root, entries: (await readJournal(taskPaths(root, t.taskId).journal, 0)).entries, path };
}

/** Refused with the reason; the old version untouched and nothing extracted. */
async function expectUntouched(root: string) {
  const paths = componentPaths(root, COMPONENT);
  expect(await readlink(paths.current)).toBe(join("versions", "1.0.0"));
  expect(await readdir(paths.versions)).toEqual(["1.0.0"]);
  expect((await readdir(paths.staging)).filter((n) => n.endsWith(".extract"))).toEqual([]);
}

describe("the host installs only what a trusted publisher signed", () => {
  it("[upgrade-client] a package signed by a trusted key installs, and the journal names the key", async () => {
    const { root, entries } = await run({ body: pkg.bytes, sha256: pkg.sha256, signed: sign(manifest) });
    expect(entries.at(-1)).toMatchObject({ kind: "succeeded", version: "2.0.0" });
    expect(entries.find((e) => e.kind === "step-succeeded" && e.step === "download")).toMatchObject({ detail: expect.stringContaining(`signed by ${trusted.keyId}`) as unknown });
    expect(await readlink(componentPaths(root, COMPONENT).current)).toBe(join("versions", "2.0.0"));
  });

  const refusals: Array<[string, () => Parameters<typeof run>[0], RegExp, boolean]> = [
    ["missing signature", () => ({ body: pkg.bytes, sha256: pkg.sha256 }), /carries no signature/, false],
    ["an unknown key", () => ({ body: pkg.bytes, sha256: pkg.sha256, signed: sign(manifest, stranger) }), /\(unknown-key\): key [0-9a-f]{16} is not a trusted publisher key/, false],
    ["a valid signature for another component", () => ({ body: pkg.bytes, sha256: pkg.sha256, signed: sign({ ...manifest, component: "other-agent" }) }), /signed manifest is for component other-agent, not metrics-agent/, false],
    ["a valid signature for another platform", () => ({ body: pkg.bytes, sha256: pkg.sha256, signed: sign({ ...manifest, platform: "linux-arm64" }) }), /platform linux-arm64, not linux-amd64/, false],
    ["a valid signature for an older version", () => ({ body: pkg.bytes, sha256: pkg.sha256, signed: sign({ ...manifest, version: "1.5.0" }) }), /version 1\.5\.0, not 2\.0\.0/, false],
    ["a signature that does not verify (manifest altered after signing)", () => ({ body: pkg.bytes, sha256: pkg.sha256, signed: { ...sign(manifest), manifest: { ...manifest, unpackedSize: manifest.unpackedSize + 1 } } }), /\(bad-signature\)/, false],
    [
      "sha256 mismatch",
      () => {
        const tampered = Buffer.from(pkg.bytes);
        tampered[tampered.length - 10] = tampered[tampered.length - 10]! ^ 0xff;
        return { body: tampered, sha256: pkg.sha256, signed: sign(manifest) };
      },
      /sha256 mismatch: expected [0-9a-f]{64}, got [0-9a-f]{64}/,
      true,
    ],
    ["an oversize body", () => ({ body: Buffer.concat([pkg.bytes, Buffer.alloc(4096)]), size: pkg.size, sha256: pkg.sha256, signed: sign(manifest) }), /body larger than the package size/, true],
  ];
  it.each(refusals)("[upgrade-client] refused before extraction, old version untouched: %s", async (_name, spec, reason, downloads) => {
    const { root, entries, path } = await run(spec());
    expect(entries.at(-1)).toMatchObject({ kind: "failed", step: "download", reason: expect.stringMatching(reason) as unknown });
    await expectUntouched(root);
    // A signature refusal fetches nothing; a bytes refusal fetched and threw the bytes away.
    expect(server.requests.filter((r) => r.path === path).length > 0).toBe(downloads);
  });
});

describe("repository metadata: the host refuses yanked, unlisted, older and expired metadata [security]", () => {
  const FUTURE = "2099-01-01T00:00:00.000Z";
  const entry = (over: Partial<RepositoryMetadata["packages"][number]> = {}) => ({ version: "2.0.0", platform: "linux-amd64", sha256: pkg.sha256, yanked: false, ...over });
  const doc = (version: number, packages = [entry()], over: Partial<RepositoryMetadata> = {}): RepositoryMetadata => ({ component: COMPONENT, version, expires: FUTURE, packages, ...over });
  const meta = (m: RepositoryMetadata, key = trusted): Metadata => ({ metadata: m, ...signRepositoryMetadata(m, key.privateKeyPem) });
  const signedPkg = () => ({ body: pkg.bytes, sha256: pkg.sha256, signed: sign(manifest) });

  it("[security] listed and not yanked in metadata signed by a trusted key: installs; the host records the metadata version", async () => {
    const { root, entries } = await run({ ...signedPkg(), metadata: meta(doc(3)) });
    expect(entries.at(-1)).toMatchObject({ kind: "succeeded", version: "2.0.0" });
    expect(JSON.parse(await readFile(join(root, "agent", "metadata", `${COMPONENT}.json`), "utf8"))).toMatchObject({ version: 3 });
  });

  const refusals: Array<[string, () => Metadata, RegExp]> = [
    ["the target yanked", () => meta(doc(4, [entry({ yanked: true })])), /repository metadata refused: metrics-agent 2\.0\.0 linux-amd64 is yanked/],
    ["the target not listed", () => meta(doc(4, [entry({ version: "1.0.0" })])), /is not listed in the repository metadata/],
    ["listed with other bytes", () => meta(doc(4, [entry({ sha256: "f".repeat(64) })])), /lists sha256 f{64}/],
    ["expired (a freeze)", () => meta(doc(4, [entry()], { expires: "2020-01-01T00:00:00.000Z" })), /expired at 2020-01-01/],
    ["signed by an unknown key", () => meta(doc(4), stranger), /repository metadata refused \(unknown-key\)/],
    ["altered after signing", () => ({ ...meta(doc(4, [entry({ yanked: true })])), metadata: doc(4) }), /repository metadata refused \(bad-signature\)/],
    ["for another component", () => meta(doc(4, [entry()], { component: "other-agent" })), /is for other-agent/],
  ];
  it.each(refusals)("[security] refused before download, old version untouched: %s", async (_name, metadata, reason) => {
    const { root, entries, path } = await run({ ...signedPkg(), metadata: metadata() });
    expect(entries.at(-1)).toMatchObject({ kind: "failed", step: "download", reason: expect.stringMatching(reason) as unknown });
    await expectUntouched(root);
    expect(server.requests.filter((r) => r.path === path)).toEqual([]);
  });

  it("[security] once the host has seen metadata version N: an older document (a rollback) and a package without metadata are refused", async () => {
    // Seen, not installed: the metadata passes, the bytes do not (so 1.0.0 stays and 2.0.0 is still a change).
    const tampered = Buffer.from(pkg.bytes);
    tampered[tampered.length - 10] = tampered[tampered.length - 10]! ^ 0xff;
    const first = await run({ body: tampered, sha256: pkg.sha256, signed: sign(manifest), metadata: meta(doc(5)) });
    expect(first.entries.at(-1)).toMatchObject({ kind: "failed", reason: expect.stringMatching(/sha256 mismatch/) as unknown });
    const { root } = first;
    const older = await run({ ...signedPkg(), root, metadata: meta(doc(4)) });
    expect(older.entries.at(-1)).toMatchObject({ kind: "failed", step: "download", reason: expect.stringMatching(/metadata version 4 is older than version 5, which this host has seen/) as unknown });
    const stripped = await run({ ...signedPkg(), root });
    expect(stripped.entries.at(-1)).toMatchObject({ kind: "failed", step: "download", reason: expect.stringMatching(/carries no repository metadata, and this host has seen version 5/) as unknown });
    await expectUntouched(root);
    expect(JSON.parse(await readFile(join(root, "agent", "metadata", `${COMPONENT}.json`), "utf8"))).toMatchObject({ version: 5 });
  });
});

describe("malicious archives, signed by a trusted key with a correct sha256 (so extraction really runs)", () => {
  const abs = () => join(outside, "abs-evil.txt");
  const cases: Array<[string, () => RawEntry[], RegExp, Partial<PackageManifest>?]> = [
    ["`../` names", () => [{ path: "../evil.txt", type: "File", body: "x" }], /`\.\.` in path/],
    ["an absolute path", () => [{ path: abs(), type: "File", body: "x" }], /absolute path/],
    ["a `////` path", () => [{ path: `////${abs().slice(1)}`, type: "File", body: "x" }], /absolute path/],
    ["a backslash name", () => [{ path: "..\\evil.txt", type: "File", body: "x" }], /backslash/],
    ["a directory, then a link of the same name", () => [{ path: "d", type: "Directory" }, { path: "d", type: "SymbolicLink", linkpath: outside }], /absolute or malformed|replaces an earlier/],
    ["a link inside, then a file through it", () => [{ path: "l", type: "SymbolicLink", linkpath: "sub" }, { path: "l/evil.txt", type: "File", body: "x" }], /goes through SymbolicLink/],
    ["a link out, then a file through it", () => [{ path: "l", type: "SymbolicLink", linkpath: "../../../../../../../../tmp" }, { path: "l/evil.txt", type: "File", body: "x" }], /points outside the package/],
    ["[security] a symlink chain (a/b -> .., z -> a/b/.., e -> z/etc/cron.d): every hop inside as text, outside on disk", () => escapingSymlinkChain() as RawEntry[], /symlink "z" resolves outside the package/],
    ["[security] the long symlink chain (… zN -> a/b/z(N-1), e -> zN/../etc)", () => longEscapingSymlinkChain(5) as RawEntry[], /symlink "z1" resolves outside the package/],
    ["a hardlink out", () => [{ path: "h", type: "Link", linkpath: "/etc/passwd" }], /hardlink "h"/],
    ["a device node", () => [{ path: "null", type: "CharacterDevice" }], /type CharacterDevice is not allowed/],
    ["a setuid file", () => [{ path: "suid", type: "File", body: "#!/bin/sh\n", mode: 0o4755 }], /setuid or setgid/],
    ["more bytes than the manifest says", () => [{ path: "a.txt", type: "File", body: "x".repeat(100) }], /more than 99 bytes unpacked/, { unpackedSize: 99 }],
    ["more entries than the manifest says", () => [{ path: "a.txt", type: "File", body: "a" }, { path: "b.txt", type: "File", body: "b" }, { path: "c.txt", type: "File", body: "c" }], /more than 2 entries/, { entries: 2 }],
  ];
  it.each(cases)("[upgrade-client] %s: refused, nothing written outside staging", async (_name, entries, reason, lie = {}) => {
    const raw = entries();
    const bytes = rawTarGz(raw);
    await expectMaliciousRefused(bytes, raw.length, raw.filter((e) => e.type === "File").length, raw.reduce((n, e) => n + (e.body?.length ?? 0), 0), reason, lie);
  });

  it("[upgrade-client] a small archive that inflates past the manifest's limit: refused", async () => {
    const big = Buffer.alloc(20 * 1024 * 1024);
    const blocks = [rawHeader("zeros", big.length), big, Buffer.alloc(1024)];
    const bytes = gzipSync(Buffer.concat(blocks));
    expect(bytes.length).toBeLessThan(100_000);
    await expectMaliciousRefused(bytes, 1, 1, big.length, /more than 1000 bytes unpacked|decompression ratio exceeded/, { unpackedSize: 1000 });
  });
});

function rawHeader(path: string, size: number): Buffer {
  // A file header for `size` bytes, built from a one-entry archive of the same name.
  const one = rawTarGz([{ path, type: "File", body: "" }]);
  const header = Buffer.from(gunzipSync(one).subarray(0, 512));
  header.write(size.toString(8).padStart(11, "0") + "\0", 124, 12, "ascii");
  header.fill(" ", 148, 156);
  let sum = 0;
  for (const b of header) sum += b;
  header.write(sum.toString(8).padStart(6, "0") + "\0 ", 148, 8, "ascii");
  return header;
}

async function expectMaliciousRefused(bytes: Buffer, entries: number, files: number, unpackedSize: number, reason: RegExp, lie: Partial<PackageManifest>) {
  const d = describePackage(bytes);
  const m: PackageManifest = { component: COMPONENT, version: "2.0.0", platform: "linux-amd64", sha256: d.sha256, size: d.size, entries, files, unpackedSize, ...lie };
  const before = await readdir(outside);
  const { root, entries: journal } = await run({ body: bytes, sha256: d.sha256, signed: sign(m) });
  expect(journal.at(-1)).toMatchObject({ kind: "failed", step: "override", reason: expect.stringMatching(reason) as unknown });
  await expectUntouched(root);
  expect(await readdir(outside)).toEqual(before);
  await expect(access(join(root, "components", "evil.txt"))).rejects.toThrow();
  await expect(access(join(tmpdir(), "evil.txt"))).rejects.toThrow();
  // The component's tree is exactly what it was.
  const clean = await tempDir("clean");
  roots.push(clean);
  await seedComponent(clean, { component: COMPONENT, version: "1.0.0" });
  expect(await treeDigest(componentPaths(root, COMPONENT).current)).toBe(await treeDigest(componentPaths(clean, COMPONENT).current));
}
