import { createPrivateKey } from "node:crypto";
import { keyIdOf, signManifest, signRepositoryMetadata, type ManifestSignature, type PackageManifest, type RepositoryMetadata } from "@molt/contracts";

/** The server-side signer, for the demo and for repositories that hold a publisher key themselves. */
export interface ManifestSigner {
  readonly keyId: string;
  sign(manifest: PackageManifest): ManifestSignature;
  /** Signs the component's next repository metadata (after each publish and yank it takes part in). */
  signMetadata(metadata: RepositoryMetadata): ManifestSignature;
}

/** A signer from an ed25519 private key in PEM; anything else is a configuration error. */
export function createManifestSigner(privateKeyPem: string): ManifestSigner {
  const privateKey = createPrivateKey(privateKeyPem);
  // keyIdOf refuses a key that is not ed25519: a start-up error, not a failed upload later.
  const keyId = keyIdOf(privateKey);
  return { keyId, sign: (manifest) => signManifest(manifest, privateKey), signMetadata: (metadata) => signRepositoryMetadata(metadata, privateKey) };
}
