import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { request as httpRequest, type IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";
import {
  PUBLISHER_SIGNATURE_HEADER,
  PUBLISHER_KEY_ID_HEADER,
  signManifest,
  signRepositoryMetadata,
  SignedRepositoryMetadata,
  type ManifestSignature,
} from "@molt/contracts";
import { manifestOf, type PackageIds } from "./manifest.js";
import { DEFAULT_METADATA_EXPIRY_DAYS, expiresIn, nextMetadata, type MetadataChange } from "./metadata.js";

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

/**
 * Computes the manifest of the archive, signs it with the publisher's private key (PEM), pushes
 * both, then adds the variant to the component's signed metadata (unless the repository's own
 * signer already lists it, the demo's shortcut): hosts install only what the metadata lists.
 */
export async function signAndPush(
  input: Omit<PushInput, "signature"> & { privateKey: string },
): Promise<PushResult & { signature: ManifestSignature; metadata: PushResult | null }> {
  const { privateKey, ...rest } = input;
  const manifest = await manifestOf(input.archive, input.ids);
  const signature = signManifest(manifest, privateKey);
  const pushed = await pushPackage({ ...rest, signature });
  if (pushed.status !== 200 && pushed.status !== 201) return { ...pushed, signature, metadata: null };
  const metadata = await addToMetadata({ url: input.url, token: input.token, component: manifest.component, privateKey }, manifest);
  return { ...pushed, signature, metadata };
}

/** Adds the variant to the signed metadata when the current document does not list it yet (null: it does). */
export async function addToMetadata(input: MetadataInput, m: { version: string; platform: string; sha256: string }): Promise<PushResult | null> {
  const current = await fetchMetadata(input.url, input.component);
  if (current?.metadata.packages.some((e) => e.version === m.version && e.platform === m.platform && e.sha256 === m.sha256)) return null;
  return pushMetadata(input, { version: m.version, platform: m.platform, sha256: m.sha256 });
}

export interface MetadataInput {
  /** Base URL of the gateway or of package-repo itself. */
  url: string;
  token: string;
  component: string;
  /** The publisher's private key (PEM) that signs the new metadata. */
  privateKey: string;
  /** When the new document stops being accepted by hosts (default: DEFAULT_METADATA_EXPIRY_DAYS from now). */
  expires?: string;
}

const jsonOf = async (res: Response): Promise<unknown> => {
  const text = await res.text();
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
};

/** The component's current signed metadata on the repository (null: none yet). */
export async function fetchMetadata(url: string, component: string): Promise<SignedRepositoryMetadata | null> {
  const res = await fetch(`${url.replace(/\/+$/, "")}/v1/packages/${encodeURIComponent(component)}/metadata`);
  if (res.status === 404) return null;
  const body = await jsonOf(res);
  if (res.status !== 200) throw new Error(`metadata of ${component}: HTTP ${res.status} ${JSON.stringify(body)}`);
  return SignedRepositoryMetadata.parse(body);
}

/**
 * The next signed metadata document for one change: the repository's current document with the
 * change applied and its version one more, signed here with the publisher's key.
 */
export async function signNextMetadata(input: MetadataInput, change: MetadataChange): Promise<SignedRepositoryMetadata> {
  const current = await fetchMetadata(input.url, input.component);
  const metadata = nextMetadata(input.component, current?.metadata ?? null, change, input.expires ?? expiresIn(DEFAULT_METADATA_EXPIRY_DAYS));
  return { metadata, ...signRepositoryMetadata(metadata, input.privateKey) };
}

/** Adds a pushed variant to the component's signed metadata (`PUT /v1/packages/:c/metadata`). */
export async function pushMetadata(input: MetadataInput, entry: { version: string; platform: string; sha256: string }): Promise<PushResult> {
  const signed = await signNextMetadata(input, { kind: "add", entry });
  const res = await fetch(`${input.url.replace(/\/+$/, "")}/v1/packages/${encodeURIComponent(input.component)}/metadata`, {
    method: "PUT",
    headers: { authorization: `Bearer ${input.token}`, "content-type": "application/json" },
    body: JSON.stringify(signed),
  });
  return { status: res.status, body: await jsonOf(res) };
}

/** Yanks a version (one platform or all) with the signed metadata that tells hosts (`POST …/yank`). */
export async function yankPackage(input: MetadataInput & { version: string; platform?: string; reason: string }): Promise<PushResult> {
  const metadata = await signNextMetadata(input, { kind: "yank", version: input.version, platform: input.platform });
  const path = [input.component, input.version].map(encodeURIComponent).join("/");
  const res = await fetch(`${input.url.replace(/\/+$/, "")}/v1/packages/${path}/yank`, {
    method: "POST",
    headers: { authorization: `Bearer ${input.token}`, "content-type": "application/json" },
    body: JSON.stringify({ reason: input.reason, ...(input.platform !== undefined ? { platform: input.platform } : {}), metadata }),
  });
  return { status: res.status, body: await jsonOf(res) };
}
