import { readdir, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { isErrno } from "../host/durable.js";
import { type ComponentPaths, installedVersion } from "../host/layout.js";

/** How many version dirs a component keeps (current and the previous one always among them). */
export const KEEP_VERSIONS = 3;

/**
 * The download is named by the package's sha256, not by the task: a retry (a new attempt, so a
 * new task id) of the same package after a crash or a failed download resumes the partial file.
 */
const downloadName = (sha256: string) => `${sha256}.download`;
export const archivePath = (paths: ComponentPaths, sha256: string) => join(paths.staging, downloadName(sha256));
export const extractPath = (paths: ComponentPaths, taskId: string) => join(paths.staging, `${taskId}.extract`);

/**
 * Removes what runs that died or failed left in staging/ (extraction dirs, other packages'
 * downloads) and temp `current` links; `keepSha256` names the one download to keep, so it resumes.
 */
export async function discardLeftovers(paths: ComponentPaths, keepSha256?: string): Promise<void> {
  const keep = keepSha256 === undefined ? undefined : downloadName(keepSha256);
  for (const name of await readdir(paths.staging).catch(() => [])) {
    if (name !== keep) await rm(join(paths.staging, name), { recursive: true, force: true });
  }
  for (const name of await readdir(paths.dir)) {
    if (name.startsWith("current.tmp-")) await rm(join(paths.dir, name), { force: true });
  }
}

/** Keeps the last KEEP_VERSIONS installed versions, always including current and `previous`. */
export async function pruneVersions(root: string, component: string, paths: ComponentPaths, previous: string | null): Promise<string[]> {
  const current = await installedVersion(root, component);
  let names: string[];
  try {
    names = await readdir(paths.versions);
  } catch (err) {
    if (isErrno(err, "ENOENT")) return [];
    throw err;
  }
  const dated = await Promise.all(names.map(async (n) => ({ n, t: (await stat(paths.version(n))).mtimeMs })));
  dated.sort((a, b) => b.t - a.t);
  const keep = new Set([current, previous].filter((v): v is string => v !== null));
  for (const { n } of dated) if (keep.size < KEEP_VERSIONS) keep.add(n);
  const drop = dated.map((d) => d.n).filter((n) => !keep.has(n));
  for (const n of drop) await rm(paths.version(n), { recursive: true, force: true });
  return drop;
}
