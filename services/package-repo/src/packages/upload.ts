import { createHash } from "node:crypto";
import { createWriteStream } from "node:fs";
import { rm } from "node:fs/promises";
import { Socket } from "node:net";
import { Transform, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { FastifyReply } from "fastify";
import { HttpError } from "@molt/runtime";

export class PackageTooLargeError extends HttpError {
  constructor(maxBytes: number) {
    super(413, "payload_too_large", `the package is larger than the limit of ${maxBytes} bytes (MOLT_MAX_PACKAGE_BYTES)`);
  }
}

/**
 * Streams a request body into `dest` while hashing and counting it, never holding more than a
 * chunk in memory, and stops at `maxBytes`. On failure `dest` is removed and the rest of the body
 * is left unread: the caller answers with {@link refuseOversizeUpload}, which bounds what is read.
 */
export async function receiveToFile(body: Readable, dest: string, maxBytes: number): Promise<{ sha256: string; size: number }> {
  const hash = createHash("sha256");
  let size = 0;
  const limit = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      size += chunk.length;
      if (size > maxBytes) return cb(new PackageTooLargeError(maxBytes));
      hash.update(chunk);
      cb(null, chunk);
    },
  });
  // pipe, not pipeline, for the body: pipeline would destroy the request (and with it the
  // socket) on the first error, and the client would never see the answer.
  const onAbort = (err?: Error) => limit.destroy(err ?? new Error("the client aborted the upload"));
  const onAborted = () => onAbort();
  body.once("error", onAbort);
  body.once("aborted", onAborted);
  body.pipe(limit);
  try {
    await pipeline(limit, createWriteStream(dest, { flags: "wx" }));
    return { sha256: hash.digest("hex"), size };
  } catch (err) {
    body.unpipe(limit);
    body.pause();
    await rm(dest, { force: true });
    throw err;
  } finally {
    body.off("error", onAbort);
    body.off("aborted", onAborted);
  }
}

/** How long and how much a refused upload is still read after the 413 so the client can read it. */
export interface LingerLimits {
  ms: number;
  bytes: number;
}

export const DEFAULT_LINGER: LingerLimits = { ms: 2_000, bytes: 8 * 1024 * 1024 };

/**
 * Answers 413 to an upload whose body is still arriving, and closes the connection the way a
 * client can read: the answer, then FIN, then a bounded "lingering close" that discards what the
 * client still sends (at most `linger.bytes`, for at most `linger.ms`) before the socket is
 * destroyed. Destroying at once is what node does after `Connection: close`, and closing a socket
 * with unread input sends a TCP reset, on which the client's kernel drops the 413 it has not read
 * yet: the client sees "connection reset" and, worse, some clients keep reading their body after
 * that. Draining without a bound (what this used to do) reads the whole oversize body instead.
 */
export function refuseOversizeUpload(reply: FastifyReply, body: Readable, err: PackageTooLargeError, linger: LingerLimits = DEFAULT_LINGER): void {
  const payload = { error: { code: err.code, message: err.message } };
  reply.request.log.warn({ limit: err.message }, "upload refused: too large");
  const socket = reply.raw.socket;
  if (!(socket instanceof Socket)) {
    // No TCP connection to close gracefully (an injected request): a plain answer.
    void reply.code(413).header("connection", "close").send(payload);
    return;
  }
  // The reply is written on the socket by hand: node's own response would destroy the socket
  // as soon as it is sent (see above). fastify lets go of it.
  void reply.hijack();
  const json = JSON.stringify(payload);
  const head = [
    "HTTP/1.1 413 Payload Too Large",
    "content-type: application/json; charset=utf-8",
    `content-length: ${Buffer.byteLength(json)}`,
    `x-request-id: ${reply.request.id}`,
    "connection: close",
  ];
  let discarded = 0;
  const close = () => {
    clearTimeout(timer);
    body.off("data", count);
    socket.destroy();
  };
  const count = (chunk: Buffer) => {
    discarded += chunk.length;
    if (discarded > linger.bytes) close();
  };
  const timer = setTimeout(close, linger.ms);
  timer.unref();
  socket.once("close", () => clearTimeout(timer));
  socket.end(`${head.join("\r\n")}\r\n\r\n${json}`);
  body.on("data", count);
  body.resume();
}
