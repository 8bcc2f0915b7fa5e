import { rm } from "node:fs/promises";
import { Readable } from "node:stream";
import type { ObjectStore } from "@nats-io/obj";
import { z } from "zod";
import {
  ComponentName,
  PackageManifest,
  PackageUploadQuery,
  PackageYankBody,
  SignedRepositoryMetadata,
  Platform,
  PUBLISHER_KEY_ID_HEADER,
  PUBLISHER_SIGNATURE_HEADER,
  Sha256,
  verifyManifest,
  Version,
  type ManifestSignature,
  type PackageInfo,
  type PackageList,
  type TrustedKeys,
} from "@molt/contracts";
import type { EventStore } from "@molt/event-store";
import { inspectArchive, type ArchiveLimits } from "@molt/publisher";
import { createHttpApp, HttpError, type CommandLog, type Logger, type TokenMap } from "@molt/runtime";
import { createBlobStore } from "./blobs.js";
import { createPackageCatalog, variantKey, type PublishedPackage } from "./catalog.js";
import { serveBlob } from "./download.js";
import { putMetadata, serverSignedMetadata, yankPackage, type MetadataDeps } from "./metadata.js";
import { publishPackage } from "./publish.js";
import type { ManifestSigner } from "./signing.js";
import { PackageTooLargeError, receiveToFile, refuseOversizeUpload, type LingerLimits } from "./upload.js";

export interface PackageRepoDeps {
  logger: Logger;
  tokens: TokenMap;
  store: EventStore;
  objects: ObjectStore;
  /** Root of the local cache (`<dataDir>/cache/<sha256>`) and its temp files (`<dataDir>/tmp`). */
  dataDir: string;
  /** Base URL hosts download from; PackageInfo.url is built on it. */
  publicUrl: string;
  maxPackageBytes: number;
  archiveLimits: ArchiveLimits;
  /**
   * Publisher keys an upload's signature must verify against. When any are set, an upload
   * without a signature is refused unless `signer` signs it here.
   */
  publisherKeys: TrustedKeys;
  /** Server-side signer for uploads that come unsigned (the demo); null leaves them unsigned. */
  signer: ManifestSigner | null;
  /** How much of a refused oversize upload is still read so the client sees the 413. */
  linger?: LingerLimits;
  now?: () => Date;
  /** Where uploads are recorded as commands (MOLT_AUDIT). */
  commands?: CommandLog;
}

// Platform names end up in commit and event ids, which are bounded: keep them short at the edge.
const UploadQuery = PackageUploadQuery.extend({ platform: Platform.max(32, "platform must be at most 32 characters") });
const ComponentParams = z.object({ component: ComponentName });
const VariantParams = z.object({ component: ComponentName, version: Version, platform: Platform });
const VersionParams = z.object({ component: ComponentName, version: Version });
const BlobParams = z.object({ sha256: Sha256 });

/** The only request bodies this service takes are package archives. */
const UPLOAD_TYPES = ["application/gzip", "application/x-gzip", "application/octet-stream"];

/** The package-repo HTTP app: upload, list, describe, download. `listen` is the caller's business. */
export function buildApp(deps: PackageRepoDeps) {
  // Uploads (accepted or refused) and 401/403 refusals are audited as commands before the answer.
  const app = createHttpApp({ logger: deps.logger, tokens: deps.tokens, ...(deps.commands ? { commands: deps.commands } : {}) });
  const blobs = createBlobStore({ dataDir: deps.dataDir, objects: deps.objects, logger: deps.logger });
  const catalog = createPackageCatalog(deps.store);
  const publicUrl = deps.publicUrl.replace(/\/+$/, "");
  const now = deps.now ?? (() => new Date());

  // Hand the body through as a stream: an upload may be hundreds of MiB and is never buffered.
  // JSON (the runtime's guarded parser) is for yanks and metadata; an upload of JSON is 415.
  app.removeContentTypeParser("text/plain");
  app.addContentTypeParser(UPLOAD_TYPES, (_req, payload, done) => done(null, payload));
  const metadataDeps: MetadataDeps = { store: deps.store, catalog, keys: deps.publisherKeys, signer: deps.signer, now };
  const signer = deps.signer;

  const infoOf = (p: PublishedPackage): PackageInfo => ({
    component: p.component,
    version: p.version,
    platform: p.platform,
    sha256: p.sha256,
    size: p.size,
    url: `${publicUrl}/v1/packages/${[p.component, p.version, p.platform].map(encodeURIComponent).join("/")}/download`,
  });
  const detailOf = (p: PublishedPackage) => ({
    ...infoOf(p),
    manifest: p.manifest,
    ...(p.signature !== undefined ? { signature: p.signature, keyId: p.keyId } : {}),
    publishedAt: p.publishedAt,
    ...(p.yanked ? { yanked: p.yanked } : {}),
  });

  /**
   * The signature the event will carry. A publisher's (two headers) is checked against the
   * manifest recomputed here from the bytes, so it signs exactly what hosts will download; a
   * refusal is answered before anything is stored. Unsigned uploads are signed by the
   * server-side signer when there is one, refused when publisher keys are configured, and
   * published unsigned otherwise (hosts refuse those anyway).
   */
  const signatureFor = (manifest: PackageManifest, headers: Record<string, string | string[] | undefined>): ManifestSignature | null => {
    const signature = headers[PUBLISHER_SIGNATURE_HEADER];
    const keyId = headers[PUBLISHER_KEY_ID_HEADER];
    if (signature === undefined && keyId === undefined) {
      if (deps.signer) return deps.signer.sign(manifest);
      if (deps.publisherKeys.size > 0)
        throw new HttpError(400, "validation", `this repository takes publisher-signed packages only: send ${PUBLISHER_SIGNATURE_HEADER} and ${PUBLISHER_KEY_ID_HEADER} (molt-publish push)`);
      return null;
    }
    if (typeof signature !== "string" || typeof keyId !== "string")
      throw new HttpError(400, "validation", `send ${PUBLISHER_SIGNATURE_HEADER} and ${PUBLISHER_KEY_ID_HEADER} together, once each`);
    const verdict = verifyManifest(manifest, signature, keyId, deps.publisherKeys);
    if (verdict.ok) return { signature, keyId: verdict.keyId };
    switch (verdict.reason) {
      case "malformed":
        throw new HttpError(400, "validation", `publisher signature: ${verdict.message}`);
      case "unknown-key":
      case "revoked-key":
      case "bad-signature":
        throw new HttpError(403, "signature_refused", `publisher signature refused (${verdict.reason}): ${verdict.message}`);
      default:
        return verdict.reason satisfies never;
    }
  };

  app.post("/v1/packages", { config: { auditKind: "upload-package" }, schema: { querystring: UploadQuery } }, async (req, reply) => {
    req.audit.target = `${req.query.component}@${req.query.version}/${req.query.platform}`;
    const { component, version, platform } = req.query;
    // The shared auth hook has already refused anonymous and viewer writes; this narrows the type.
    const principal = req.principal;
    if (!principal) throw new HttpError(401, "unauthorized", "missing bearer token");
    const body: unknown = req.body;
    if (!(body instanceof Readable))
      throw new HttpError(415, "unsupported_media_type", `send the archive as ${UPLOAD_TYPES.join(" or ")}`);
    const declared = Number(req.headers["content-length"]);
    if (Number.isFinite(declared) && declared > deps.maxPackageBytes) {
      refuseOversizeUpload(reply, body, new PackageTooLargeError(deps.maxPackageBytes), deps.linger);
      return reply;
    }
    const file = await blobs.tempPath("upload");
    try {
      let received: { sha256: string; size: number };
      try {
        received = await receiveToFile(body, file, deps.maxPackageBytes);
      } catch (err) {
        if (!(err instanceof PackageTooLargeError)) throw err;
        refuseOversizeUpload(reply, body, err, deps.linger);
        return reply;
      }
      const archive = await inspectArchive(file, deps.archiveLimits);
      const manifest = PackageManifest.parse({ component, version, platform, ...received, ...archive });
      const signature = signatureFor(manifest, req.headers);
      const outcome = await publishPackage(
        { store: deps.store, catalog, blobs, ...(signer ? { metadataAfter: (state) => serverSignedMetadata(signer, component, state, now()) } : {}) },
        { manifest, signature, file, meta: { now: now().toISOString(), actor: principal.actor, correlationId: req.id } },
      );
      req.log.info(
        { component, version, platform, sha256: manifest.sha256, size: manifest.size, keyId: signature?.keyId ?? null, outcome: outcome.status },
        outcome.status === "published" ? "package published" : "package upload replayed",
      );
      return await reply.code(outcome.status === "published" ? 201 : 200).send(infoOf(outcome.pkg));
    } finally {
      // Gone already when it was moved into the cache.
      await rm(file, { force: true });
    }
  });

  app.post(
    "/v1/packages/:component/:version/yank",
    { config: { auditKind: "yank-package" }, schema: { params: VersionParams, body: PackageYankBody } },
    async (req, reply) => {
      const { component, version } = req.params;
      const { reason, platform, metadata } = req.body;
      req.audit.target = `${component}@${version}${platform ? `/${platform}` : ""}`;
      const principal = req.principal;
      if (!principal) throw new HttpError(401, "unauthorized", "missing bearer token");
      const meta = { now: now().toISOString(), actor: principal.actor, correlationId: req.id };
      const { status, answer } = await yankPackage(metadataDeps, { component, version, platform, reason, metadata }, meta);
      req.log.info({ component, version, platform: platform ?? null, reason, outcome: status }, status === "appended" ? "package yanked" : "package yank replayed");
      return await reply.code(status === "appended" ? 201 : 200).send({
        component,
        version,
        ...(platform !== undefined ? { platform } : {}),
        reason,
        yanked: answer.variants.map(detailOf),
        metadataVersion: answer.metadataVersion,
      });
    },
  );

  // Hosts and mirrors read it without a token, like downloads: it is signed by a publisher.
  app.get("/v1/packages/:component/metadata", { config: { auth: false }, schema: { params: ComponentParams } }, async (req) => {
    const { state } = await catalog.current(req.params.component);
    if (!state.metadata) throw new HttpError(404, "not_found", `no signed metadata for component ${req.params.component}`);
    return state.metadata;
  });

  app.put(
    "/v1/packages/:component/metadata",
    { config: { auditKind: "sign-package-metadata" }, schema: { params: ComponentParams, body: SignedRepositoryMetadata } },
    async (req, reply) => {
      const { component } = req.params;
      req.audit.target = component;
      const principal = req.principal;
      if (!principal) throw new HttpError(401, "unauthorized", "missing bearer token");
      const meta = { now: now().toISOString(), actor: principal.actor, correlationId: req.id };
      const { status, answer } = await putMetadata(metadataDeps, component, req.body, meta);
      return await reply.code(status === "appended" ? 201 : 200).send(answer);
    },
  );

  app.get("/v1/packages/:component", { schema: { params: ComponentParams } }, async (req): Promise<PackageList> => {
    const { component } = req.params;
    const { state } = await catalog.current(component);
    if (state.packages.size === 0) throw new HttpError(404, "not_found", `no packages published for component ${component}`);
    const packages = [...state.packages.values()].sort((a, b) => b.seq - a.seq).map(detailOf);
    return { component, packages };
  });

  app.get("/v1/packages/:component/:version/:platform", { schema: { params: VariantParams } }, async (req) => {
    const { component, version, platform } = req.params;
    // Caught up, not a cache hit: the answer says whether the variant is yanked.
    const pkg = (await catalog.current(component)).state.packages.get(variantKey(version, platform));
    if (!pkg) throw new HttpError(404, "not_found", `${component} ${version} ${platform} is not published`);
    return detailOf(pkg);
  });

  // Hosts download without a token: they hold no operator credentials, and the bytes are
  // checked on the host against the sha256 and the signed manifest, whoever served them.
  app.route({
    method: ["GET", "HEAD"],
    url: "/v1/packages/:component/:version/:platform/download",
    config: { auth: false },
    schema: { params: VariantParams },
    handler: async (req, reply) => {
      const { component, version, platform } = req.params;
      const pkg = await catalog.find(component, version, platform);
      if (!pkg) throw new HttpError(404, "not_found", `${component} ${version} ${platform} is not published`);
      return serveBlob(req, reply, blobs, pkg.sha256);
    },
  });

  app.route({
    method: ["GET", "HEAD"],
    url: "/v1/blobs/:sha256",
    config: { auth: false },
    schema: { params: BlobParams },
    handler: (req, reply) => serveBlob(req, reply, blobs, req.params.sha256),
  });

  return app;
}
