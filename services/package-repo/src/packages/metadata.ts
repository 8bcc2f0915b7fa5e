import { canonicalJson, subjects, verifyRepositoryMetadata, type RepositoryMetadata, type SignedRepositoryMetadata, type TrustedKeys } from "@molt/contracts";
import { ConflictError, NotFoundError, toEnvelopes, type CommandMeta, type EventBodyOf } from "@molt/domain";
import { ConcurrencyError, type EventStore } from "@molt/event-store";
import { DEFAULT_METADATA_EXPIRY_DAYS, expiresIn, sortEntries } from "@molt/publisher";
import { HttpError } from "@molt/runtime";
import { evolvePackage, variantKey, type PackageCatalog, type PackageState, type PublishedPackage } from "./catalog.js";
import type { ManifestSigner } from "./signing.js";

export interface YankCommand {
  component: string;
  version: string;
  platform?: string | undefined;
  reason: string;
}

export type YankDecision =
  | { kind: "yank"; events: [EventBodyOf<"PackageYanked">]; variants: PublishedPackage[] }
  | { kind: "replay"; variants: PublishedPackage[] };

/**
 * A yank stops new plans of the variants it names (the version, on one platform or all). Unknown
 * → 404; the same yank again (same reason) is a replay, so a retried request is answered as the
 * first; a yank of variants already yanked for another reason → 409.
 */
export function decideYank(command: YankCommand, state: PackageState): YankDecision {
  const variants = [...state.packages.values()].filter(
    (p) => p.version === command.version && (command.platform === undefined || p.platform === command.platform),
  );
  const what = `${command.component} ${command.version}${command.platform ? ` ${command.platform}` : ""}`;
  if (variants.length === 0) throw new NotFoundError(`${what} is not published`);
  const open = variants.filter((p) => p.yanked === undefined);
  if (open.length === 0) {
    if (variants.every((p) => p.yanked?.reason === command.reason)) return { kind: "replay", variants };
    throw new ConflictError(`${what} is already yanked (${variants[0]?.yanked?.reason ?? ""})`);
  }
  const { component, version, platform, reason } = command;
  return {
    kind: "yank",
    events: [{ type: "PackageYanked", data: { component, version, ...(platform !== undefined ? { platform } : {}), reason } }],
    variants: open,
  };
}

/** The state's variants as metadata entries: what a repository-side signer signs. */
export function metadataOfState(component: string, state: PackageState, expires: string): RepositoryMetadata {
  const packages = sortEntries(
    [...state.packages.values()].map((p) => ({ version: p.version, platform: p.platform, sha256: p.sha256, yanked: p.yanked !== undefined })),
  );
  return { component, version: (state.metadata?.metadata.version ?? 0) + 1, expires, packages };
}

/**
 * Takes a publisher's signed metadata document for the state it will describe (after the yank
 * it comes with, if any): a trusted, unrevoked key's signature (403), this component, a version
 * above the stored one (409: metadata never goes back), not expired, and every entry a published
 * variant with its sha256 and its yank as the repository records it (400), so hosts are never
 * told something the repository's own history contradicts.
 */
export function checkMetadata(
  signed: SignedRepositoryMetadata,
  component: string,
  state: PackageState,
  keys: TrustedKeys,
  now: Date,
): SignedRepositoryMetadata {
  const verdict = verifyRepositoryMetadata(signed.metadata, signed.signature, signed.keyId, keys);
  if (!verdict.ok) {
    if (verdict.reason === "malformed") throw new HttpError(400, "validation", `repository metadata: ${verdict.message}`);
    throw new HttpError(403, "signature_refused", `repository metadata refused (${verdict.reason}): ${verdict.message}`);
  }
  const m = verdict.metadata;
  if (m.component !== component) throw new HttpError(400, "validation", `repository metadata is for ${m.component}, not ${component}`);
  const stored = state.metadata?.metadata.version ?? 0;
  if (m.version <= stored)
    throw new ConflictError(`repository metadata version ${m.version} is not newer than the stored version ${stored}`);
  if (Date.parse(m.expires) <= now.getTime()) throw new HttpError(400, "validation", `repository metadata expired at ${m.expires}`);
  const wrong: string[] = [];
  for (const e of m.packages) {
    const p = state.packages.get(`${e.version} ${e.platform}`);
    if (!p) wrong.push(`${e.version} ${e.platform} is not published`);
    else if (p.sha256 !== e.sha256) wrong.push(`${e.version} ${e.platform} has sha256 ${p.sha256}, not ${e.sha256}`);
    else if ((p.yanked !== undefined) !== e.yanked) wrong.push(`${e.version} ${e.platform} is ${p.yanked ? "" : "not "}yanked`);
  }
  if (wrong.length > 0) throw new HttpError(400, "validation", `repository metadata disagrees with the repository: ${wrong.join("; ")}`);
  return { metadata: m, signature: signed.signature, keyId: verdict.keyId };
}

export interface MetadataDeps {
  store: EventStore;
  catalog: PackageCatalog;
  /** Keys a publisher's metadata signature must verify against. */
  keys: TrustedKeys;
  /** A repository-side signer signs the metadata when the request brings none (the demo). */
  signer: ManifestSigner | null;
  now: () => Date;
}

type PackageBody = EventBodyOf<"PackageYanked"> | EventBodyOf<"PackageMetadataSigned">;

const MAX_ATTEMPTS = 5;

/**
 * Decides against the aggregate and appends with its expected sequence; a concurrent command on
 * the same component moves the sequence: re-read, re-decide, retry. `decide` returns either
 * the commit to append or an answer that needs no commit (a replay).
 */
async function decideAndAppend<T>(
  deps: MetadataDeps,
  component: string,
  meta: CommandMeta,
  decide: (state: PackageState) => { commitId: string; events: PackageBody[]; answer: T } | { replay: T },
): Promise<{ status: "appended" | "replayed"; answer: T }> {
  const subject = subjects.package(component);
  for (let attempt = 1; ; attempt++) {
    const snap = await deps.catalog.current(component);
    const decision = decide(snap.state);
    if ("replay" in decision) return { status: "replayed", answer: decision.replay };
    try {
      const result = await deps.store.append(subject, { commitId: decision.commitId, events: toEnvelopes(decision.events, meta, decision.commitId) }, { expectedSequence: snap.seq });
      return { status: result.duplicate ? "replayed" : "appended", answer: decision.answer };
    } catch (err) {
      if (err instanceof ConcurrencyError && attempt < MAX_ATTEMPTS) continue;
      throw err;
    }
  }
}

/** The metadata event for `after`: the publisher's document checked, or one signed here, or none. */
function metadataEvent(deps: MetadataDeps, component: string, after: PackageState, given: SignedRepositoryMetadata | undefined): EventBodyOf<"PackageMetadataSigned"> | null {
  if (given) return { type: "PackageMetadataSigned", data: { component, signed: checkMetadata(given, component, after, deps.keys, deps.now()) } };
  if (deps.signer) return serverSignedMetadata(deps.signer, component, after, deps.now());
  if (deps.keys.size > 0)
    throw new HttpError(400, "validation", "this repository takes publisher-signed metadata only: send the signed metadata marking the yank (molt-publish yank)");
  return null;
}

/** What a repository-side signer appends: the state's metadata, good for the default expiry. */
export function serverSignedMetadata(signer: ManifestSigner, component: string, state: PackageState, now: Date): EventBodyOf<"PackageMetadataSigned"> {
  const metadata = metadataOfState(component, state, expiresIn(DEFAULT_METADATA_EXPIRY_DAYS, now));
  return { type: "PackageMetadataSigned", data: { component, signed: { metadata, ...signer.signMetadata(metadata) } } };
}

export interface YankAnswer {
  variants: PublishedPackage[];
  metadataVersion: number | null;
}

/** Yanks a version (one platform or all) with the metadata that tells hosts, in one commit. */
export function yankPackage(deps: MetadataDeps, command: YankCommand & { metadata?: SignedRepositoryMetadata | undefined }, meta: CommandMeta) {
  return decideAndAppend<YankAnswer>(deps, command.component, meta, (state) => {
    const decision = decideYank(command, state);
    if (decision.kind === "replay") return { replay: { variants: decision.variants, metadataVersion: state.metadata?.metadata.version ?? null } };
    const commitId = `yank:${command.component}:${command.version}:${command.platform ?? "*"}`;
    const after = evolvePackage(state, toEnvelopes(decision.events, meta, commitId)[0]!, 0);
    const metadata = metadataEvent(deps, command.component, after, command.metadata);
    const variants = decision.variants.map((v) => after.packages.get(variantKey(v.version, v.platform)) ?? v);
    return { commitId, events: [...decision.events, ...(metadata ? [metadata] : [])], answer: { variants, metadataVersion: metadata?.data.signed.metadata.version ?? null } };
  });
}

/** Stores a publisher's newer signed metadata for a component (after a push). The same document again is a replay. */
export function putMetadata(deps: MetadataDeps, component: string, signed: SignedRepositoryMetadata, meta: CommandMeta) {
  return decideAndAppend<SignedRepositoryMetadata>(deps, component, meta, (state) => {
    const stored = state.metadata;
    if (stored && stored.signature === signed.signature && canonicalJson(stored.metadata) === canonicalJson(signed.metadata)) return { replay: stored };
    const checked = checkMetadata(signed, component, state, deps.keys, deps.now());
    const commitId = `meta:${component}:${checked.metadata.version}`;
    return { commitId, events: [{ type: "PackageMetadataSigned", data: { component, signed: checked } }], answer: checked };
  });
}
