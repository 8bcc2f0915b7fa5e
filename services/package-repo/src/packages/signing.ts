import { createHash, createPrivateKey, createPublicKey, sign, type KeyObject } from "node:crypto";
import type { PackageManifest } from "@molt/contracts";

export interface ManifestSignature {
  /** ed25519 over the canonical manifest JSON, base64. */
  signature: string;
  /** First 16 hex digits of sha256 of the raw 32-byte public key: names the key hosts must hold. */
  keyId: string;
}

export interface ManifestSigner {
  readonly keyId: string;
  sign(manifest: PackageManifest): ManifestSignature;
}

/**
 * The bytes that are signed: JSON with object keys sorted at every level and no whitespace.
 * Hosts rebuild the same bytes from the manifest they are given, so key order on the wire never
 * matters.
 */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

/** keyId of an ed25519 public key (raw 32 bytes → sha256 → first 16 hex digits). */
export function keyIdOf(publicKey: KeyObject): string {
  const jwk = publicKey.export({ format: "jwk" });
  if (typeof jwk.x !== "string") throw new Error("not an ed25519 public key");
  return createHash("sha256").update(Buffer.from(jwk.x, "base64url")).digest("hex").slice(0, 16);
}

/** A signer from an ed25519 private key in PEM; anything else is a configuration error. */
export function createManifestSigner(privateKeyPem: string): ManifestSigner {
  const privateKey = createPrivateKey(privateKeyPem);
  if (privateKey.asymmetricKeyType !== "ed25519")
    throw new Error(`the publisher key must be ed25519, not ${privateKey.asymmetricKeyType ?? "a symmetric key"}`);
  const keyId = keyIdOf(createPublicKey(privateKey));
  return {
    keyId,
    sign(manifest) {
      const signature = sign(null, Buffer.from(canonicalJson(manifest), "utf8"), privateKey).toString("base64");
      return { signature, keyId };
    },
  };
}
