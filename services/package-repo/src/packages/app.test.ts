import { createHash, createPublicKey, generateKeyPairSync, verify } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { connect as connectTcp } from "node:net";
import { join } from "node:path";
import { Readable } from "node:stream";
import { gzipSync } from "node:zlib";
import type { ObjectStore } from "@nats-io/obj";
import { create as createTar } from "tar";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { canonicalJson, keyIdOf, PackagePublished, subjects, type PackageInfo } from "@molt/contracts";
import type { EventStore } from "@molt/event-store";
import { escapingSymlinkChain, longEscapingSymlinkChain, rawTar, waitFor } from "@molt/testkit";
import type { buildApp } from "./app.js";
import { createManifestSigner } from "./signing.js";
import { startRepoTestBed, type RepoTestBed } from "./test-bed.js";

const OPERATOR = "operator-token-0123456789";
const VIEWER = "viewer-token-0123456789";
const MAX_BYTES = 256 * 1024;

let bed: RepoTestBed;
let store: EventStore;
let objects: ObjectStore;
let work: string;
let dataDir: string;
let base: string;
let app: ReturnType<typeof buildApp>;
const keys = generateKeyPairSync("ed25519");

let n = 0;
const uniq = () => `c${++n}-${Date.now().toString(36)}`;
const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/** A real .tar.gz of the given files, built with the `tar` package. */
async function tarGz(files: Record<string, string | Buffer>): Promise<Buffer> {
  const dir = await mkdtemp(join(work, "src-"));
  for (const [name, body] of Object.entries(files)) {
    await mkdir(join(dir, name, ".."), { recursive: true });
    await writeFile(join(dir, name), body);
  }
  const out = join(work, `${Date.now()}-${++n}.tar.gz`);
  await createTar({ gzip: true, cwd: dir, file: out, portable: true }, ["."]);
  return readFile(out);
}

const auth = (token: string) => ({ authorization: `Bearer ${token}` });

function upload(q: { component: string; version: string; platform?: string }, body: Buffer | ReadableStream<Uint8Array>, token = OPERATOR) {
  const qs = new URLSearchParams({ platform: "linux-amd64", ...q }).toString();
  return fetch(`${base}/v1/packages?${qs}`, {
    method: "POST",
    headers: { ...auth(token), "content-type": "application/gzip" },
    body,
    ...(body instanceof ReadableStream ? { duplex: "half" } : {}),
  });
}

const download = (path: string, headers: Record<string, string> = {}, method = "GET") => fetch(`${base}${path}`, { method, headers });

async function nothingStored(component: string, digest: string) {
  expect(await store.readLast(subjects.package(component))).toBeNull();
  expect(await objects.info(digest)).toBeNull();
  expect(await readdir(join(dataDir, "cache")).catch(() => [])).not.toContain(digest);
  expect(await readdir(join(dataDir, "tmp"))).toEqual([]);
}

beforeAll(async () => {
  bed = await startRepoTestBed("package-repo");
  ({ store, objects, work } = bed);
  dataDir = join(work, "data");
  app = bed.app({
    tokens: { [OPERATOR]: { actor: "otto", role: "operator" }, [VIEWER]: { actor: "vera", role: "viewer" } },
    dataDir,
    // What hosts are told to download from (a mirror, say): independent of where the app listens.
    publicUrl: "https://mirror.example/",
    maxPackageBytes: MAX_BYTES,
    publisherKeys: new Map(),
    signer: createManifestSigner(keys.privateKey.export({ format: "pem", type: "pkcs8" }).toString()),
  });
  base = await app.listen({ host: "127.0.0.1", port: 0 });
});

afterAll(async () => {
  await app?.close();
  await bed?.close();
});

describe("package-repo over HTTP", () => {
  it("[spine] upload → 201 with sha256 and size of the bytes; PackagePublished with the manifest on molt.es.package.<c>", async () => {
    const component = uniq();
    const bytes = await tarGz({ "bin/agent": "#!/bin/sh\necho 2.1.0\n", "README.md": "hello" });
    const res = await upload({ component, version: "2.1.0" }, bytes);
    expect(res.status).toBe(201);
    const info = (await res.json()) as PackageInfo;
    expect(info).toEqual({
      component,
      version: "2.1.0",
      platform: "linux-amd64",
      sha256: sha256(bytes),
      size: bytes.length,
      url: `https://mirror.example/v1/packages/${component}/2.1.0/linux-amd64/download`,
    });
    const commits = await store.read(subjects.package(component));
    expect(commits).toHaveLength(1);
    expect(commits[0]!.commit.commitId).toBe(`pkg:${component}:2.1.0:linux-amd64:${sha256(bytes).slice(0, 16)}`);
    const event = PackagePublished.parse(commits[0]!.commit.events[0]);
    expect(event.id).toBe(`${commits[0]!.commit.commitId}/0`);
    expect(event.metadata.actor).toBe("otto");
    expect(event.data.manifest).toEqual({
      component,
      version: "2.1.0",
      platform: "linux-amd64",
      sha256: sha256(bytes),
      size: bytes.length,
      files: 2,
      entries: 4, // ./, bin/, bin/agent, README.md
      unpackedSize: "#!/bin/sh\necho 2.1.0\n".length + "hello".length,
    });
    // The origin holds the bytes and the cache has them under their digest.
    expect((await objects.info(info.sha256))?.size).toBe(bytes.length);
    expect(await readFile(join(dataDir, "cache", info.sha256))).toEqual(bytes);
    expect(await readdir(join(dataDir, "tmp"))).toEqual([]);
  });

  it("[spine] the manifest is signed: the signature verifies with node:crypto over the canonical JSON", async () => {
    const component = uniq();
    const bytes = await tarGz({ "a.txt": "signed" });
    expect((await upload({ component, version: "1.0.0" }, bytes)).status).toBe(201);
    const res = await fetch(`${base}/v1/packages/${component}/1.0.0/linux-amd64`, { headers: auth(VIEWER) });
    expect(res.status).toBe(200);
    const detail = (await res.json()) as { manifest: Record<string, unknown>; signature: string; keyId: string };
    expect(detail.keyId).toBe(keyIdOf(createPublicKey(keys.privateKey)));
    const raw = keys.publicKey.export({ format: "jwk" }).x!;
    expect(detail.keyId).toBe(createHash("sha256").update(Buffer.from(raw, "base64url")).digest("hex").slice(0, 16));
    const canonical = Buffer.from(canonicalJson(detail.manifest));
    expect(canonical.toString()).toMatch(/^\{"component":.*"entries":.*"files":.*"platform":.*"sha256":.*"size":.*"unpackedSize":.*"version":/);
    expect(verify(null, canonical, keys.publicKey, Buffer.from(detail.signature, "base64"))).toBe(true);
    const tampered = Buffer.from(canonicalJson({ ...detail.manifest, size: 1 }));
    expect(verify(null, tampered, keys.publicKey, Buffer.from(detail.signature, "base64"))).toBe(false);
  });

  it("[spine] the same bytes again → 200 with the same info and still one event", async () => {
    const component = uniq();
    const bytes = await tarGz({ "x": "same" });
    const first = await upload({ component, version: "1.0.0" }, bytes);
    expect(first.status).toBe(201);
    const again = await upload({ component, version: "1.0.0" }, bytes);
    expect(again.status).toBe(200);
    expect(await again.json()).toEqual(await first.json());
    expect(await store.read(subjects.package(component))).toHaveLength(1);
  });

  it("[spine] the same version with other bytes → 409 (versions are immutable) and still one event", async () => {
    const component = uniq();
    const a = await tarGz({ "x": "one" });
    const b = await tarGz({ "x": "two" });
    expect((await upload({ component, version: "1.0.0" }, a)).status).toBe(201);
    const res = await upload({ component, version: "1.0.0" }, b);
    expect(res.status).toBe(409);
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe("conflict");
    expect(body.error.message).toBe(`${component} 1.0.0 linux-amd64 is already published with sha256 ${sha256(a)}; versions are immutable`);
    expect(await store.read(subjects.package(component))).toHaveLength(1);
    // Another platform of the same version is a different variant.
    expect((await upload({ component, version: "1.0.0", platform: "linux-arm64" }, b)).status).toBe(201);
  });

  it("[spine] concurrent uploads of one variant: different bytes → one 201 and one 409; same bytes → 201 and 200", async () => {
    const component = uniq();
    const [a, b] = await Promise.all([tarGz({ "x": "a" }), tarGz({ "x": "b" })]);
    const statuses = (await Promise.all([upload({ component, version: "1.0.0" }, a), upload({ component, version: "1.0.0" }, b)])).map(
      (r) => r.status,
    );
    expect(statuses.sort()).toEqual([201, 409]);
    const same = (await Promise.all([upload({ component, version: "2.0.0" }, a), upload({ component, version: "2.0.0" }, a)])).map(
      (r) => r.status,
    );
    expect(same.sort()).toEqual([200, 201]);
    expect(await store.read(subjects.package(component))).toHaveLength(2);
  });

  it("[spine] lists a component's packages newest first; describes one; 404 otherwise", async () => {
    const component = uniq();
    for (const version of ["1.0.0", "1.1.0", "2.0.0"]) expect((await upload({ component, version }, await tarGz({ v: version }))).status).toBe(201);
    const res = await fetch(`${base}/v1/packages/${component}`, { headers: auth(VIEWER) });
    expect(res.status).toBe(200);
    const list = (await res.json()) as { component: string; packages: Array<PackageInfo & { manifest: unknown; publishedAt: string }> };
    expect(list.packages.map((p) => p.version)).toEqual(["2.0.0", "1.1.0", "1.0.0"]);
    expect(list.packages[0]).toMatchObject({ component, platform: "linux-amd64", manifest: { version: "2.0.0" } });
    expect((await fetch(`${base}/v1/packages/${uniq()}`, { headers: auth(VIEWER) })).status).toBe(404);
    expect((await fetch(`${base}/v1/packages/${component}/9.9.9/linux-amd64`, { headers: auth(VIEWER) })).status).toBe(404);
    expect((await fetch(`${base}/v1/packages/${component}`)).status).toBe(401);
  });

  describe("downloads", () => {
    let component: string;
    let bytes: Buffer;
    let path: string;
    beforeAll(async () => {
      component = uniq();
      // Random content so gzip cannot shrink it below a few KiB.
      bytes = await tarGz({ "blob.bin": Buffer.from(Array.from({ length: 8192 }, (_, i) => (i * 7919) % 251)) });
      expect((await upload({ component, version: "3.0.0" }, bytes)).status).toBe(201);
      path = `/v1/packages/${component}/3.0.0/linux-amd64/download`;
    });

    it("[spine] full download without a token: the bytes, Content-Length, ETag, immutable caching", async () => {
      const res = await download(path);
      expect(res.status).toBe(200);
      expect(Buffer.from(await res.arrayBuffer())).toEqual(bytes);
      expect(res.headers.get("content-length")).toBe(String(bytes.length));
      expect(res.headers.get("etag")).toBe(`"${sha256(bytes)}"`);
      expect(res.headers.get("content-type")).toBe("application/gzip");
      expect(res.headers.get("accept-ranges")).toBe("bytes");
      expect(res.headers.get("cache-control")).toMatch(/immutable/);
      const blob = await download(`/v1/blobs/${sha256(bytes)}`);
      expect(blob.status).toBe(200);
      expect(Buffer.from(await blob.arrayBuffer())).toEqual(bytes);
    });

    it("[spine] HEAD answers the headers and no body", async () => {
      const res = await download(path, {}, "HEAD");
      expect(res.status).toBe(200);
      expect(res.headers.get("content-length")).toBe(String(bytes.length));
      expect(res.headers.get("etag")).toBe(`"${sha256(bytes)}"`);
      expect((await res.arrayBuffer()).byteLength).toBe(0);
    });

    it("[spine] Range bytes=10-19 → 206 with exactly those bytes", async () => {
      const res = await download(path, { range: "bytes=10-19" });
      expect(res.status).toBe(206);
      expect(res.headers.get("content-range")).toBe(`bytes 10-19/${bytes.length}`);
      expect(res.headers.get("content-length")).toBe("10");
      expect(Buffer.from(await res.arrayBuffer())).toEqual(bytes.subarray(10, 20));
    });

    it("[spine] Range suffix bytes=-5 and open-ended bytes=a- (how a host resumes)", async () => {
      const tail = await download(path, { range: "bytes=-5" });
      expect(tail.status).toBe(206);
      expect(tail.headers.get("content-range")).toBe(`bytes ${bytes.length - 5}-${bytes.length - 1}/${bytes.length}`);
      expect(Buffer.from(await tail.arrayBuffer())).toEqual(bytes.subarray(bytes.length - 5));
      const rest = await download(path, { range: "bytes=100-" });
      expect(rest.status).toBe(206);
      expect(Buffer.from(await rest.arrayBuffer())).toEqual(bytes.subarray(100));
    });

    it("[spine] a range outside the package → 416 with Content-Range bytes */size; several ranges → 200 full", async () => {
      const res = await download(path, { range: `bytes=${bytes.length}-` });
      expect(res.status).toBe(416);
      expect(res.headers.get("content-range")).toBe(`bytes */${bytes.length}`);
      await res.arrayBuffer();
      const multi = await download(path, { range: "bytes=0-1,5-6" });
      expect(multi.status).toBe(200);
      expect(Buffer.from(await multi.arrayBuffer())).toEqual(bytes);
    });

    it("[spine] If-None-Match with the ETag → 304; If-Range with another tag → the full body", async () => {
      const res = await download(path, { "if-none-match": `"${sha256(bytes)}"` });
      expect(res.status).toBe(304);
      expect(res.headers.get("etag")).toBe(`"${sha256(bytes)}"`);
      const other = await download(path, { range: "bytes=0-9", "if-range": '"something-else"' });
      expect(other.status).toBe(200);
      expect(Buffer.from(await other.arrayBuffer())).toEqual(bytes);
    });

    it("[spine] the cache file deleted → the download still works, refilled from the object store", async () => {
      const cached = join(dataDir, "cache", sha256(bytes));
      await rm(cached);
      const results = await Promise.all(Array.from({ length: 4 }, () => download(path)));
      for (const r of results) {
        expect(r.status).toBe(200);
        expect(Buffer.from(await r.arrayBuffer())).toEqual(bytes);
      }
      expect((await stat(cached)).size).toBe(bytes.length);
      expect(await readdir(join(dataDir, "tmp"))).toEqual([]);
    });

    it("[spine] unknown package or blob → 404; a malformed sha256 → 400", async () => {
      expect((await download(`/v1/packages/${component}/9.9.9/linux-amd64/download`)).status).toBe(404);
      expect((await download(`/v1/blobs/${"0".repeat(64)}`)).status).toBe(404);
      expect((await download(`/v1/blobs/not-a-digest`)).status).toBe(400);
    });
  });

  describe("refused uploads store nothing", () => {
    it("[spine] an oversize upload → 413 (declared length) and nothing stored", async () => {
      const component = uniq();
      const big = Buffer.alloc(MAX_BYTES + 1, 7);
      const res = await app.inject({
        method: "POST",
        url: `/v1/packages?component=${component}&version=1.0.0&platform=linux-amd64`,
        headers: { ...auth(OPERATOR), "content-type": "application/gzip" },
        payload: big,
      });
      expect(res.statusCode).toBe(413);
      expect(res.json()).toMatchObject({ error: { code: "payload_too_large" } });
      expect(res.json<{ error: { message: string } }>().error.message).toMatch(String(MAX_BYTES));
      await nothingStored(component, sha256(big));
    });

    it("[spine] an oversize upload streamed without a length → 413 and nothing stored", async () => {
      const component = uniq();
      const chunk = Buffer.alloc(64 * 1024, 1);
      const res = await app.inject({
        method: "POST",
        url: `/v1/packages?component=${component}&version=1.0.0&platform=linux-amd64`,
        headers: { ...auth(OPERATOR), "content-type": "application/gzip" },
        payload: Readable.from((function* () {
          for (let i = 0; i < 10; i++) yield chunk;
        })()),
      });
      expect(res.statusCode).toBe(413);
      expect(res.headers.connection).toBe("close");
      await nothingStored(component, sha256(Buffer.concat(Array.from({ length: 10 }, () => chunk))));
    });

    it("[spine] over real HTTP, a long oversize stream is cut off; nothing stored", async () => {
      const component = uniq();
      const chunk = new Uint8Array(64 * 1024).fill(1);
      // 256 MiB, far past the limit: bounded so that a server that failed to cut it off fails the
      // test by its timeout instead of exhausting the worker's memory.
      let sent = 0;
      const body = new ReadableStream<Uint8Array>({
        pull: (c) => {
          if (sent++ < 4096) c.enqueue(chunk);
          else c.close();
        },
      });
      const res = await upload({ component, version: "1.0.0" }, body).catch((err: unknown) => err);
      // The server answers 413 and closes the connection; a client still writing may see the
      // close before it reads the answer. Either way nothing is kept.
      if (res instanceof Response) expect(res.status).toBe(413);
      else expect(res).toBeInstanceOf(TypeError);
      expect(await store.readLast(subjects.package(component))).toBeNull();
      expect(await readdir(join(dataDir, "tmp"))).toEqual([]);
      // The server cut the connection: the client's body stops being read long before its end.
      let before = -1;
      await waitFor("the upload to stop", () => (sent === before ? true : ((before = sent), undefined)), { timeoutMs: 10_000, intervalMs: 300 });
      expect(sent).toBeLessThan(4096);
    });

    it("[spine] a raw client that never stops sending gets the 413 and is cut off after a bounded linger", async () => {
      const component = uniq();
      const { port } = new URL(base);
      const socket = connectTcp(Number(port), "127.0.0.1");
      const body = Buffer.alloc(64 * 1024, 1);
      const chunk = Buffer.concat([Buffer.from(`${body.length.toString(16)}\r\n`), body, Buffer.from("\r\n")]);
      let written = 0;
      let answer = "";
      socket.setEncoding("utf8");
      socket.on("data", (d: string) => (answer += d));
      const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
      socket.on("error", () => undefined);
      socket.write(
        `POST /v1/packages?component=${component}&version=1.0.0&platform=linux-amd64 HTTP/1.1\r\n` +
          `host: x\r\nauthorization: Bearer ${OPERATOR}\r\ncontent-type: application/gzip\r\ntransfer-encoding: chunked\r\n\r\n`,
      );
      // Writes for as long as the server takes them, ignoring its answer (as a hostile client does);
      // 1 GiB at most so a server that never cuts off fails the test instead of filling the disk.
      const pump = () => {
        while (!socket.destroyed && written < 1024 * 1024 * 1024) {
          written += chunk.length;
          if (!socket.write(chunk)) return void socket.once("drain", pump);
        }
      };
      pump();
      await closed;
      expect(answer).toMatch(/^HTTP\/1\.1 413 /);
      expect(answer).toContain("payload_too_large");
      // The limit, the linger bound (8 MiB) and what the kernel buffers on both sides; far below 1 GiB.
      expect(written).toBeLessThan(64 * 1024 * 1024);
      expect(await store.readLast(subjects.package(component))).toBeNull();
    });

    it("[spine] a garbage body → 400 and nothing stored", async () => {
      const component = uniq();
      const garbage = Buffer.from("this is not a tarball at all");
      const res = await upload({ component, version: "1.0.0" }, garbage);
      expect(res.status).toBe(400);
      expect(await res.json()).toMatchObject({ error: { code: "validation", message: expect.stringMatching(/not gzip/) as unknown } });
      await nothingStored(component, sha256(garbage));
    });

    it("[spine] an archive with a '..' entry or an empty archive → 400 and nothing stored", async () => {
      const component = uniq();
      const evil = gzipSync(rawTar([{ path: "../../etc/cron.d/x", type: "File", body: "* * * * * root sh" }]));
      const res = await upload({ component, version: "1.0.0" }, evil);
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/'\.\.'/);
      await nothingStored(component, sha256(evil));
      const empty = gzipSync(Buffer.alloc(1024));
      const res2 = await upload({ component, version: "1.0.0" }, empty);
      expect(res2.status).toBe(400);
      expect(((await res2.json()) as { error: { message: string } }).error.message).toMatch(/empty/);
      await nothingStored(component, sha256(empty));
    });

    it("[security] a symlink chain that resolves outside (each hop harmless as text) → 400 and nothing stored", async () => {
      const component = uniq();
      const chain = gzipSync(rawTar(escapingSymlinkChain()));
      const res = await upload({ component, version: "1.0.0" }, chain);
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/symlink "z" resolves outside the package/);
      await nothingStored(component, sha256(chain));
    });

    it("[security] the long symlink chain (a/b -> .., z1 -> a/b/.., zI -> a/b/z(I-1), e -> zN/../etc) → 400 and nothing stored", async () => {
      const component = uniq();
      const chain = gzipSync(rawTar(longEscapingSymlinkChain(5)));
      const res = await upload({ component, version: "1.0.0" }, chain);
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/symlink "z1" resolves outside the package/);
      await nothingStored(component, sha256(chain));
    });

    it("[spine] no token → 401; a viewer token → 403", async () => {
      const component = uniq();
      const bytes = await tarGz({ x: "y" });
      const anon = await fetch(`${base}/v1/packages?component=${component}&version=1.0.0&platform=linux-amd64`, {
        method: "POST",
        headers: { "content-type": "application/gzip" },
        body: bytes,
      });
      expect(anon.status).toBe(401);
      const viewer = await upload({ component, version: "1.0.0" }, bytes, VIEWER);
      expect(viewer.status).toBe(403);
      await nothingStored(component, sha256(bytes));
    });

    it("[spine] a bad component name, version or platform → 400 naming the field", async () => {
      const bytes = await tarGz({ x: "y" });
      for (const q of [
        { component: "Bad Name", version: "1.0.0" },
        { component: "ok", version: "../1" },
        { component: "ok", version: "1.0.0", platform: "linux" },
      ]) {
        const res = await upload(q, bytes);
        expect(res.status).toBe(400);
        expect(await res.json()).toMatchObject({ error: { code: "validation" } });
      }
      const json = await fetch(`${base}/v1/packages?component=ok&version=1.0.0&platform=linux-amd64`, {
        method: "POST",
        headers: { ...auth(OPERATOR), "content-type": "application/json" },
        body: "{}",
      });
      expect(json.status).toBe(415);
    });
  });
});
