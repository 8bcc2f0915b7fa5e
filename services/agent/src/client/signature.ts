import { mkdir, readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { z } from "zod";
import { type DesiredState, type PackageManifest, type TrustedKeys, verifyManifest, verifyRepositoryMetadata } from "@molt/contracts";
import { isErrno, writeFileDurable } from "../host/durable.js";

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

/** Where a host keeps the newest repository metadata version it has seen per component: outside the component's dir, so removing a component keeps it. */
export function seenMetadataPath(root: string, component: string): string {
  return join(root, "agent", "metadata", `${component}.json`);
}

const SeenMetadata = z.object({ version: z.number().int().positive(), expires: z.string() });

async function readSeen(path: string): Promise<number | null> {
  try {
    return SeenMetadata.parse(JSON.parse(await readFile(path, "utf8"))).version;
  } catch (err) {
    if (isErrno(err, "ENOENT")) return null;
    // A record the host cannot read must not turn into "never seen" (that would reopen rollbacks).
    throw new PackageRefusedError(`repository metadata refused: the record of seen metadata ${path} is unreadable (${(err as Error).message})`);
  }
}

/**
 * The host's check of the component's signed repository metadata (TUF's targets role), before a
 * byte is downloaded, with the same trusted keys as the manifest: signed by a trusted, unrevoked
 * key; for this component; not expired (a freeze); not older than the newest version this host
 * has seen (a rollback, recorded on disk); and listing this variant with these bytes, not yanked.
 * A package without metadata is taken (on its manifest signature alone) only while this host has
 * never seen metadata for the component. The newest version seen is recorded before the download.
 */
export async function checkRepositoryMetadata(task: DesiredState, trust: TrustedKeys | null, root: string, now: Date): Promise<number | null> {
  const pkg = task.package;
  if (pkg === undefined || trust === null || trust.size === 0) return null;
  const path = seenMetadataPath(root, task.component);
  const seen = await readSeen(path);
  const signed = pkg.metadata;
  if (signed === undefined) {
    if (seen === null) return null;
    throw new PackageRefusedError(`repository metadata refused: the package carries no repository metadata, and this host has seen version ${seen} for ${task.component}`);
  }
  const verdict = verifyRepositoryMetadata(signed.metadata, signed.signature, signed.keyId, trust);
  if (!verdict.ok) throw new PackageRefusedError(`repository metadata refused (${verdict.reason}): ${verdict.message}`);
  const m = verdict.metadata;
  const refuse = (why: string) => new PackageRefusedError(`repository metadata refused: ${why}`);
  if (m.component !== task.component) throw refuse(`the metadata is for ${m.component}, not ${task.component}`);
  if (Date.parse(m.expires) <= now.getTime()) throw refuse(`metadata version ${m.version} expired at ${m.expires}`);
  if (seen !== null && m.version < seen) throw refuse(`metadata version ${m.version} is older than version ${seen}, which this host has seen`);
  const what = `${task.component} ${task.version} ${pkg.platform}`;
  const entry = m.packages.find((e) => e.version === task.version && e.platform === pkg.platform);
  if (entry === undefined) throw refuse(`${what} is not listed in the repository metadata (version ${m.version})`);
  if (entry.sha256 !== pkg.sha256) throw refuse(`the metadata lists sha256 ${entry.sha256} for ${what}, not ${pkg.sha256}`);
  if (entry.yanked) throw refuse(`${what} is yanked (metadata version ${m.version})`);
  if (seen === null || m.version > seen) {
    await mkdir(dirname(path), { recursive: true });
    await writeFileDurable(path, `${JSON.stringify({ version: m.version, expires: m.expires })}\n`);
  }
  return m.version;
}
