import { lstat, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { writeFile } from "node:fs/promises";
import { gzipSync } from "node:zlib";
import { afterAll, describe, expect, it } from "vitest";
import { buildPackage, rawTarGz, type RawEntry, tempDir } from "../testing/fixtures.js";
import { extractArchive, UnsafeArchiveError } from "./extract.js";

const limits = { maxEntries: 1000, maxBytes: 1 << 20 };
const dirs: string[] = [];
afterAll(() => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));

async function tryExtract(entries: RawEntry[]) {
  const dir = await tempDir("x");
  dirs.push(dir);
  const file = join(dir, "p.tar.gz");
  await writeFile(file, rawTarGz(entries));
  const dest = join(dir, "out");
  const result = await extractArchive(file, dest, limits).then(
    () => undefined,
    (err: unknown) => err,
  );
  const left = await readdir(dest).catch(() => []);
  return { result, left, dest };
}

describe("bounded, sanitised extraction", () => {
  it("[spine] refuses an entry with `..` and writes nothing", async () => {
    const { result, left } = await tryExtract([
      { path: "ok.txt", type: "File", body: "fine" },
      { path: "a/../../evil.txt", type: "File", body: "escape" },
    ]);
    expect(result).toBeInstanceOf(UnsafeArchiveError);
    expect((result as Error).message).toMatch(/`\.\.` in path/);
    expect(left).toEqual([]);
  });

  it("[spine] refuses a symlink with an absolute target, and one pointing out", async () => {
    const abs = await tryExtract([{ path: "etc", type: "SymbolicLink", linkpath: "/etc" }]);
    expect(abs.result).toBeInstanceOf(UnsafeArchiveError);
    expect((abs.result as Error).message).toMatch(/absolute/);
    expect(abs.left).toEqual([]);
    const out = await tryExtract([{ path: "a/up", type: "SymbolicLink", linkpath: "../../x" }]);
    expect((out.result as Error).message).toMatch(/points outside/);
  });

  it("[spine] refuses absolute paths, fifos, hardlinks out and writing through a link", async () => {
    const cases: RawEntry[][] = [
      [{ path: "/abs.txt", type: "File", body: "x" }],
      [{ path: "p", type: "FIFO" }],
      [{ path: "h", type: "Link", linkpath: "/etc/passwd" }],
      [
        { path: "d", type: "SymbolicLink", linkpath: "sub" },
        { path: "d/f", type: "File", body: "x" },
      ],
      [{ path: "a\\b", type: "File", body: "x" }],
    ];
    for (const entries of cases) {
      const { result, left } = await tryExtract(entries);
      expect(result, JSON.stringify(entries)).toBeInstanceOf(UnsafeArchiveError);
      expect(left).toEqual([]);
    }
  });

  it("[spine] refuses more entries or bytes than the limits", async () => {
    const dir = await tempDir("x");
    dirs.push(dir);
    const file = join(dir, "big.tar.gz");
    await writeFile(file, rawTarGz([{ path: "big", type: "File", body: "x".repeat(2000) }]));
    await expect(extractArchive(file, join(dir, "out"), { maxEntries: 10, maxBytes: 1000 })).rejects.toThrow(/more than 1000 bytes/);
  });

  it("[spine] refuses a corrupt or empty archive instead of unpacking nothing", async () => {
    const dir = await tempDir("x");
    dirs.push(dir);
    const file = join(dir, "junk.tar.gz");
    await writeFile(file, gzipSync(Buffer.from("not a tar archive ".repeat(64))));
    await expect(extractArchive(file, join(dir, "out"), limits)).rejects.toBeInstanceOf(UnsafeArchiveError);
    expect(await readdir(join(dir, "out")).catch(() => [])).toEqual([]);
  });

  it("[upgrade-client] refuses setuid/setgid files (issue 6: a refusal, no longer a silent strip) and keeps in-package symlinks", async () => {
    const pkg = await buildPackage({ "bin/tool": { content: "#!/bin/sh\n", mode: 0o6755 } });
    const dir = await tempDir("x");
    dirs.push(dir);
    const file = join(dir, "p.tar.gz");
    await writeFile(file, pkg.bytes);
    await expect(extractArchive(file, join(dir, "out"), limits)).rejects.toThrow(/setuid or setgid bit/);
    await expect(lstat(join(dir, "out"))).rejects.toThrow(/ENOENT/);
    const { result } = await tryExtract([
      { path: "lib", type: "Directory" },
      { path: "lib/real.so", type: "File", body: "x" },
      { path: "lib/link.so", type: "SymbolicLink", linkpath: "real.so" },
    ]);
    expect(result).toBeUndefined();
  });
});
