import { readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { fsyncDir } from "../../host/durable.js";
import type { StepContext, StepResult } from "../machine.js";

/**
 * The removal of an uninstall task (journaled as `override`: it is the step that changes the
 * files): `current` first (from then on the component is not installed), then everything else
 * in the component dir except the lock this run holds.
 */
export async function remove({ input }: StepContext): Promise<StepResult> {
  const { paths } = input;
  await rm(paths.current, { force: true });
  await fsyncDir(paths.dir);
  const removed: string[] = [];
  for (const name of await readdir(paths.dir)) {
    if (join(paths.dir, name) === paths.lock) continue;
    await rm(join(paths.dir, name), { recursive: true, force: true });
    removed.push(name);
  }
  await fsyncDir(paths.dir);
  return { detail: `removed ${removed.sort().join(", ") || "nothing"}` };
}
