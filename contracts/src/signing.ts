import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from "node:crypto";
import { z } from "zod";
import { PackageManifest, RepositoryMetadata } from "./events.js";

/**
 * One text per JSON value: object keys sorted by UTF-16 code units at every level (RFC 8785's
 * order), no whitespace, numbers and strings as `JSON.stringify` writes them (which RFC 8785 also
 * prescribes). Values JSON cannot hold follow `JSON.stringify`: `undefined`, functions and symbols
 * are dropped from objects and become `null` in arrays, `toJSON` is honoured (dates). The manifest
 * signer, every verifier, the audit chain and the idempotency hash all use this one definition,
 * so a byte signed or hashed in one place is rebuilt exactly in another.
 */
export function canonicalJson(value: unknown): string {
  return canonical(value) ?? "null";
}

function canonical(value: unknown): string | undefined {
  const v = hasToJson(value) ? value.toJSON() : value;
  if (v === undefined || typeof v === "function" || typeof v === "symbol") return undefined;
  if (typeof v === "bigint") throw new TypeError("canonicalJson: a bigint has no JSON form");
  if (v === null || typeof v !== "object") return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map((item) => canonical(item) ?? "null").join(",")}]`;
  const parts: string[] = [];
  // Plain `<` on strings compares UTF-16 code units; localeCompare would depend on the locale.
  for (const key of Object.keys(v).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))) {
    const text = canonical((v as Record<string, unknown>)[key]);
    if (text !== undefined) parts.push(`${JSON.stringify(key)}:${text}`);
  }
  return `{${parts.join(",")}}`;
}

function hasToJson(value: unknown): value is { toJSON(): unknown } {
  return typeof value === "object" && value !== null && typeof (value as { toJSON?: unknown }).toJSON === "function";
}

// ---------- keys ----------

/** A key id: the first 16 hex digits of sha256 of the raw 32-byte ed25519 public key. */
export const KeyId = z.string().regex(/^[0-9a-f]{16}$/, "key id must be 16 lower-case hex digits");
export type KeyId = z.infer<typeof KeyId>;

/** An ed25519 signature (64 bytes), base64 with padding. */
export const ManifestSignatureText = z
  .string()
  .regex(/^[A-Za-z0-9+/]{86}==$/, "signature must be 64 bytes of ed25519 signature in base64");

/** What a publisher hands over with a package and what `PackagePublished` carries. */
export const ManifestSignature = z.object({ signature: ManifestSignatureText, keyId: KeyId });
export type ManifestSignature = z.infer<typeof ManifestSignature>;

/**
 * How a publisher's detached signature travels with an upload (`POST /v1/packages`): two headers,
 * so the body stays the raw archive that package-repo streams to disk.
 */
export const PUBLISHER_SIGNATURE_HEADER = "x-molt-signature";
export const PUBLISHER_KEY_ID_HEADER = "x-molt-key-id";

/** A manifest with its publisher's signature: what a host needs to trust the bytes it downloads. */
export const SignedManifest = z.object({ manifest: PackageManifest, signature: ManifestSignatureText, keyId: KeyId });
export type SignedManifest = z.infer<typeof SignedManifest>;

/**
 * A trusted publisher key as written in a configuration file: the public key as PEM (SPKI) or as
 * the raw 32 bytes in base64; `keyId` when given must be the key's own id (a typo then fails at
 * start, not at the first upgrade); `revoked` keeps a retired key listed so that its signatures
 * are refused by name ("revoked key") rather than as unknown.
 */
export const TrustedKeyConfig = z.object({
  keyId: KeyId.optional(),
  publicKey: z.string().min(1).max(1000),
  revoked: z.boolean().default(false),
  /** A note for people (who holds the private key, when it was rotated); never interpreted. */
  comment: z.string().max(500).optional(),
});
export type TrustedKeyConfig = z.input<typeof TrustedKeyConfig>;

export interface TrustedKey {
  readonly keyId: KeyId;
  readonly publicKey: KeyObject;
  readonly revoked: boolean;
}

/** The keys a verifier accepts, by id; build it with `trustedKeys`. */
export type TrustedKeys = ReadonlyMap<KeyId, TrustedKey>;

/** The public key of a PEM (public or private) or of raw 32 bytes in base64; only ed25519. */
export function publicKeyOf(key: KeyObject | string): KeyObject {
  let object: KeyObject;
  if (typeof key !== "string") object = key.type === "private" ? createPublicKey(key) : key;
  else if (key.includes("-----BEGIN")) object = createPublicKey(key);
  else {
    const raw = Buffer.from(key.trim(), "base64");
    if (raw.length !== 32 || raw.toString("base64") !== key.trim())
      throw new Error("a public key must be PEM or 32 bytes of ed25519 public key in base64");
    object = createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: raw.toString("base64url") }, format: "jwk" });
  }
  if (object.asymmetricKeyType !== "ed25519")
    throw new Error(`publisher keys are ed25519, not ${object.asymmetricKeyType ?? "a symmetric key"}`);
  return object;
}

/** The raw 32-byte ed25519 public key in base64: the short form for configuration files. */
export function rawPublicKeyOf(key: KeyObject | string): string {
  const jwk = publicKeyOf(key).export({ format: "jwk" });
  if (typeof jwk.x !== "string") throw new Error("not an ed25519 public key");
  return Buffer.from(jwk.x, "base64url").toString("base64");
}

/** keyId of an ed25519 key (public or private, PEM, raw base64 or KeyObject). */
export function keyIdOf(key: KeyObject | string): KeyId {
  return createHash("sha256").update(Buffer.from(rawPublicKeyOf(key), "base64")).digest("hex").slice(0, 16);
}

/**
 * The trusted set from configuration entries (already parsed or raw); throws with the entry's
 * position and the reason on a bad key, a keyId that is not the key's own, or a key listed twice.
 */
export function trustedKeys(entries: readonly (TrustedKeyConfig | z.output<typeof TrustedKeyConfig>)[]): TrustedKeys {
  const keys = new Map<KeyId, TrustedKey>();
  entries.forEach((raw, i) => {
    const parsed = TrustedKeyConfig.safeParse(raw);
    if (!parsed.success) throw new Error(`trusted key ${i}: ${parsed.error.issues.map((x) => x.message).join("; ")}`);
    let publicKey: KeyObject;
    try {
      publicKey = publicKeyOf(parsed.data.publicKey);
    } catch (err) {
      throw new Error(`trusted key ${i}: ${(err as Error).message}`);
    }
    const keyId = keyIdOf(publicKey);
    if (parsed.data.keyId !== undefined && parsed.data.keyId !== keyId)
      throw new Error(`trusted key ${i}: keyId ${parsed.data.keyId} is not this key's id (${keyId})`);
    if (keys.has(keyId)) throw new Error(`trusted key ${i}: key ${keyId} is listed twice`);
    keys.set(keyId, { keyId, publicKey, revoked: parsed.data.revoked });
  });
  return keys;
}

// ---------- sign and verify ----------

function privateKeyOf(key: KeyObject | string): KeyObject {
  const object = typeof key === "string" ? createPrivateKey(key) : key;
  if (object.type !== "private") throw new Error("signing needs a private key");
  if (object.asymmetricKeyType !== "ed25519")
    throw new Error(`publisher keys are ed25519, not ${object.asymmetricKeyType ?? "a symmetric key"}`);
  return object;
}

/** The exact bytes that are signed: the canonical JSON of the manifest, UTF-8. */
export function manifestBytes(manifest: PackageManifest): Buffer {
  return Buffer.from(canonicalJson(manifest), "utf8");
}

/** ed25519 over the canonical manifest with a publisher's private key (PEM or KeyObject). */
export function signManifest(manifest: PackageManifest, privateKey: KeyObject | string): ManifestSignature {
  const key = privateKeyOf(privateKey);
  const parsed = PackageManifest.strict().parse(manifest);
  return { signature: sign(null, manifestBytes(parsed), key).toString("base64"), keyId: keyIdOf(key) };
}

export type ManifestRefusal = "malformed" | "unknown-key" | "revoked-key" | "bad-signature";

export type ManifestVerdict =
  | { ok: true; manifest: PackageManifest; keyId: KeyId }
  | { ok: false; reason: ManifestRefusal; message: string };

/**
 * Checks a publisher's signature over a manifest against the trusted keys. Everything arrives
 * untyped because it comes off the wire: a manifest with a field the signer did not know, a
 * signature that is not 64 bytes or a key id of another shape is `malformed`, never an exception.
 * The result names its reason so that a refusal can be reported as it is.
 */
export function verifyManifest(manifest: unknown, signature: unknown, keyId: unknown, keys: TrustedKeys): ManifestVerdict {
  // strict: an extra field would be signed by the publisher but dropped by the parse, so the
  // verifier and the signer would disagree about what was signed.
  const m = PackageManifest.strict().safeParse(manifest);
  if (!m.success)
    return { ok: false, reason: "malformed", message: `manifest: ${m.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ")}` };
  const checked = checkDetached(manifestBytes(m.data), signature, keyId, keys, "manifest");
  return checked.ok ? { ok: true, manifest: m.data, keyId: checked.keyId } : checked;
}

/** One detached ed25519 signature over `bytes`, by a trusted, unrevoked key; what is signed is named in messages. */
function checkDetached(
  bytes: Buffer,
  signature: unknown,
  keyId: unknown,
  keys: TrustedKeys,
  what: string,
): { ok: true; keyId: KeyId } | { ok: false; reason: ManifestRefusal; message: string } {
  if (signature === undefined || signature === null || signature === "")
    return { ok: false, reason: "malformed", message: `the ${what} carries no signature` };
  const s = ManifestSignatureText.safeParse(signature);
  if (!s.success) return { ok: false, reason: "malformed", message: s.error.issues[0]?.message ?? "bad signature" };
  const k = KeyId.safeParse(keyId);
  if (!k.success) return { ok: false, reason: "malformed", message: k.error.issues[0]?.message ?? "bad key id" };
  const key = keys.get(k.data);
  if (key === undefined) return { ok: false, reason: "unknown-key", message: `key ${k.data} is not a trusted publisher key` };
  if (key.revoked) return { ok: false, reason: "revoked-key", message: `key ${k.data} is revoked` };
  if (!verify(null, bytes, key.publicKey, Buffer.from(s.data, "base64")))
    return { ok: false, reason: "bad-signature", message: `the ${what} signature does not verify with key ${k.data}` };
  return { ok: true, keyId: k.data };
}

// ---------- repository metadata ----------

/** ed25519 over the canonical metadata document with a publisher's private key (PEM or KeyObject). */
export function signRepositoryMetadata(metadata: RepositoryMetadata, privateKey: KeyObject | string): ManifestSignature {
  const key = privateKeyOf(privateKey);
  const parsed = RepositoryMetadata.strict().parse(metadata);
  return { signature: sign(null, Buffer.from(canonicalJson(parsed), "utf8"), key).toString("base64"), keyId: keyIdOf(key) };
}

export type MetadataVerdict =
  | { ok: true; metadata: RepositoryMetadata; keyId: KeyId }
  | { ok: false; reason: ManifestRefusal; message: string };

/** Checks a publisher's signature over a repository metadata document, as `verifyManifest` does for a manifest. */
export function verifyRepositoryMetadata(metadata: unknown, signature: unknown, keyId: unknown, keys: TrustedKeys): MetadataVerdict {
  const m = RepositoryMetadata.strict().safeParse(metadata);
  if (!m.success)
    return { ok: false, reason: "malformed", message: `metadata: ${m.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ")}` };
  const checked = checkDetached(Buffer.from(canonicalJson(m.data), "utf8"), signature, keyId, keys, "metadata");
  return checked.ok ? { ok: true, metadata: m.data, keyId: checked.keyId } : checked;
}
