import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll } from "vitest";
import { createTemplate, type DatabaseTemplate } from "@molt/db";
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
