import { createHash } from "node:crypto";
import type { IncomingMessage } from "node:http";
import { open, rm, stat } from "node:fs/promises";
import { isErrno, syncFile } from "../host/durable.js";
import { collectEvery } from "./memory.js";

export type Fetch = typeof globalThis.fetch;

/** A GET's answer as the download needs it: status, headers, and the body as chunks. */
export interface HttpResponse {
  readonly status: number;
  header(name: string): string | null;
  readonly body: AsyncIterable<Uint8Array>;
  /** Drops the body unread (the connection is closed). */
  discard(): Promise<void>;
}

/** One GET (redirects followed), the transport of a download. */
export type HttpGet = (url: string, init: { headers: Record<string, string>; signal?: AbortSignal }) => Promise<HttpResponse>;

const MAX_REDIRECTS = 5;

/**
 * The client's transport: node:http / node:https, the body read as the response stream itself.
 * Not global `fetch`: its body arrives through web streams, and a 20 MiB download through it
 * grew the client by ~55 MB against ~12 MB this way (docs/benchmarks.md, agent).
 */
export const nodeGet: HttpGet = async (url, init) => {
  let target = new URL(url);
  for (let hop = 0; ; hop++) {
    // Loaded when used: the agent, which bundles this module, never downloads itself (~1 MB idle).
    const get = target.protocol === "https:" ? (await import("node:https")).get : target.protocol === "http:" ? (await import("node:http")).get : null;
    if (get === null) throw new DownloadRefusedError(`unsupported URL scheme ${target.protocol} in ${target.href}`);
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      get(target, { headers: init.headers, ...(init.signal ? { signal: init.signal } : {}) }, resolve).on("error", reject);
    });
    const status = res.statusCode ?? 0;
    const location = res.headers.location;
    if ([301, 302, 303, 307, 308].includes(status) && location !== undefined) {
      res.destroy();
      if (hop >= MAX_REDIRECTS) throw new Error(`more than ${MAX_REDIRECTS} redirects from ${url}`);
      target = new URL(location, target);
      continue;
    }
    return {
      status,
      header: (name) => {
        const v = res.headers[name.toLowerCase()];
        return v === undefined ? null : Array.isArray(v) ? v.join(", ") : v;
      },
      body: res,
      discard: () => {
        res.destroy();
        return Promise.resolve();
      },
    };
  }
};

/** A given `fetch` as the transport (the simulator and tests may pass one). */
export function fetchGet(fetch: Fetch): HttpGet {
  return async (url, init) => {
    const res = await fetch(url, { headers: init.headers, redirect: "follow", ...(init.signal ? { signal: init.signal } : {}) });
    const none: AsyncIterable<Uint8Array> = { [Symbol.asyncIterator]: () => ({ next: () => Promise.reject(new Error(`empty body from ${url}`)) }) };
    return {
      status: res.status,
      header: (name) => res.headers.get(name),
      body: (res.body as AsyncIterable<Uint8Array> | null) ?? none,
      discard: async () => {
        await res.body?.cancel();
      },
    };
  };
}

/** A download failure that retrying cannot fix (wrong bytes, too many bytes, 4xx, aborted). */
export class DownloadRefusedError extends Error {
  readonly code = "download_refused";
}

export interface DownloadRequest {
  readonly url: string;
  readonly dest: string;
  readonly size: number;
  readonly sha256: string;
  readonly get: HttpGet;
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
  const res = await req.get(req.url, { headers, ...(req.signal ? { signal: req.signal } : {}) });
  let start = 0;
  if (res.status === 206 && have > 0) {
    start = contentRangeStart(res.header("content-range"));
    if (start !== have) {
      // The server resumed somewhere else: drop the partial file and let the next try start over.
      await res.discard();
      await rm(req.dest, { force: true });
      throw new Error(`server resumed at byte ${start}, expected ${have}`);
    }
  } else if (res.status === 416) {
    await res.discard();
    await rm(req.dest, { force: true });
    throw new Error(`server refused range from byte ${have} (416)`);
  } else if (res.status !== 200) {
    await res.discard();
    const text = `HTTP ${res.status} from ${req.url}`;
    if (res.status >= 400 && res.status < 500) throw new DownloadRefusedError(text);
    throw new Error(text);
  }
  const declared = Number(res.header("content-length") ?? "NaN");
  if (Number.isFinite(declared) && start + declared > req.size) {
    await res.discard();
    throw new DownloadRefusedError(`body larger than the package size: ${start + declared} > ${req.size} bytes`);
  }
  const fd = await open(req.dest, start > 0 ? "a" : "w");
  const collect = collectEvery();
  let total = start;
  try {
    for await (const chunk of res.body) {
      total += chunk.byteLength;
      if (total > req.size) {
        await fd.truncate(0);
        await res.discard();
        throw new DownloadRefusedError(`body larger than the package size: more than ${req.size} bytes`);
      }
      await fd.write(chunk);
      collect(chunk.byteLength);
      req.onChunk?.();
    }
    await syncFile(fd);
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

/**
 * The host's mirrors, in the order they are tried: `MOLT_PACKAGE_MIRROR` / `packageMirror` may
 * name several base URLs, comma-separated (a URL with a comma in it must percent-encode it).
 */
export function mirrorList(mirror: string | undefined): string[] {
  return (mirror ?? "")
    .split(",")
    .map((m) => m.trim())
    .filter((m) => m !== "");
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

/** sha256 and size of a file, read through one reused buffer (no garbage however large the file). */
export async function hashFile(path: string): Promise<{ sha256: string; size: number }> {
  const hash = createHash("sha256");
  const buf = Buffer.allocUnsafe(256 * 1024);
  let size = 0;
  const fd = await open(path, "r");
  try {
    for (;;) {
      const { bytesRead } = await fd.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      size += bytesRead;
      hash.update(buf.subarray(0, bytesRead));
    }
  } finally {
    await fd.close();
  }
  return { sha256: hash.digest("hex"), size };
}
