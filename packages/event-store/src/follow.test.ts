import { startNatsServer, type NatsServer } from "@molt/testkit";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { followStream } from "./follow.js";
import { ensureEventStream } from "./stream.js";

let server: NatsServer;
let nc: NatsConnection;

beforeAll(async () => {
  server = await startNatsServer();
  nc = await connect({ servers: server.url });
  await ensureEventStream(nc, { stream: "FOLLOW_EMPTY", subjects: ["follow.empty.>"] });
});
afterAll(async () => {
  await nc?.close();
  await server?.stop();
});

describe("followStream", () => {
  it("[security] stop() right after start, before the consumer exists, returns (it waited forever: a projector rebuild on an empty stream hung on it)", async () => {
    for (const fromSeq of [1, 5]) {
      const seen: number[] = [];
      const sub = followStream(nc, { stream: "FOLLOW_EMPTY", filter: "follow.empty.>", fromSeq, handler: (m) => void seen.push(m.seq) });
      const stopped = await Promise.race([sub.stop().then(() => true), new Promise<false>((r) => setTimeout(() => r(false), 5_000))]);
      expect(stopped, `fromSeq ${fromSeq}`).toBe(true);
      expect(seen).toEqual([]);
    }
  });
});
