import { createHash } from "node:crypto";
import { subjects, type ManifestSignature, type PackageManifest } from "@molt/contracts";
import { toEnvelopes, type CommandMeta, type EventBodyOf } from "@molt/domain";
import { ConcurrencyError, type EventStore } from "@molt/event-store";
import type { BlobStore } from "./blobs.js";
import { decidePublish, evolvePackage, variantKey, type PackageCatalog, type PackageState, type PublishedPackage } from "./catalog.js";

export interface PublishDeps {
  store: EventStore;
  catalog: PackageCatalog;
  blobs: BlobStore;
  /** A repository-side signer's metadata for the state after the publish, appended in the same commit. */
  metadataAfter?: (state: PackageState) => EventBodyOf<"PackageMetadataSigned"> | null;
}

export type PublishOutcome = { status: "published" | "replayed"; pkg: PublishedPackage };

const MAX_ATTEMPTS = 5;

/**
 * Commit ids name the decision, so a retried publish of the same bytes is deduplicated by
 * JetStream. Event ids add `/<n>` and are capped at 200 characters like commit ids.
 */
export function publishCommitId(m: Pick<PackageManifest, "component" | "version" | "platform" | "sha256">): string {
  const readable = `pkg:${m.component}:${m.version}:${m.platform}:${m.sha256.slice(0, 16)}`;
  if (readable.length <= 190) return readable;
  return `pkg:${createHash("sha256").update(`${m.component}\n${m.version}\n${m.platform}\n${m.sha256}`).digest("hex")}`;
}

/**
 * Publishes a package whose bytes sit verified in `file`: decide against the aggregate, store
 * the bytes (object store, then cache), append `PackagePublished` with the expected sequence.
 * A concurrent publish of the same component moves the sequence: re-read, re-decide, retry.
 * The bytes are stored before the event, so no event ever names bytes the origin lacks.
 */
export async function publishPackage(
  deps: PublishDeps,
  input: { manifest: PackageManifest; signature: ManifestSignature | null; file: string; meta: CommandMeta },
): Promise<PublishOutcome> {
  const { manifest, meta } = input;
  const signed = input.signature ?? {};
  const subject = subjects.package(manifest.component);
  const commitId = publishCommitId(manifest);
  let stored = false;
  for (let attempt = 1; ; attempt++) {
    const snap = await deps.catalog.current(manifest.component);
    const decision = decidePublish({ manifest, ...signed }, snap.state);
    if (decision.kind === "replay") return { status: "replayed", pkg: decision.existing };
    if (!stored) {
      await deps.blobs.adopt(input.file, manifest.sha256, manifest.size);
      stored = true;
    }
    const events: (EventBodyOf<"PackagePublished"> | EventBodyOf<"PackageMetadataSigned">)[] = [...decision.events];
    // The metadata describes the aggregate as this publish leaves it.
    const metadata = deps.metadataAfter?.(evolvePackage(snap.state, toEnvelopes(decision.events, meta, commitId)[0]!, snap.seq + 1));
    if (metadata) events.push(metadata);
    const envelopes = toEnvelopes(events, meta, commitId);
    try {
      const result = await deps.store.append(subject, { commitId, events: envelopes }, { expectedSequence: snap.seq });
      const key = variantKey(manifest.version, manifest.platform);
      if (!result.duplicate) {
        // What this commit leaves, folded here, not read back: on a replicated stream the read may
        // be answered by a replica that has not stored the commit yet (the 3-node bed's uploads
        // answered 500 "cannot read it back" about 1 in 10 times).
        const after = envelopes.reduce((state, e) => evolvePackage(state, e, result.seq), snap.state);
        return { status: "published", pkg: after.packages.get(key)! };
      }
      // Stored before (a retried request, or one that raced this): what the store holds, once the
      // replica that answers has it too.
      for (let wait = 0; wait < 8; wait++) {
        const pkg = (await deps.catalog.current(manifest.component)).state.packages.get(key);
        if (pkg) return { status: "replayed", pkg };
        await new Promise((r) => setTimeout(r, 25 * 2 ** wait));
      }
      throw new Error(`published ${commitId} at ${result.seq} but cannot read it back`);
    } catch (err) {
      if (err instanceof ConcurrencyError && attempt < MAX_ATTEMPTS) continue;
      throw err;
    }
  }
}

