import { z } from "zod";

export class ConfigError extends Error {
  readonly code = "config";
}

/** Parses the environment with a zod object schema; a bad or missing variable stops the process with a clear message. */
export function loadConfig<S extends z.ZodType>(schema: S, env: NodeJS.ProcessEnv = process.env): z.infer<S> {
  const parsed = schema.safeParse(env);
  if (parsed.success) return parsed.data;
  const lines = parsed.error.issues.map((i) => `  ${i.path.join(".") || "(env)"}: ${i.message}`);
  throw new ConfigError(`invalid configuration:\n${lines.join("\n")}`);
}

/** Env every service on the bus reads: where NATS is, and the replicas for streams it creates when missing. */
export const natsEnv = {
  MOLT_NATS_URL: z.string().min(1).default("nats://127.0.0.1:4222"),
  /** 1 on one server, 3 on a cluster. Existing streams and buckets are never rewritten. */
  MOLT_STREAM_REPLICAS: z.coerce.number().int().min(1).max(5).default(1),
  /** This process's NATS credentials file (user JWT + seed); every shipped server config requires one. */
  MOLT_NATS_CREDS: z.string().min(1).optional(),
  /** TLS: the CA the servers' certificates chain to, and an optional client certificate and key. */
  MOLT_NATS_CA: z.string().min(1).optional(),
  MOLT_NATS_CERT: z.string().min(1).optional(),
  MOLT_NATS_KEY: z.string().min(1).optional(),
  /**
   * A file to which an event-store writer adds `<seq> <subject> <commitId>` for every append the
   * stream acknowledged: the fault suites compare it with what the stream holds afterwards.
   */
  MOLT_ACK_LOG: z.string().min(1).optional(),
};

/** Env every HTTP service reads. */
export const httpEnv = {
  MOLT_HTTP_HOST: z.string().min(1).default("127.0.0.1"),
  MOLT_HTTP_PORT: z.coerce.number().int().min(0).max(65535),
};
