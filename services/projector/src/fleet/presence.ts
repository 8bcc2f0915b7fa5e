import { Kvm, type KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { decodeHostToken, KV_PRESENCE } from "@molt/contracts";
import type { Logger } from "@molt/runtime";

/** Who is heartbeating: what the fleet view adds to the hosts' events. */
export interface Presence {
  /** When the host's last heartbeat reached the bus (server time), if known. */
  lastSeen(hostId: string): Date | undefined;
  /** Hosts whose last heartbeat is within the grace period at `now`. */
  onlineHosts(now: Date): string[];
  isOnline(hostId: string, now: Date): boolean;
  stop(): Promise<void>;
}

/**
 * Follows KV `molt_presence` (feedback's: one key per host, refreshed by each heartbeat, the
 * bucket's TTL is the grace period) with one watcher, keeping each host's last heartbeat time in
 * memory. Aged-out keys leave no marker, so "online" is computed from the time and the TTL rather
 * than from deletes. The bucket is feedback's to create: until it exists, this retries.
 */
export function watchPresence(nc: NatsConnection, logger: Logger, opts: { retryMs?: number } = {}): Presence {
  const seen = new Map<string, Date>();
  let graceMs = Number.POSITIVE_INFINITY;
  let stopped = false;
  let stopWatch: (() => void) | undefined;
  const retryMs = opts.retryMs ?? 1_000;

  const run = async () => {
    while (!stopped) {
      let kv: KV;
      try {
        kv = await new Kvm(nc).open(KV_PRESENCE);
        const status = await kv.status();
        // The TTL is in milliseconds; 0 means keys never age out.
        graceMs = status.ttl > 0 ? status.ttl : Number.POSITIVE_INFINITY;
      } catch (err) {
        logger.debug({ err }, "presence bucket not there yet; retrying");
        await new Promise((r) => setTimeout(r, retryMs));
        continue;
      }
      try {
        const watch = await kv.watch({ key: ">" });
        stopWatch = () => watch.stop();
        for await (const e of watch) {
          let hostId: string;
          try {
            hostId = decodeHostToken(e.key);
          } catch {
            continue;
          }
          if (e.operation === "PUT") seen.set(hostId, e.created);
          else seen.delete(hostId);
        }
      } catch (err) {
        if (!stopped) logger.warn({ err }, "presence watch ended; watching again");
      }
      if (!stopped) await new Promise((r) => setTimeout(r, retryMs));
    }
  };
  const done = run();

  const isOnline = (hostId: string, now: Date) => {
    const at = seen.get(hostId);
    return at !== undefined && now.getTime() - at.getTime() < graceMs;
  };
  return {
    lastSeen: (hostId) => seen.get(hostId),
    isOnline,
    onlineHosts: (now) => [...seen.keys()].filter((h) => isOnline(h, now)),
    async stop() {
      stopped = true;
      stopWatch?.();
      await done;
    },
  };
}
