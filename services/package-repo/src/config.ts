import { readFileSync } from "node:fs";
import { trustedKeys, type TrustedKeys } from "@molt/contracts";
import { httpEnv, natsEnv } from "@molt/runtime";
import { z } from "zod";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

const positiveInt = (fallback: number) => z.coerce.number().int().positive().default(fallback);

/** The service's environment; loadConfig turns a bad value into one clear startup error. */
export const Config = z
  .object({
    ...natsEnv,
    ...httpEnv,
    /** Cache root: `<dir>/cache/<sha256>`, temp files in `<dir>/tmp`. */
    MOLT_DATA_DIR: z.string().min(1).default(".molt/package-repo"),
    /** Base URL hosts download from (a mirror or the gateway in front of this service). */
    MOLT_PUBLIC_URL: z.url().optional(),
    MOLT_MAX_PACKAGE_BYTES: positiveInt(512 * MiB),
    /** Bounds on what an archive may unpack to; a host refuses more than its manifest says anyway. */
    MOLT_MAX_UNPACKED_BYTES: positiveInt(8 * GiB),
    MOLT_MAX_ARCHIVE_ENTRIES: positiveInt(100_000),
    /** ed25519 private key (PEM) that signs unsigned uploads here: for the demo; publishers sign their own. */
    MOLT_PUBLISHER_KEY_FILE: z.string().min(1).optional(),
    /** Trusted publisher keys (JSON array of `{ publicKey, keyId?, revoked? }`), inline or in a file. */
    MOLT_TRUSTED_PUBLISHER_KEYS: z.string().min(1).optional(),
    MOLT_TRUSTED_PUBLISHER_KEYS_FILE: z.string().min(1).optional(),
  })
  .transform((c) => ({ ...c, MOLT_PUBLIC_URL: c.MOLT_PUBLIC_URL ?? `http://${hostForUrl(c.MOLT_HTTP_HOST)}:${c.MOLT_HTTP_PORT}` }));
export type Config = z.infer<typeof Config>;

function hostForUrl(host: string): string {
  return host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
}

/**
 * The trusted publisher keys, from `MOLT_TRUSTED_PUBLISHER_KEYS_FILE` or the inline JSON of
 * `MOLT_TRUSTED_PUBLISHER_KEYS`; none configured is an empty set. A bad entry stops the start
 * with its position and reason rather than refusing every upload later.
 */
export function loadPublisherKeys(config: Pick<Config, "MOLT_TRUSTED_PUBLISHER_KEYS" | "MOLT_TRUSTED_PUBLISHER_KEYS_FILE">): TrustedKeys {
  const file = config.MOLT_TRUSTED_PUBLISHER_KEYS_FILE;
  const source = file ?? "MOLT_TRUSTED_PUBLISHER_KEYS";
  const text = file ? readFileSync(file, "utf8") : config.MOLT_TRUSTED_PUBLISHER_KEYS;
  if (text === undefined) return new Map();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new Error(`${source}: not JSON (${(err as Error).message})`);
  }
  if (!Array.isArray(json)) throw new Error(`${source}: expected a JSON array of { publicKey, keyId?, revoked? }`);
  try {
    return trustedKeys(json as never[]);
  } catch (err) {
    throw new Error(`${source}: ${(err as Error).message}`);
  }
}
