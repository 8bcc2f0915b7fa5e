import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll } from "vitest";
import { createPostgresTemplate, createTemplate, type DatabaseTemplate } from "@molt/db";
import { createEventStore, ensureEventStream, type EventStore } from "@molt/event-store";
import { parseTokens } from "@molt/runtime";
import { startNatsServer, type NatsServer } from "@molt/testkit";

export const VIEWER_TOKEN = "viewer-token-0123456789";
export const viewerTokens = parseTokens(JSON.stringify({ [VIEWER_TOKEN]: { actor: "vera", role: "viewer" } }), "test");
export const viewerHeaders = { authorization: `Bearer ${VIEWER_TOKEN}` };

export interface TestBed {
  server: NatsServer;
  nc: NatsConnection;
  store: EventStore;
  /** One PGlite for the file, cloned per test (a fresh PGlite costs seconds). */
  template: DatabaseTemplate;
}

/**
 * A test file's own nats-server with MOLT_EVENTS and a PGlite template, started before its tests
 * and stopped after them: the file's stream holds only what the file appends.
 */
export function projectorTestBed(): TestBed {
  const bed = {} as TestBed;
  beforeAll(async () => {
    [bed.server, bed.template] = await Promise.all([startNatsServer(), createTemplate()]);
    bed.nc = await connect({ servers: bed.server.url });
    await ensureEventStream(bed.nc);
    bed.store = createEventStore(bed.nc);
  });
  afterAll(async () => {
    await bed.template?.close();
    await bed.nc?.close();
    await bed.server?.stop();
  });
  return bed;
}

export type DatabaseKind = "pglite" | "postgres";

/**
 * The databases a projection test runs on, for `describe.each`: PGlite always, and the real
 * PostgreSQL that scripts/check.sh starts when `MOLT_TEST_DATABASE_URL` names it (CI runs both).
 * `MOLT_TEST_DATABASES=postgres` (or `pglite`) narrows the list. Each template lives for the file.
 */
export function testDatabases(): Array<[DatabaseKind, () => DatabaseTemplate]> {
  const url = process.env["MOLT_TEST_DATABASE_URL"];
  const only = process.env["MOLT_TEST_DATABASES"]?.split(",");
  const kinds = (["pglite", "postgres"] as const).filter((k) => (k === "pglite" || url) && (!only || only.includes(k)));
  return kinds.map((kind) => {
    let template: DatabaseTemplate | undefined;
    beforeAll(async () => {
      template = kind === "postgres" ? await createPostgresTemplate(url!) : await createTemplate();
    });
    afterAll(async () => {
      await template?.close();
    });
    return [
      kind,
      () => {
        if (!template) throw new Error(`the ${kind} template is not ready`);
        return template;
      },
    ];
  });
}
