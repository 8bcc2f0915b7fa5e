import { generateKeyPairSync } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { keyIdOf, rawPublicKeyOf, type KeyId } from "@molt/contracts";

export interface PublisherKeyPair {
  keyId: KeyId;
  /** PKCS#8 PEM: stays with the publisher (a CI secret, a hardware token's export). */
  privateKeyPem: string;
  /** SPKI PEM. */
  publicKeyPem: string;
  /** The raw 32-byte public key in base64: the short form hosts and package-repo are configured with. */
  publicKey: string;
}

export function generatePublisherKey(): PublisherKeyPair {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  return {
    keyId: keyIdOf(publicKey),
    privateKeyPem: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    publicKeyPem: publicKey.export({ type: "spki", format: "pem" }).toString(),
    publicKey: rawPublicKeyOf(publicKey),
  };
}

/**
 * Writes `<name>.key` (mode 0600) and `<name>.pub` into `dir`. An existing key is never
 * overwritten (`wx`): losing a private key that hosts trust means rotating every host.
 */
export async function writePublisherKey(dir: string, name: string, pair: PublisherKeyPair): Promise<{ privateKeyFile: string; publicKeyFile: string }> {
  await mkdir(dir, { recursive: true });
  const privateKeyFile = join(dir, `${name}.key`);
  const publicKeyFile = join(dir, `${name}.pub`);
  await writeFile(privateKeyFile, pair.privateKeyPem, { mode: 0o600, flag: "wx" });
  await writeFile(publicKeyFile, pair.publicKeyPem, { mode: 0o644, flag: "wx" });
  return { privateKeyFile, publicKeyFile };
}
