import { randomUUID } from "node:crypto";
import type { NatsConnection } from "@nats-io/transport-node";
import { waitFor } from "@molt/testkit";
import { expect } from "vitest";

/** The attempt fails: a permissions error, or no answer at all (a denied request is never delivered). */
export async function refused(attempt: () => Promise<unknown>): Promise<string> {
  try {
    await attempt();
  } catch (err) {
    const message = (err as Error).message;
    // Refused by the server, not failed for some other reason (a missing stream, a bad request).
    expect(message).toMatch(/permission|timeout|authorization|revoked/i);
    return message;
  }
  throw new Error("the attempt succeeded");
}

/**
 * Publishes `forbidden` then `canary` on `nc` and watches both with `admin`: once the canary
 * arrived, the forbidden message (sent before it) would have too if the server let it through.
 */
export async function publishBlocked(admin: NatsConnection, nc: NatsConnection, forbidden: string, canary: string): Promise<boolean> {
  // Messages are told apart by a tag: a host's own agent may heartbeat on the same subject all along.
  const seen: string[] = [];
  const sub = admin.subscribe(">", { callback: (_e, m) => void seen.push(`${m.subject} ${m.string()}`) });
  await admin.flush();
  const tag = randomUUID();
  nc.publish(forbidden, tag);
  nc.publish(canary, tag);
  await nc.flush().catch(() => undefined);
  await waitFor(`canary ${canary}`, () => (seen.includes(`${canary} ${tag}`) ? true : undefined), { timeoutMs: 10_000, intervalMs: 20 });
  sub.unsubscribe();
  return !seen.includes(`${forbidden} ${tag}`);
}
