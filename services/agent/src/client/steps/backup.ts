import { mkdir } from "node:fs/promises";
import { installedVersion } from "../../host/layout.js";
import type { StepContext, StepResult } from "../machine.js";

/**
 * BACKUP: records the version running now. versions/<previous> is kept as it is (a new version
 * goes into its own dir), so there is nothing to copy; shared/ must exist before a version relies on it.
 */
export async function backup({ input }: StepContext): Promise<StepResult> {
  const previousVersion = await installedVersion(input.root, input.task.component);
  await mkdir(input.paths.shared, { recursive: true });
  await mkdir(input.paths.staging, { recursive: true });
  return { detail: previousVersion ? `previous version ${previousVersion}` : "no previous version", facts: { previousVersion } };
}
