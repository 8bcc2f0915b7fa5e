import { readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { describePackage, type PackageServer, startPackageServer, tempDir } from "../testing/fixtures.js";
import { downloadPackage, DownloadRefusedError, fetchGet, nodeGet, viaMirror } from "./download.js";

let server: PackageServer;
let dir: string;
const body = Buffer.from(Array.from({ length: 50_000 }, (_, i) => i % 251));
const pkg = describePackage(body);

beforeAll(async () => {
  server = await startPackageServer();
  dir = await tempDir("dl");
});
afterAll(async () => {
  await server.close();
  await rm(dir, { recursive: true, force: true });
});

describe("package download", () => {
  it("[spine] resumes a partial file with a Range request and verifies the whole", async () => {
    const url = server.serve("/resume.bin", { body });
    const dest = join(dir, "resume.bin");
    await writeFile(dest, body.subarray(0, 20_000));
    const res = await downloadPackage({ url, dest, size: pkg.size, sha256: pkg.sha256, get: nodeGet });
    expect(res).toMatchObject({ bytes: pkg.size, resumedBytes: 20_000 });
    expect(server.requests.filter((r) => r.path === "/resume.bin").map((r) => r.range)).toEqual(["bytes=20000-"]);
    expect((await readFile(dest)).equals(body)).toBe(true);
  });

  it("[spine] refuses a body larger than the package size and keeps nothing of it", async () => {
    const url = server.serve("/big.bin", { body: Buffer.concat([body, Buffer.from("more")]) });
    const dest = join(dir, "big.bin");
    await expect(downloadPackage({ url, dest, size: pkg.size, sha256: pkg.sha256, get: nodeGet })).rejects.toBeInstanceOf(DownloadRefusedError);
    expect((await stat(dest).catch(() => ({ size: 0 }))).size).toBe(0);
  });

  it("[spine] a 404 fails at once, without retries", async () => {
    const dest = join(dir, "missing.bin");
    await expect(
      downloadPackage({ url: `${server.base}/missing.bin`, dest, size: pkg.size, sha256: pkg.sha256, get: nodeGet }),
    ).rejects.toThrow(/HTTP 404/);
    expect(server.requests.filter((r) => r.path === "/missing.bin")).toHaveLength(1);
  });

  it("[upgrade-client] follows redirects (the Range header too), with node:http and with a given fetch", async () => {
    const url = server.serve("/moved.bin", { body: Buffer.alloc(0), redirectTo: server.serve("/target.bin", { body }) });
    for (const [name, get] of [["node", nodeGet], ["fetch", fetchGet(fetch)]] as const) {
      const dest = join(dir, `moved-${name}.bin`);
      await writeFile(dest, body.subarray(0, 1_000));
      const res = await downloadPackage({ url, dest, size: pkg.size, sha256: pkg.sha256, get });
      expect(res).toMatchObject({ bytes: pkg.size, resumedBytes: 1_000 });
      expect((await readFile(dest)).equals(body)).toBe(true);
    }
    expect(server.requests.filter((r) => r.path === "/target.bin").map((r) => r.range)).toEqual(["bytes=1000-", "bytes=1000-"]);
  });

  it("[spine] a host mirror keeps the package path and query, under the mirror's own prefix", () => {
    const url = "http://origin:8080/v1/packages/metrics-agent/2.0.0/linux-amd64?x=1";
    expect(viaMirror(url, undefined)).toBe(url);
    expect(viaMirror(url, "http://mirror:81")).toBe("http://mirror:81/v1/packages/metrics-agent/2.0.0/linux-amd64?x=1");
    expect(viaMirror(url, "https://cdn.example.com/molt/")).toBe("https://cdn.example.com/molt/v1/packages/metrics-agent/2.0.0/linux-amd64?x=1");
  });
});
