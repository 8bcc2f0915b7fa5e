import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open, rm, stat } from "node:fs/promises";
import { isErrno } from "../host/durable.js";

export type Fetch = typeof globalThis.fetch;

/** A download failure that retrying cannot fix (wrong bytes, too many bytes, 4xx, aborted). */
export class DownloadRefusedError extends Error {
  readonly code = "download_refused";
}

export interface DownloadRequest {
  readonly url: string;
  readonly dest: string;
  readonly size: number;
  readonly sha256: string;
  readonly fetch: Fetch;
  readonly signal?: AbortSignal;
  /** Tries (each resuming where the last stopped) before a network error fails the step. */
  readonly attempts?: number;
  readonly retryDelayMs?: number;
  /** Called after each chunk is written (a crash point). */
  readonly onChunk?: () => void;
}

export interface DownloadResult {
  readonly bytes: number;
  /** Bytes already on disk that were kept and resumed from, summed over tries. */
  readonly resumedBytes: number;
  readonly tries: number;
}

/**
 * GETs the package into `dest`, resuming a partial file with a Range request, never accepting
 * more than `size` bytes, then checks size and sha256 of the whole file. A file that fails the
 * check is deleted, so a later try starts clean.
 */
export async function downloadPackage(req: DownloadRequest): Promise<DownloadResult> {
  const attempts = req.attempts ?? 3;
  let resumedBytes = 0;
  let tries = 0;
  for (;;) {
    tries++;
    try {
      resumedBytes += await fetchInto(req);
      break;
    } catch (err) {
      if (err instanceof DownloadRefusedError || req.signal?.aborted || tries >= attempts) throw err;
      await pause(Math.min(30_000, (req.retryDelayMs ?? 200) * 2 ** (tries - 1)), req.signal);
    }
  }
  const actual = await hashFile(req.dest);
  if (actual.size !== req.size || actual.sha256 !== req.sha256) {
    await rm(req.dest, { force: true });
    if (actual.size !== req.size) throw new DownloadRefusedError(`size mismatch: expected ${req.size} bytes, got ${actual.size}`);
    throw new DownloadRefusedError(`sha256 mismatch: expected ${req.sha256}, got ${actual.sha256}`);
  }
  return { bytes: actual.size, resumedBytes, tries };
}

/** Waits, or stops early when the signal aborts (the deadline or a cancel ends the tries). */
function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

/** One HTTP exchange; returns how many bytes of an earlier partial file were kept. */
async function fetchInto(req: DownloadRequest): Promise<number> {
  let have = await fileSize(req.dest);
  if (have > req.size) {
    await rm(req.dest, { force: true });
    have = 0;
  }
  if (have === req.size) return have; // complete from an earlier try; the hash decides
  const headers: Record<string, string> = have > 0 ? { range: `bytes=${have}-` } : {};
  const init: RequestInit = { headers, redirect: "follow" };
  if (req.signal) init.signal = req.signal;
  const res = await req.fetch(req.url, init);
  let start = 0;
  if (res.status === 206 && have > 0) {
    start = contentRangeStart(res.headers.get("content-range"));
    if (start !== have) {
      // The server resumed somewhere else: drop the partial file and let the next try start over.
      await res.body?.cancel();
      await rm(req.dest, { force: true });
      throw new Error(`server resumed at byte ${start}, expected ${have}`);
    }
  } else if (res.status === 416) {
    await res.body?.cancel();
    await rm(req.dest, { force: true });
    throw new Error(`server refused range from byte ${have} (416)`);
  } else if (res.status !== 200) {
    await res.body?.cancel();
    const text = `HTTP ${res.status} from ${req.url}`;
    if (res.status >= 400 && res.status < 500) throw new DownloadRefusedError(text);
    throw new Error(text);
  }
  const declared = Number(res.headers.get("content-length") ?? "NaN");
  if (Number.isFinite(declared) && start + declared > req.size) {
    await res.body?.cancel();
    throw new DownloadRefusedError(`body larger than the package size: ${start + declared} > ${req.size} bytes`);
  }
  if (!res.body) throw new Error(`empty body from ${req.url}`);
  const fd = await open(req.dest, start > 0 ? "a" : "w");
  let total = start;
  try {
    for await (const part of res.body) {
      const chunk = part as Uint8Array;
      total += chunk.byteLength;
      if (total > req.size) {
        await fd.truncate(0);
        throw new DownloadRefusedError(`body larger than the package size: more than ${req.size} bytes`);
      }
      await fd.write(chunk);
      req.onChunk?.();
    }
    await fd.sync();
  } finally {
    await fd.close();
  }
  return start;
}

/**
 * The URL to fetch: the package URL as the allocator wrote it, or the same path and query on a
 * mirror the host is configured with (nginx or a CDN in front of the origin; the sha256 check
 * makes any mirror safe). A mirror base with a path keeps it as a prefix.
 */
export function viaMirror(url: string, mirror: string | undefined): string {
  if (!mirror) return url;
  const original = new URL(url);
  const base = new URL(mirror);
  return new URL(`${base.pathname.replace(/\/+$/, "")}${original.pathname}${original.search}`, base).href;
}

function contentRangeStart(header: string | null): number {
  const m = /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(header ?? "");
  return m?.[1] === undefined ? -1 : Number(m[1]);
}

async function fileSize(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch (err) {
    if (isErrno(err, "ENOENT")) return 0;
    throw err;
  }
}

export async function hashFile(path: string): Promise<{ sha256: string; size: number }> {
  const hash = createHash("sha256");
  let size = 0;
  for await (const chunk of createReadStream(path)) {
    const buf = chunk as Buffer;
    size += buf.length;
    hash.update(buf);
  }
  return { sha256: hash.digest("hex"), size };
}
