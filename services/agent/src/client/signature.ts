import { type DesiredState, type PackageManifest, type TrustedKeys, verifyManifest } from "@molt/contracts";

/** A package the host refuses to install: the message says which check failed. */
export class PackageRefusedError extends Error {
  readonly code = "package_refused";
}

/**
 * The host's trust check, before a byte is downloaded or extracted: the publisher's signature over
 * the manifest with keys configured on this host (never fetched), then that the manifest is this
 * task's (component, version, platform) and names the bytes the task points at (sha256, size).
 * With trusted keys configured an unsigned package is refused; without any (a simulator, a
 * development host) the package is taken on its sha256 alone. Returns the verified manifest.
 */
export function checkSignedManifest(task: DesiredState, trust: TrustedKeys | null): PackageManifest | null {
  const pkg = task.package;
  if (pkg === undefined) return null;
  if (trust === null || trust.size === 0) return null;
  const signed = pkg.signed;
  if (signed === undefined) throw new PackageRefusedError("signature refused: the package carries no signature and this host installs only what a trusted publisher signed");
  const verdict = verifyManifest(signed.manifest, signed.signature, signed.keyId, trust);
  if (!verdict.ok) throw new PackageRefusedError(`signature refused (${verdict.reason}): ${verdict.message}`);
  const m = verdict.manifest;
  const wrong: string[] = [];
  if (m.component !== task.component) wrong.push(`component ${m.component}, not ${task.component}`);
  if (m.version !== task.version) wrong.push(`version ${m.version}, not ${task.version}`);
  if (m.platform !== pkg.platform) wrong.push(`platform ${m.platform}, not ${pkg.platform}`);
  if (m.sha256 !== pkg.sha256) wrong.push(`sha256 ${m.sha256}, not ${pkg.sha256}`);
  if (m.size !== pkg.size) wrong.push(`size ${m.size}, not ${pkg.size}`);
  if (wrong.length > 0) throw new PackageRefusedError(`signature refused: the signed manifest is for ${wrong.join(", ")}`);
  return m;
}
