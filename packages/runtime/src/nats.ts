import { connect, type NatsConnection } from "@nats-io/transport-node";

export type { NatsConnection } from "@nats-io/transport-node";

/** Connects with unlimited reconnects: services ride out a nats-server restart. */
export async function connectNats(opts: { url: string; name: string }): Promise<NatsConnection> {
  return connect({
    servers: opts.url.split(","),
    name: opts.name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
  });
}
