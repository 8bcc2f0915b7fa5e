import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm, type KV, type KvOptions } from "@nats-io/kv";
import { readFileSync } from "node:fs";
import { connect, credsAuthenticator, type NatsConnection } from "@nats-io/transport-node";

export type { NatsConnection } from "@nats-io/transport-node";

/** How a process proves who it is to NATS and checks the server: all files, read at connect. */
export interface NatsSecurity {
  /** A NATS credentials file (user JWT + seed): the process's identity on the bus. */
  credsFile?: string | undefined;
  /** PEM CA bundle the server's certificate must chain to (turns TLS on). */
  caFile?: string | undefined;
  /** Client certificate and key, for servers that verify clients. */
  certFile?: string | undefined;
  keyFile?: string | undefined;
  /** Where replies come back (a host's identity may receive only on its own prefix). */
  inboxPrefix?: string | undefined;
}

/**
 * Connects with unlimited reconnects: services ride out a nats-server restart, and a first
 * connect that times out (a loaded machine, a server still starting) is retried too. Refused
 * credentials still fail it (the client gives up after the server refuses them twice).
 * `noAsyncTraces` (default on): nats.js otherwise builds an Error per request to keep its async
 * stack (~45 % of client CPU in the event-store benchmark; docs/benchmarks.md).
 */
export async function connectNats(opts: { url: string; name: string; noAsyncTraces?: boolean } & NatsSecurity): Promise<NatsConnection> {
  return connect({
    servers: opts.url.split(","),
    name: opts.name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    noAsyncTraces: opts.noAsyncTraces ?? true,
    waitOnFirstConnect: true,
    ...natsSecurityOptions(opts),
  });
}

/** The connect options for credentials, TLS and the inbox prefix (shared with clients that connect by hand). */
export function natsSecurityOptions(s: NatsSecurity) {
  const tls = s.caFile || s.certFile ? { ...(s.caFile ? { caFile: s.caFile } : {}), ...(s.certFile ? { certFile: s.certFile } : {}), ...(s.keyFile ? { keyFile: s.keyFile } : {}) } : undefined;
  return {
    ...(s.credsFile ? { authenticator: credsAuthenticator(readFileSync(s.credsFile)) } : {}),
    ...(tls ? { tls } : {}),
    ...(s.inboxPrefix ? { inboxPrefix: s.inboxPrefix } : {}),
  };
}

/** NatsSecurity from the env `natsEnv` parsed. */
export function natsSecurityFromEnv(env: { MOLT_NATS_CREDS?: string | undefined; MOLT_NATS_CA?: string | undefined; MOLT_NATS_CERT?: string | undefined; MOLT_NATS_KEY?: string | undefined }): NatsSecurity {
  return { credsFile: env.MOLT_NATS_CREDS, caFile: env.MOLT_NATS_CA, certFile: env.MOLT_NATS_CERT, keyFile: env.MOLT_NATS_KEY };
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
