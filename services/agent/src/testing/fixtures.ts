/**
 * Test fixtures for the agent's own tests: real packages (tar.gz built with `tar`), a real HTTP
 * server serving them (with Range, tampering and holding a response open), and task builders.
 */
import { createHash, randomBytes } from "node:crypto";
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { gzipSync } from "node:zlib";
import type { DesiredState } from "@molt/contracts";
import { create, Header } from "tar";

export async function tempDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `molt-agent-${prefix}-`));
}

export interface BuiltPackage {
  readonly bytes: Buffer;
  readonly sha256: string;
  readonly size: number;
}

/** A tar.gz holding `files` (path → content, or content and mode), built with the `tar` package. */
export async function buildPackage(files: Record<string, string | { content: string; mode: number }>): Promise<BuiltPackage> {
  const dir = await tempDir("pkg");
  try {
    const src = join(dir, "src");
    for (const [path, spec] of Object.entries(files)) {
      const p = join(src, path);
      await mkdir(dirname(p), { recursive: true });
      await writeFile(p, typeof spec === "string" ? spec : spec.content);
      if (typeof spec !== "string") await chmod(p, spec.mode);
    }
    const out = join(dir, "pkg.tar.gz");
    await create({ gzip: true, cwd: src, file: out, portable: true }, ["."]);
    return describePackage(await readFile(out));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export function describePackage(bytes: Buffer): BuiltPackage {
  return { bytes, sha256: createHash("sha256").update(bytes).digest("hex"), size: bytes.length };
}

export interface RawEntry {
  readonly path: string;
  readonly type: "File" | "Directory" | "SymbolicLink" | "Link" | "FIFO" | "CharacterDevice";
  readonly body?: string;
  readonly linkpath?: string;
  readonly mode?: number;
}

/** A tar.gz written header by header, so tests can build archives `tar` itself would never create. */
export function rawTarGz(entries: readonly RawEntry[]): Buffer {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const body = Buffer.from(e.body ?? "");
    const block = Buffer.alloc(512);
    new Header({
      path: e.path,
      type: e.type,
      size: body.length,
      mode: e.mode ?? (e.type === "Directory" ? 0o755 : 0o644),
      mtime: new Date(),
      uid: 0,
      gid: 0,
      ...(e.linkpath ? { linkpath: e.linkpath } : {}),
    }).encode(block, 0);
    blocks.push(block);
    if (body.length > 0) {
      const data = Buffer.alloc(Math.ceil(body.length / 512) * 512);
      body.copy(data);
      blocks.push(data);
    }
  }
  blocks.push(Buffer.alloc(1024));
  return gzipSync(Buffer.concat(blocks));
}

export interface Served {
  body: Buffer;
  /** When set, the answer is a 302 to this URL. */
  redirectTo?: string;
  /** When set, the response waits for it before sending the body. */
  hold?: Promise<void>;
  /** When set, only this many bytes of a full (non-Range) response are sent, then the response hangs open. */
  cutAfter?: number;
  /** When set, the first full (non-Range) response breaks off after this many bytes (the connection is cut). */
  dropFirstAfter?: number;
  /**
   * With dropFirstAfter: the cut waits for this (e.g. the bytes being on the client's disk). A
   * stream that errors drops the chunks its reader has not taken yet, so cutting at once would
   * test how fast the client reads, not whether it resumes.
   */
  dropWhen?: () => Promise<unknown>;
}

export interface PackageServer {
  readonly base: string;
  /** Every request: path and Range header. */
  readonly requests: Array<{ path: string; range: string | undefined }>;
  serve(path: string, served: Served): string;
  close(): Promise<void>;
}

/** A real HTTP server (node:http) serving registered bodies, honouring `Range: bytes=N-`. */
export async function startPackageServer(): Promise<PackageServer> {
  const routes = new Map<string, Served>();
  const requests: Array<{ path: string; range: string | undefined }> = [];
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const path = req.url ?? "/";
    requests.push({ path, range: req.headers.range });
    const served = routes.get(path);
    if (!served) {
      res.writeHead(404).end();
      return;
    }
    if (served.hold) await served.hold;
    if (served.redirectTo !== undefined) {
      res.writeHead(302, { location: served.redirectTo }).end();
      return;
    }
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? "");
    if (m) {
      const start = Number(m[1]);
      if (start >= served.body.length) {
        res.writeHead(416, { "content-range": `bytes */${served.body.length}` }).end();
        return;
      }
      const part = served.body.subarray(start);
      res.writeHead(206, {
        "content-length": part.length,
        "content-range": `bytes ${start}-${served.body.length - 1}/${served.body.length}`,
      });
      res.end(part);
      return;
    }
    res.writeHead(200, { "content-length": served.body.length });
    if (served.dropFirstAfter !== undefined) {
      const n = served.dropFirstAfter;
      delete served.dropFirstAfter;
      const when = served.dropWhen ?? (() => Promise.resolve());
      res.write(served.body.subarray(0, n), () => void when().finally(() => res.destroy()));
      return;
    }
    if (served.cutAfter !== undefined) {
      res.write(served.body.subarray(0, served.cutAfter));
      return;
    }
    res.end(served.body);
  };
  const server = createServer((req, res) => void handle(req, res));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    base,
    requests,
    serve(path, served) {
      routes.set(path, served);
      return `${base}${path}`;
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

export function desiredTask(over: Partial<DesiredState> & Pick<DesiredState, "hostId" | "package">): DesiredState {
  return {
    taskId: `t-${randomBytes(6).toString("hex")}`,
    deploymentId: "d-1",
    kind: "upgrade",
    component: "metrics-agent",
    version: "2.0.0",
    fromVersion: "1.0.0",
    attempt: 1,
    deadline: new Date(Date.now() + 60_000).toISOString(),
    ...over,
  };
}
