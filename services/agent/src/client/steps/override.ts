import { mkdir, rename, rm, utimes } from "node:fs/promises";
import { fileExists, fsyncDir } from "../../host/durable.js";
import { installedVersion, switchCurrent } from "../../host/layout.js";
import { extractArchive } from "../extract.js";
import { writeSwitchRecord } from "../recovery.js";
import type { StepContext, StepResult } from "../machine.js";
import type { PackageManifest } from "@molt/contracts";
import type { ExtractLimits } from "../extract.js";
import { archivePath, extractPath } from "../staging.js";

/**
 * OVERRIDE: extract into staging (checked and bounded), fsync the tree, rename it to
 * versions/<version>, then switch `current` atomically. Until the switch the old version is
 * untouched; the deadline is checked once more right before it. The switch record is written
 * first, so a crash between the switch and the run's confirmation rolls the switch back.
 */
export async function override({ input, facts, signal }: StepContext): Promise<StepResult> {
  const { task, paths } = input;
  if (task.package === undefined) throw new Error(`a ${task.kind} task has no package to install`);
  const { version } = task;
  const extracted = extractPath(paths, task.taskId);
  await rm(extracted, { recursive: true, force: true });
  const summary = await extractArchive(archivePath(paths, task.package.sha256), extracted, limitsOf(facts.manifest, input.limits), { signal, onEntry: () => input.crash("extract") });
  const target = paths.version(version);
  const installed = await installedVersion(input.root, task.component);
  if (await fileExists(target)) {
    if (installed === version) {
      // The live version is never replaced under running code; it already is what we want.
      await rm(extracted, { recursive: true, force: true });
      return { detail: `version ${version} already current` };
    }
    await rm(target, { recursive: true, force: true }); // left by an earlier attempt, not live
  }
  await mkdir(paths.versions, { recursive: true });
  await rename(extracted, target);
  // mtime = install time: pruning keeps the most recently installed versions.
  const now = input.now();
  await utimes(target, now, now);
  await fsyncDir(paths.versions);
  input.crash("override:renamed");
  signal.throwIfAborted();
  // Recorded before the switch: until the run confirms the new version, a crash rolls it back.
  await writeSwitchRecord(paths, { taskId: task.taskId, from: facts.previousVersion, to: version });
  await switchCurrent(paths, version, task.taskId, () => input.crash("switch:linked"));
  input.crash("override:switched");
  return { detail: `${summary.files} files, ${summary.bytes} bytes; current → versions/${version}`, facts: { switched: true } };
}

/** The signed manifest's counts bound the extraction exactly; without one, the host's defaults. */
function limitsOf(manifest: PackageManifest | null, defaults: ExtractLimits): ExtractLimits {
  return manifest ? { maxEntries: manifest.entries, maxBytes: manifest.unpackedSize } : defaults;
}
