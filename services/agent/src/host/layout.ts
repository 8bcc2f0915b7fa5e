import { chmod, mkdir, readdir, readlink, rename, rm, symlink, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { ComponentName, Version } from "@molt/contracts";
import { fsyncDir, isErrno } from "./durable.js";

/**
 * Where one component lives under a host root:
 * `components/<c>/versions/<v>/`, `components/<c>/current` → `versions/<v>`,
 * `components/<c>/shared/` (kept across versions), `components/<c>/staging/` (downloads, extraction).
 */
export interface ComponentPaths {
  /** The host root this component lives under. */
  readonly root: string;
  readonly dir: string;
  readonly versions: string;
  readonly current: string;
  readonly shared: string;
  readonly staging: string;
  readonly lock: string;
  version(v: string): string;
}

export function componentPaths(root: string, component: string): ComponentPaths {
  const dir = join(root, "components", component);
  return {
    root,
    dir,
    versions: join(dir, "versions"),
    current: join(dir, "current"),
    shared: join(dir, "shared"),
    staging: join(dir, "staging"),
    // Beside `current`, not inside versions/: the lock outlives any version dir it protects.
    lock: join(dir, "lock"),
    version: (v) => join(dir, "versions", v),
  };
}

/** `{pid, version, at}` of the agent's last heartbeat: how a self-upgrade's watcher sees the new agent live. */
export function localHeartbeatPath(root: string): string {
  return join(root, "agent", "heartbeat.json");
}

/** The installed version = the basename of `current`'s target; null when there is no `current`. */
export async function installedVersion(root: string, component: string): Promise<string | null> {
  try {
    return basename(await readlink(componentPaths(root, component).current));
  } catch (err) {
    if (isErrno(err, "ENOENT") || isErrno(err, "EINVAL")) return null;
    throw err;
  }
}

/** Component dirs present under `<root>/components` whose names are valid component names. */
export async function listComponents(root: string): Promise<string[]> {
  try {
    const entries = await readdir(join(root, "components"), { withFileTypes: true });
    return entries.filter((e) => e.isDirectory() && ComponentName.safeParse(e.name).success).map((e) => e.name);
  } catch (err) {
    if (isErrno(err, "ENOENT")) return [];
    throw err;
  }
}

/**
 * Points `current` at `versions/<version>` atomically: a temp symlink renamed over `current`
 * (rename is atomic, so readers see the old or the new target, never none), then the component
 * dir is fsynced so the switch survives a crash.
 */
export async function switchCurrent(paths: ComponentPaths, version: string, tag: string, beforeRename?: () => void): Promise<void> {
  const tmp = join(paths.dir, `current.tmp-${tag}`);
  await rm(tmp, { force: true });
  await symlink(join("versions", version), tmp);
  beforeRename?.();
  await rename(tmp, paths.current);
  await fsyncDir(paths.dir);
}

export interface Seed {
  readonly component: string;
  readonly version: string;
}

/** Parses `MOLT_SEED`: `metrics-agent@1.0.0,other@2.0`. */
export function parseSeeds(spec: string | undefined): Seed[] {
  if (!spec) return [];
  return spec
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map((s) => {
      const at = s.lastIndexOf("@");
      const component = ComponentName.parse(at > 0 ? s.slice(0, at) : s);
      const version = Version.parse(at > 0 ? s.slice(at + 1) : "");
      return { component, version };
    });
}

/**
 * Demo and test seeding: a component without `current` gets a tiny installed version so a fleet
 * has something to upgrade. A component that already has `current` is left alone.
 */
export async function seedComponent(root: string, seed: Seed): Promise<boolean> {
  const paths = componentPaths(root, seed.component);
  if ((await installedVersion(root, seed.component)) !== null) return false;
  const dir = paths.version(seed.version);
  await mkdir(join(dir, "bin"), { recursive: true });
  await mkdir(paths.shared, { recursive: true });
  await writeFile(join(dir, "VERSION"), `${seed.version}\n`);
  await writeFile(join(dir, "bin", "run.sh"), `#!/bin/sh\necho "${seed.component} ${seed.version}"\n`);
  await chmod(join(dir, "bin", "run.sh"), 0o755);
  await switchCurrent(paths, seed.version, "seed");
  return true;
}
