import { readFileSync } from "node:fs";
import { Objm, StorageType } from "@nats-io/obj";
import { OBJ_PACKAGES } from "@molt/contracts";
import { createEventStore, ensureAuditStream, ensureEventStream } from "@molt/event-store";
import { commandLog, connectNats, natsSecurityFromEnv, createLogger, installShutdown, loadConfig, loadTokens, startTracing } from "@molt/runtime";
import { Config, loadPublisherKeys } from "./config.js";
import { buildApp } from "./packages/app.js";
import { sweepTemp } from "./packages/blobs.js";
import { createManifestSigner } from "./packages/signing.js";

// Composition root: read the environment, connect, wire the app, listen.
const config = loadConfig(Config);
const logger = createLogger("package-repo");
// OpenTelemetry: on only when OTEL_EXPORTER_OTLP_ENDPOINT is set; spans flushed at shutdown (closed last).
const stopTracing = await startTracing("package-repo");
const tokens = loadTokens();
const publisherKeys = loadPublisherKeys(config);
const signer = config.MOLT_PUBLISHER_KEY_FILE ? createManifestSigner(readFileSync(config.MOLT_PUBLISHER_KEY_FILE, "utf8")) : null;

const nc = await connectNats({ url: config.MOLT_NATS_URL, name: "package-repo", ...natsSecurityFromEnv(config) });
await ensureEventStream(nc, { replicas: config.MOLT_STREAM_REPLICAS });
await ensureAuditStream(nc, { replicas: config.MOLT_STREAM_REPLICAS });
// create() opens an existing bucket as it is (its replicas are the operator's to change).
const objects = await new Objm(nc).create(OBJ_PACKAGES, { storage: StorageType.File, replicas: config.MOLT_STREAM_REPLICAS });
const swept = await sweepTemp(config.MOLT_DATA_DIR, 60 * 60 * 1000);

const app = buildApp({
  logger,
  tokens,
  store: createEventStore(nc, { ackLog: config.MOLT_ACK_LOG }),
  objects,
  dataDir: config.MOLT_DATA_DIR,
  publicUrl: config.MOLT_PUBLIC_URL,
  maxPackageBytes: config.MOLT_MAX_PACKAGE_BYTES,
  archiveLimits: { maxEntries: config.MOLT_MAX_ARCHIVE_ENTRIES, maxUnpackedBytes: config.MOLT_MAX_UNPACKED_BYTES },
  publisherKeys,
  signer,
  commands: commandLog(nc, logger),
});
installShutdown(logger, [stopTracing, () => nc.drain(), () => app.close()]);
const url = await app.listen({ host: config.MOLT_HTTP_HOST, port: config.MOLT_HTTP_PORT });
logger.info(
  { url, publicUrl: config.MOLT_PUBLIC_URL, dataDir: config.MOLT_DATA_DIR, keyId: signer?.keyId ?? null, publisherKeys: [...publisherKeys.keys()], sweptTempFiles: swept },
  "listening",
);
