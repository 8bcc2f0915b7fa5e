import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PackageManifest } from "@molt/contracts";
import { inspectArchive, type ArchiveLimits } from "./archive.js";

/** What names a package variant; the rest of the manifest comes from the bytes. */
export interface PackageIds {
  component: string;
  version: string;
  platform: string;
}

/**
 * The bounds a publisher's own tooling applies: the repository and every host apply theirs too.
 * Generous, because they only stop a mistake on the publisher's machine.
 */
export const PUBLISHER_LIMITS: ArchiveLimits = { maxEntries: 1_000_000, maxUnpackedBytes: 64 * 1024 ** 3 };

/**
 * The manifest of an archive on disk, computed exactly as package-repo computes it from an
 * upload (the same `inspectArchive`), so a signature made here verifies there and on hosts.
 */
export async function manifestOfFile(path: string, ids: PackageIds, limits: ArchiveLimits = PUBLISHER_LIMITS): Promise<PackageManifest> {
  const hash = createHash("sha256");
  let size = 0;
  for await (const chunk of createReadStream(path)) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  const summary = await inspectArchive(path, limits);
  const parsed = PackageManifest.safeParse({ ...ids, sha256: hash.digest("hex"), size, ...summary });
  if (!parsed.success) throw new Error(`not a valid manifest: ${parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`);
  return parsed.data;
}

/** The manifest of an archive given as a path or as bytes (written to a temp file to be listed). */
export async function manifestOf(archive: string | Buffer, ids: PackageIds, limits: ArchiveLimits = PUBLISHER_LIMITS): Promise<PackageManifest> {
  if (typeof archive === "string") return manifestOfFile(archive, ids, limits);
  const dir = await mkdtemp(join(tmpdir(), "molt-publish-"));
  try {
    const file = join(dir, "package.tar.gz");
    await writeFile(file, archive);
    return await manifestOfFile(file, ids, limits);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
