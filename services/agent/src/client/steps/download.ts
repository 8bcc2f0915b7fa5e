import { downloadPackage, viaMirror } from "../download.js";
import type { StepContext, StepResult } from "../machine.js";
import { archivePath } from "../staging.js";

/** DOWNLOAD: the package into staging, resuming a partial file, bounded by its size, then sha256. */
export async function download({ input, signal }: StepContext): Promise<StepResult> {
  const { task, mirror } = input;
  const pkg = task.package;
  if (pkg === undefined) throw new Error(`a ${task.kind} task has no package to download`);
  const url = viaMirror(pkg.url, mirror);
  const res = await downloadPackage({
    url,
    dest: archivePath(input.paths, pkg.sha256),
    size: pkg.size,
    sha256: pkg.sha256,
    fetch: input.fetch,
    signal,
    onChunk: () => input.crash("download"),
  });
  const resumed = res.resumedBytes > 0 ? `, resumed ${res.resumedBytes} bytes` : "";
  const via = mirror ? ` via ${new URL(url).origin}` : "";
  return { detail: `${res.bytes} bytes, sha256 ok${resumed}${via}` };
}
