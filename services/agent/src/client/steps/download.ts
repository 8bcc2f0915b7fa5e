import { downloadPackage, viaMirror } from "../download.js";
import type { StepContext, StepResult } from "../machine.js";
import { checkRepositoryMetadata, checkSignedManifest } from "../signature.js";
import { archivePath } from "../staging.js";

/**
 * DOWNLOAD: first the publisher's signature and that the manifest is this task's (nothing is
 * fetched for a package the host would refuse), then the package into staging, resuming a
 * partial file, bounded by its size, then size and sha256.
 */
export async function download({ input, signal }: StepContext): Promise<StepResult> {
  const { task, mirror } = input;
  const pkg = task.package;
  if (pkg === undefined) throw new Error(`a ${task.kind} task has no package to download`);
  const manifest = checkSignedManifest(task, input.trust);
  const metadataVersion = await checkRepositoryMetadata(task, input.trust, input.root, input.now());
  const url = viaMirror(pkg.url, mirror);
  const res = await downloadPackage({
    url,
    dest: archivePath(input.paths, pkg.sha256),
    size: pkg.size,
    sha256: pkg.sha256,
    get: input.get,
    signal,
    attempts: input.retry.attempts,
    retryDelayMs: input.retry.delayMs,
    onChunk: () => input.crash("download"),
  });
  const resumed = res.resumedBytes > 0 ? `, resumed ${res.resumedBytes} bytes` : "";
  const tries = res.tries > 1 ? `, ${res.tries} tries` : "";
  const via = mirror ? ` via ${new URL(url).origin}` : "";
  const signedBy = manifest ? `, signed by ${pkg.signed?.keyId ?? ""}${metadataVersion !== null ? `, metadata version ${metadataVersion}` : ""}` : "";
  return { detail: `${res.bytes} bytes, sha256 ok${signedBy}${resumed}${tries}${via}`, facts: { manifest } };
}
