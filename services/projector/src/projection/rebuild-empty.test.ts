import { createLogger, parseTokens } from "@molt/runtime";
import { describe, expect, it } from "vitest";
import { buildApp } from "../app.js";
import { projectorTestBed } from "../testing.js";

/**
 * Found by the fuzz (issue 7, test/security/fuzz.test.ts): an admin's rebuild on a stream that
 * holds no commits yet never answered, and the projector stayed stopped behind it (its live
 * follower is stopped for the swap). Its own file: the stream must be empty.
 */
const ADMIN = "admin-token-rebuild-empty-01";
const tokens = parseTokens(JSON.stringify({ [ADMIN]: { actor: "ada", role: "admin" } }), "test");
const logger = createLogger("projector-test");
logger.level = "warn";
const bed = projectorTestBed();

describe("rebuild on an empty stream", () => {
  it("[security] answers, swaps, and the projector follows again: the next commit is projected", async () => {
    const db = await bed.template.fresh();
    const app = await buildApp({ db, store: bed.store, logger, tokens, retryMs: 50 });
    try {
      expect(await bed.store.lastSequence()).toBe(0);
      const res = await Promise.race([
        app.inject({ method: "POST", url: "/v1/projector/rebuild", headers: { authorization: `Bearer ${ADMIN}` } }),
        new Promise<null>((r) => setTimeout(() => r(null), 10_000)),
      ]);
      expect(res?.statusCode, "the rebuild answered within 10 s").toBe(200);
      const seq = (await bed.store.append("molt.es.host.h-1.meta", { commitId: "c-1", events: [{ id: "c-1/0", type: "HostRegistered", data: { hostId: "h-1", os: "linux", arch: "amd64", platform: "linux-amd64", labels: {} }, metadata: { occurredAt: new Date().toISOString(), actor: "host:h-1", correlationId: "c" } }] } as never, { expectedSequence: 0 })).seq;
      const status = async () => (await app.inject({ method: "GET", url: "/v1/projector/status", headers: { authorization: `Bearer ${ADMIN}` } })).json<{ checkpoint: number; error: string | null }>();
      for (let i = 0; i < 100 && (await status()).checkpoint < seq; i++) await new Promise((r) => setTimeout(r, 100));
      expect(await status()).toMatchObject({ checkpoint: seq, error: null });
    } finally {
      await app.close();
    }
  }, 30_000);
});
