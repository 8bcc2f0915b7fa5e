import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ArchiveRefusedError, inspectArchive } from "./archive.js";
import { rawTar, type RawEntry } from "@molt/testkit";

let dir: string;
let n = 0;
const limits = { maxEntries: 100, maxUnpackedBytes: 1024 * 1024 };
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "molt-archive-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function inspect(bytes: Buffer, l = limits) {
  const path = join(dir, `a${++n}.tar.gz`);
  await writeFile(path, bytes);
  return inspectArchive(path, l);
}
const file = (path: string, body = "x"): RawEntry => ({ path, type: "File", body });

describe("archive inspection", () => {
  it("[spine] counts regular files, entries and unpacked bytes", async () => {
    const summary = await inspect(
      gzipSync(
        rawTar([
          { path: "./", type: "Directory", mode: 0o755 },
          { path: "bin/", type: "Directory", mode: 0o755 },
          file("bin/agent", "#!/bin/sh\necho hi\n"),
          { path: "bin/latest", type: "SymbolicLink", linkpath: "agent" },
          { path: "bin/same", type: "Link", linkpath: "bin/agent" },
          file("README", "hello"),
        ]),
      ),
    );
    expect(summary).toEqual({ files: 2, entries: 6, unpackedSize: 18 + 5 });
  });

  const refused: Array<[string, Buffer, RegExp]> = [
    ["not gzip", Buffer.from("definitely not an archive"), /not gzip/],
    ["gzip of garbage", gzipSync(Buffer.from("x".repeat(2000))), /not a valid tar\.gz/],
    ["a plain tar (not gzip'd)", rawTar([file("a")]), /not gzip/],
    ["an empty archive", gzipSync(Buffer.alloc(1024)), /empty/],
    ["a truncated archive", gzipSync(rawTar([file("a", "y".repeat(3000))]).subarray(0, 1200)), /not a valid tar\.gz/],
    ["an absolute path", gzipSync(rawTar([file("/etc/passwd")])), /absolute/],
    ["a '..' path", gzipSync(rawTar([file("a/../../b")])), /'\.\.'/],
    ["a backslash path", gzipSync(rawTar([file("a\\..\\b")])), /backslash/],
    ["a character device", gzipSync(rawTar([{ path: "dev/null", type: "CharacterDevice" }])), /device or fifo/],
    ["a fifo", gzipSync(rawTar([{ path: "pipe", type: "FIFO" }])), /device or fifo/],
    ["a symlink pointing out", gzipSync(rawTar([{ path: "a/l", type: "SymbolicLink", linkpath: "../../etc" }])), /points outside/],
    ["an absolute symlink", gzipSync(rawTar([{ path: "l", type: "SymbolicLink", linkpath: "/etc/shadow" }])), /points outside/],
    ["a hard link out", gzipSync(rawTar([{ path: "l", type: "Link", linkpath: "../x" }])), /'\.\.'/],
    [
      "a write through a symlink",
      gzipSync(rawTar([{ path: "d", type: "SymbolicLink", linkpath: "." }, file("d/x")])),
      /goes through the symlink/,
    ],
    [
      "a file over a symlink",
      gzipSync(rawTar([{ path: "s", type: "SymbolicLink", linkpath: "t" }, file("s")])),
      /replaces a symlink/,
    ],
    [
      "a directory replaced by a link",
      gzipSync(rawTar([{ path: "d/", type: "Directory" }, { path: "d", type: "SymbolicLink", linkpath: "." }])),
      /replaces a directory/,
    ],
  ];
  it("[security] a symlink chain that normalises inside at every hop but resolves outside is refused", async () => {
    // a/b -> .. is the package root; z -> a/b/.. is "a" when read as text, but on disk it is the
    // root's parent; e -> z/etc then reaches the host's /…/etc. Each link alone looks harmless.
    const chain = gzipSync(
      rawTar([
        { path: "a/", type: "Directory" },
        { path: "a/b", type: "SymbolicLink", linkpath: ".." },
        { path: "z", type: "SymbolicLink", linkpath: "a/b/.." },
        { path: "e", type: "SymbolicLink", linkpath: "z/etc" },
      ]),
    );
    await expect(inspect(chain)).rejects.toThrow(/symlink "z" resolves outside the package \(through "a\/b"\)/);
    // The same escape with the links in the other order: the last link decides what the first means.
    const reversed = gzipSync(
      rawTar([
        { path: "z", type: "SymbolicLink", linkpath: "a/b/.." },
        { path: "a/", type: "Directory" },
        { path: "a/b", type: "SymbolicLink", linkpath: ".." },
      ]),
    );
    await expect(inspect(reversed)).rejects.toThrow(/resolves outside the package/);
    // A loop is refused as such rather than followed forever.
    const loop = gzipSync(rawTar([{ path: "x", type: "SymbolicLink", linkpath: "y" }, { path: "y", type: "SymbolicLink", linkpath: "x" }]));
    await expect(inspect(loop)).rejects.toThrow(/too many levels of symlinks/);
  });

  it("[security] chains that stay inside are fine: versioned dirs, a `current` link, links through links", async () => {
    const summary = await inspect(
      gzipSync(
        rawTar([
          { path: "lib/v1/", type: "Directory" },
          file("lib/v1/tool", "t"),
          { path: "lib/current", type: "SymbolicLink", linkpath: "v1" },
          { path: "bin/", type: "Directory" },
          { path: "bin/tool", type: "SymbolicLink", linkpath: "../lib/current/tool" },
          { path: "bin/again", type: "SymbolicLink", linkpath: "tool" },
          { path: "up", type: "SymbolicLink", linkpath: "lib/current/.." },
          { path: "dangling", type: "SymbolicLink", linkpath: "not/yet/there" },
        ]),
      ),
    );
    expect(summary.entries).toBe(8);
  });

  it.each(refused)("[spine] refuses %s", async (_what, bytes, message) => {
    const err = await inspect(bytes).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ArchiveRefusedError);
    expect((err as Error).message).toMatch(message);
  });

  it("[spine] stops at the entry and unpacked-size bounds, on headers alone", async () => {
    const many = gzipSync(rawTar(Array.from({ length: 5 }, (_, i) => file(`f${i}`))));
    await expect(inspect(many, { maxEntries: 4, maxUnpackedBytes: 100 })).rejects.toThrow(/more than 4 entries/);
    const big = gzipSync(rawTar([file("a", "z".repeat(600))]));
    await expect(inspect(big, { maxEntries: 4, maxUnpackedBytes: 500 })).rejects.toThrow(/more than 500 bytes/);
  });
});
