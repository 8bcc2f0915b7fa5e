import { createHash, randomUUID } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, open, readdir, rename, rm, stat, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ObjectInfo, ObjectStore } from "@nats-io/obj";
import type { Logger } from "@molt/runtime";

/** An open cache file: read ranges from it even if the file is unlinked meanwhile. */
export interface OpenBlob {
  handle: FileHandle;
  size: number;
}

/**
 * Packages by sha256: the JetStream object store is the replicated origin, and a local
 * directory (`<dataDir>/cache/<sha256>`) serves downloads and Range requests, which the object
 * store is too slow for. Files only ever appear in the cache by rename after their digest was
 * checked, so a name is a promise about the bytes.
 */
export interface BlobStore {
  /** A fresh temp path on the cache's file system (renames into the cache stay atomic). */
  tempPath(kind: string): Promise<string>;
  /** Puts a verified local file into the object store (skipped if already there) and moves it into the cache. */
  adopt(path: string, sha256: string, size: number): Promise<void>;
  /** The cache file, refilled from the object store if missing; null if neither has it. */
  open(sha256: string): Promise<OpenBlob | null>;
}

export class BlobCorruptError extends Error {
  readonly code = "blob_corrupt";
}

export function createBlobStore(deps: { dataDir: string; objects: ObjectStore; logger: Logger }): BlobStore {
  const cacheDir = join(deps.dataDir, "cache");
  const tmpDir = join(deps.dataDir, "tmp");
  let dirs: Promise<unknown> | undefined;
  const ensureDirs = () => (dirs ??= Promise.all([mkdir(cacheDir, { recursive: true }), mkdir(tmpDir, { recursive: true })]));
  const fills = new Map<string, Promise<boolean>>();
  const puts = new Map<string, Promise<void>>();

  const tempPath = async (kind: string) => {
    await ensureDirs();
    return join(tmpDir, `${kind}-${randomUUID()}`);
  };

  const putObject = async (path: string, sha256: string, size: number) => {
    const existing = await deps.objects.info(sha256);
    if (existing && !existing.deleted && existing.size === size && digestHex(existing) === sha256) return;
    const fh = await open(path, "r");
    try {
      // The stream is closed by put as it reads to the end.
      await deps.objects.put({ name: sha256 }, Readable.toWeb(fh.createReadStream({ autoClose: false })) as ReadableStream<Uint8Array>);
    } finally {
      await fh.close();
    }
  };

  /** Fetches an object into the cache; false if the object store does not have it. */
  const fill = async (sha256: string): Promise<boolean> => {
    const result = await deps.objects.get(sha256);
    if (!result) return false;
    const tmp = await tempPath("fill");
    try {
      const hash = createHash("sha256");
      let size = 0;
      const count = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          hash.update(chunk);
          size += chunk.length;
          cb(null, chunk);
        },
      });
      await pipeline(Readable.fromWeb(result.data), count, createWriteStream(tmp, { flags: "wx" }));
      const failed = await result.error;
      if (failed) throw failed;
      const digest = hash.digest("hex");
      if (digest !== sha256 || size !== result.info.size)
        throw new BlobCorruptError(`object ${sha256} read back as ${size} bytes with sha256 ${digest}`);
      await fsyncFile(tmp);
      // Concurrent fills (other processes sharing the cache) each write their own temp name,
      // and rename is atomic: the cache file is always whole.
      await rename(tmp, join(cacheDir, sha256));
      deps.logger.info({ sha256, size }, "cache filled from the object store");
      return true;
    } finally {
      await rm(tmp, { force: true });
    }
  };

  const openCached = async (sha256: string): Promise<OpenBlob | null> => {
    try {
      const handle = await open(join(cacheDir, sha256), "r");
      return { handle, size: (await handle.stat()).size };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw err;
    }
  };

  return {
    tempPath,
    async adopt(path, sha256, size) {
      await ensureDirs();
      let p = puts.get(sha256);
      if (!p) {
        p = putObject(path, sha256, size).finally(() => puts.delete(sha256));
        puts.set(sha256, p);
      }
      await p;
      await fsyncFile(path);
      await rename(path, join(cacheDir, sha256));
    },
    async open(sha256) {
      await ensureDirs();
      // Two tries: the file can vanish (an operator clearing the cache) between fill and open.
      for (let i = 0; i < 2; i++) {
        const cached = await openCached(sha256);
        if (cached) return cached;
        let p = fills.get(sha256);
        if (!p) {
          p = fill(sha256).finally(() => fills.delete(sha256));
          fills.set(sha256, p);
        }
        if (!(await p)) return null;
      }
      return openCached(sha256);
    },
  };
}

/** The object store's digest (`SHA-256=<base64url>`) as hex, or undefined for another kind. */
function digestHex(info: ObjectInfo): string | undefined {
  const prefix = "SHA-256=";
  if (!info.digest.startsWith(prefix)) return undefined;
  return Buffer.from(info.digest.slice(prefix.length), "base64url").toString("hex");
}

async function fsyncFile(path: string): Promise<void> {
  const fh = await open(path, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Removes temp files a crash left behind (older than `olderThanMs`, so live uploads of a neighbour sharing the dir survive). */
export async function sweepTemp(dataDir: string, olderThanMs: number, now = Date.now()): Promise<number> {
  const dir = join(dataDir, "tmp");
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return 0;
    throw err;
  }
  let removed = 0;
  for (const name of names) {
    const path = join(dir, name);
    const st = await stat(path).catch(() => null);
    if (st && now - st.mtimeMs > olderThanMs) {
      await rm(path, { force: true });
      removed++;
    }
  }
  return removed;
}
