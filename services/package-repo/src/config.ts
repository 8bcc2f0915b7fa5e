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
    /** ed25519 private key (PEM) that signs manifests; unset publishes unsigned packages. */
    MOLT_PUBLISHER_KEY_FILE: z.string().min(1).optional(),
  })
  .transform((c) => ({ ...c, MOLT_PUBLIC_URL: c.MOLT_PUBLIC_URL ?? `http://${hostForUrl(c.MOLT_HTTP_HOST)}:${c.MOLT_HTTP_PORT}` }));
export type Config = z.infer<typeof Config>;

function hostForUrl(host: string): string {
  return host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
}
