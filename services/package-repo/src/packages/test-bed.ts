import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Objm, StorageType, type ObjectStore } from "@nats-io/obj";
import { connect } from "@nats-io/transport-node";
import { OBJ_PACKAGES } from "@molt/contracts";
import { createEventStore, ensureEventStream, type EventStore } from "@molt/event-store";
import { createLogger, parseTokens } from "@molt/runtime";
import { startNatsServer } from "@molt/testkit";
import { buildApp, type PackageRepoDeps } from "./app.js";

/** What a test file chooses for its package-repo app; the rest is the same in every test. */
export interface TestAppOptions {
  /** Token → who and what role, as a token file holds them. */
  tokens: Record<string, { actor: string; role: "viewer" | "operator" | "admin" }>;
  dataDir: string;
  publicUrl: string;
  maxPackageBytes: number;
  publisherKeys: PackageRepoDeps["publisherKeys"];
  signer: PackageRepoDeps["signer"];
}

/** A package-repo test's bus and files: a real nats-server with the event stream and the packages object store, and a temp dir. */
export interface RepoTestBed {
  readonly store: EventStore;
  readonly objects: ObjectStore;
  /** The test file's own temp dir, removed by `close`. */
  readonly work: string;
  /** A package-repo app on this bus, logging at warn, with the services' archive limits (1,000 entries, 64 MiB unpacked). */
  app(opts: TestAppOptions): ReturnType<typeof buildApp>;
  /** Stops the bus and removes the temp dir (the apps are the test's to close first). */
  close(): Promise<void>;
}

export async function startRepoTestBed(name: string): Promise<RepoTestBed> {
  const server = await startNatsServer();
  const nc = await connect({ servers: server.url });
  await ensureEventStream(nc);
  const store = createEventStore(nc);
  const objects = await new Objm(nc).create(OBJ_PACKAGES, { storage: StorageType.File });
  const work = await mkdtemp(join(tmpdir(), `molt-${name}-`));
  return {
    store,
    objects,
    work,
    app({ tokens, ...opts }) {
      const logger = createLogger("package-repo-test");
      logger.level = "warn";
      return buildApp({
        ...opts,
        logger,
        tokens: parseTokens(JSON.stringify(tokens), "test"),
        store,
        objects,
        archiveLimits: { maxEntries: 1000, maxUnpackedBytes: 64 * 1024 * 1024 },
      });
    },
    async close() {
      await nc.close();
      await server.stop();
      await rm(work, { recursive: true, force: true });
    },
  };
}
