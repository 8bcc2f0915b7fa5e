import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm, type KV, type KvOptions } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";

export type { NatsConnection } from "@nats-io/transport-node";

/**
 * Connects with unlimited reconnects: services ride out a nats-server restart. `noAsyncTraces`:
 * nats.js otherwise builds an Error per request to keep its async stack (~45 % of client CPU in
 * the event-store benchmark; appends ~31k/s → ~40k/s without, docs/benchmarks.md); errors
 * keep their message and code.
 */
export async function connectNats(opts: { url: string; name: string; noAsyncTraces?: boolean }): Promise<NatsConnection> {
  return connect({
    servers: opts.url.split(","),
    name: opts.name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    noAsyncTraces: opts.noAsyncTraces ?? true,
  });
}

/**
 * Opens a KV bucket, creating it only when missing: an existing bucket keeps the replicas and
 * TTL it was made with (changing them is an operator's decision, not a side effect of a start).
 */
export async function ensureBucket(nc: NatsConnection, name: string, opts: Partial<KvOptions>): Promise<KV> {
  const kvm = new Kvm(nc);
  try {
    await (await jetstreamManager(nc)).streams.info(`KV_${name}`);
    return await kvm.open(name);
  } catch (err) {
    if ((err as Error).name !== "StreamNotFoundError") throw err;
    return kvm.create(name, opts);
  }
}
