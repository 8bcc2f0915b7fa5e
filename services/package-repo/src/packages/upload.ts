import { createHash } from "node:crypto";
import { createWriteStream } from "node:fs";
import { rm } from "node:fs/promises";
import { Transform, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { HttpError } from "@molt/runtime";

export class PackageTooLargeError extends HttpError {
  constructor(maxBytes: number) {
    super(413, "payload_too_large", `the package is larger than the limit of ${maxBytes} bytes (MOLT_MAX_PACKAGE_BYTES)`);
  }
}

/**
 * Streams a request body into `dest` while hashing and counting it, never holding more than a
 * chunk in memory, and stops at `maxBytes`. On failure `dest` is removed. When the limit is hit
 * the rest of the body is drained (not read into anything) so the 413 still reaches the client;
 * the caller closes the connection after answering.
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
    body.resume();
    await rm(dest, { force: true });
    throw err;
  } finally {
    body.off("error", onAbort);
    body.off("aborted", onAborted);
  }
}
