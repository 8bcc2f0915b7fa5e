import { rm } from "node:fs/promises";
import { downloadPackage, type DownloadResult, mirrorList, viaMirror } from "../download.js";
import type { StepContext, StepResult } from "../machine.js";
import { checkRepositoryMetadata, checkSignedManifest } from "../signature.js";
import { archivePath } from "../staging.js";

/** Tries per mirror before the next source: a mirror that fails is left for the origin quickly. */
const MIRROR_ATTEMPTS = 2;

/**
 * DOWNLOAD: first the publisher's signature and that the manifest is this task's (nothing is
 * fetched for a package the host would refuse), then the package into staging, resuming a
 * partial file, bounded by its size, then size and sha256. Each mirror the host is configured
 * with is tried in turn, then the package URL's origin: a mirror that is down, answers an error
 * or serves other bytes (refused by the same checks as the origin's) only costs time.
 */
export async function download({ input, signal }: StepContext): Promise<StepResult> {
  const { task, mirror } = input;
  const pkg = task.package;
  if (pkg === undefined) throw new Error(`a ${task.kind} task has no package to download`);
  const manifest = checkSignedManifest(task, input.trust);
  const metadataVersion = await checkRepositoryMetadata(task, input.trust, input.root, input.now());
  const dest = archivePath(input.paths, pkg.sha256);
  const sources = [...mirrorList(mirror).map((m) => ({ url: viaMirror(pkg.url, m), mirror: true })), { url: pkg.url, mirror: false }];
  const skipped: string[] = [];
  let res: DownloadResult | undefined;
  let used = pkg.url;
  for (const [i, source] of sources.entries()) {
    try {
      res = await downloadPackage({
        url: source.url,
        dest,
        size: pkg.size,
        sha256: pkg.sha256,
        get: input.get,
        signal,
        attempts: source.mirror ? Math.min(MIRROR_ATTEMPTS, input.retry.attempts) : input.retry.attempts,
        retryDelayMs: input.retry.delayMs,
        onChunk: () => input.crash("download"),
      });
      used = source.url;
      break;
    } catch (err) {
      if (signal?.aborted || i === sources.length - 1) throw err;
      skipped.push(`${new URL(source.url).origin} failed (${(err as Error).message})`);
      // What that source left is not resumed from another: its bytes are suspect.
      await rm(dest, { force: true });
    }
  }
  if (res === undefined) throw new Error("no source to download from");
  const resumed = res.resumedBytes > 0 ? `, resumed ${res.resumedBytes} bytes` : "";
  const tries = res.tries > 1 ? `, ${res.tries} tries` : "";
  const via = used !== pkg.url ? ` via ${new URL(used).origin}` : "";
  const fellBack = skipped.length > 0 ? `; ${skipped.join("; ")}` : "";
  const signedBy = manifest ? `, signed by ${pkg.signed?.keyId ?? ""}${metadataVersion !== null ? `, metadata version ${metadataVersion}` : ""}` : "";
  return { detail: `${res.bytes} bytes, sha256 ok${signedBy}${resumed}${tries}${via}${fellBack}`, facts: { manifest } };
}
