import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { request as httpRequest, type IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";
import { PUBLISHER_SIGNATURE_HEADER, PUBLISHER_KEY_ID_HEADER, signManifest, type ManifestSignature } from "@molt/contracts";
import { manifestOf, type PackageIds } from "./manifest.js";

export interface PushInput {
  /** Base URL of the gateway or of package-repo itself, e.g. `http://127.0.0.1:8080`. */
  url: string;
  /** An operator or admin bearer token. */
  token: string;
  ids: PackageIds;
  /** The archive on disk (streamed, never held in memory) or its bytes. */
  archive: string | Buffer;
  /** The publisher's signature over the manifest of exactly these bytes; null pushes unsigned. */
  signature: ManifestSignature | null;
}

export interface PushResult {
  status: number;
  /** The parsed JSON answer: `PackageInfo` on 200/201, `{ error: { code, message } }` otherwise. */
  body: unknown;
}

/**
 * Uploads one package with its detached signature in two headers, so the body stays the raw
 * archive (streamed by package-repo straight to disk) and the private key never leaves the
 * publisher. node:http rather than fetch: fetch cannot send a file as a stream with a known
 * Content-Length, and package-repo refuses an oversize upload by its declared length at once.
 */
export async function pushPackage(input: PushInput): Promise<PushResult> {
  const target = new URL(`${input.url.replace(/\/+$/, "")}/v1/packages`);
  const { component, version, platform } = input.ids;
  target.search = new URLSearchParams({ component, version, platform }).toString();
  const length = typeof input.archive === "string" ? (await stat(input.archive)).size : input.archive.length;
  const headers: Record<string, string> = {
    authorization: `Bearer ${input.token}`,
    "content-type": "application/gzip",
    "content-length": String(length),
    ...(input.signature ? { [PUBLISHER_SIGNATURE_HEADER]: input.signature.signature, [PUBLISHER_KEY_ID_HEADER]: input.signature.keyId } : {}),
  };
  const send = target.protocol === "https:" ? httpsRequest : httpRequest;
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    const req = send(target, { method: "POST", headers }, resolve);
    req.on("error", reject);
    if (typeof input.archive === "string") createReadStream(input.archive).on("error", (err) => req.destroy(err)).pipe(req);
    else req.end(input.archive);
  });
  const chunks: Buffer[] = [];
  for await (const chunk of res) chunks.push(chunk as Buffer);
  const text = Buffer.concat(chunks).toString("utf8");
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // Not JSON (a proxy's error page): hand the text back as it is.
  }
  return { status: res.statusCode ?? 0, body };
}

/** Computes the manifest of the archive, signs it with the publisher's private key (PEM) and pushes both. */
export async function signAndPush(input: Omit<PushInput, "signature"> & { privateKey: string }): Promise<PushResult & { signature: ManifestSignature }> {
  const { privateKey, ...rest } = input;
  const signature = signManifest(await manifestOf(input.archive, input.ids), privateKey);
  return { ...(await pushPackage({ ...rest, signature })), signature };
}
