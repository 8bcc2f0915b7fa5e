import { mkdir, readdir, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { isErrno } from "../host/durable.js";
import { type ComponentPaths, installedVersion } from "../host/layout.js";

/** How many version dirs a component keeps (current and the previous one always among them). */
export const KEEP_VERSIONS = 3;

export const archivePath = (paths: ComponentPaths, taskId: string) => join(paths.staging, `${taskId}.tar.gz`);
export const extractPath = (paths: ComponentPaths, taskId: string) => join(paths.staging, `${taskId}.extract`);

/** Empties staging/ and removes temp `current` links: what a run that died before its switch left. */
export async function discardLeftovers(paths: ComponentPaths): Promise<void> {
  await rm(paths.staging, { recursive: true, force: true });
  await mkdir(paths.staging, { recursive: true });
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
