import { timingSafeEqual } from "node:crypto";
import { readFileSync, unwatchFile, watchFile } from "node:fs";
import { describeIssues, Timestamp } from "@molt/contracts";
import { hashToken } from "@molt/runtime";
import { z } from "zod";

/**
 * Enrolment keys file (`MOLT_ENROL_KEYS_FILE`): `{ "sha256:<hex of sha256(key)>": { "name": "rack-12",
 * "hosts": "web-*.dc1", "expiresAt": "<ISO>", "uses": 20 }, ... }`. A key enrols only host ids its
 * `hosts` glob matches (`*` = any run of host-id characters), until `expiresAt` (required: no key
 * lasts forever), at most `uses` times. Only hashes are held (`pnpm molt-token` prints one).
 */
const HASHED = /^sha256:[0-9a-f]{64}$/;

export const EnrolKeyFile = z.record(
  z.string().regex(HASHED, "keys are stored as sha256:<hex>"),
  z
    .object({
      name: z.string().regex(/^[a-z0-9_.-]{1,64}$/, "name must be 1-64 characters of a-z 0-9 _ . -"),
      hosts: z.string().regex(/^[A-Za-z0-9._:*-]{1,253}$/, "hosts is a host-id glob: A-Z a-z 0-9 . _ : - and *"),
      expiresAt: Timestamp,
      uses: z.number().int().min(1).max(100_000),
    })
    .strict(),
);

interface Key {
  name: string;
  hosts: RegExp;
  pattern: string;
  expiresAt: number;
  uses: number;
  digest: Buffer;
}

export type EnrolCheck =
  | { ok: true; name: string }
  | { ok: false; status: 401 | 403; name: string | null; message: string };

export interface EnrolKeys {
  /** Checks `key` for `hostId` and, when it may, spends one use. */
  spend(key: string, hostId: string, now?: number): EnrolCheck;
  /** Stops watching the keys file (a no-op for keys from a string). */
  close(): void;
}

function globToRegExp(glob: string): RegExp {
  return new RegExp(`^${glob.replace(/[.]/g, "\\.").replace(/\*/g, "[A-Za-z0-9._:-]*")}$`);
}

function parseKeys(json: string, source: string): Key[] {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch (err) {
    throw new Error(`${source}: not JSON (${(err as Error).message})`);
  }
  // Checked first, and never echoed: a key written in clear must not end up in a log.
  if (raw && typeof raw === "object" && Object.keys(raw).some((k) => !HASHED.test(k)))
    throw new Error(`${source}: keys must be stored as sha256:<hex> (pnpm molt-token hash <key>), not in clear`);
  const parsed = EnrolKeyFile.safeParse(raw);
  if (!parsed.success) throw new Error(`${source}: ${describeIssues(parsed.error)}`);
  return Object.entries(parsed.data).map(([hash, k]) => ({
    name: k.name,
    pattern: k.hosts,
    hosts: globToRegExp(k.hosts),
    expiresAt: Date.parse(k.expiresAt),
    uses: k.uses,
    digest: Buffer.from(hash.slice("sha256:".length), "hex"),
  }));
}

function enrolKeys(initial: Key[]): EnrolKeys & { replace(next: Key[]): void } {
  let keys = initial;
  // Uses spent per key (by its hash, so a reload keeps them), in this process: see the README.
  const spent = new Map<string, number>();
  return {
    replace(next) {
      keys = next;
    },
    close() {},
    spend(key, hostId, now = Date.now()) {
      const digest = Buffer.from(hashToken(key).slice("sha256:".length), "hex");
      let found: Key | undefined;
      // Every key compared, so the time taken says nothing about which one matched.
      for (const k of keys) if (timingSafeEqual(k.digest, digest) && found === undefined) found = k;
      if (!found) return { ok: false, status: 401, name: null, message: "unknown enrolment key" };
      const { name } = found;
      if (found.expiresAt <= now) return { ok: false, status: 401, name, message: `enrolment key ${name} expired` };
      if (!found.hosts.test(hostId)) return { ok: false, status: 403, name, message: `enrolment key ${name} may enrol only hosts matching ${found.pattern}` };
      const id = found.digest.toString("hex");
      const used = spent.get(id) ?? 0;
      if (used >= found.uses) return { ok: false, status: 403, name, message: `enrolment key ${name} is used up (${found.uses} uses)` };
      spent.set(id, used + 1);
      return { ok: true, name };
    },
  };
}

export function parseEnrolKeys(json: string, source: string): EnrolKeys {
  return enrolKeys(parseKeys(json, source));
}

/**
 * Keys from a file, reloaded without a restart when it changes (polled) and on SIGHUP, so removing
 * a key revokes it; a bad file on reload is reported and the keys in force stay.
 */
export function loadEnrolKeys(file: string, opts: { pollMs?: number; onReload?: (err: Error | null) => void } = {}): EnrolKeys {
  const read = () => parseKeys(readFileSync(file, "utf8"), file);
  const keys = enrolKeys(read());
  const reload = () => {
    try {
      keys.replace(read());
      opts.onReload?.(null);
    } catch (err) {
      opts.onReload?.(err as Error);
    }
  };
  const onChange = (cur: { mtimeMs: number; size: number; ino: number }, prev: { mtimeMs: number; size: number; ino: number }) => {
    if (cur.mtimeMs !== prev.mtimeMs || cur.size !== prev.size || cur.ino !== prev.ino) reload();
  };
  watchFile(file, { interval: opts.pollMs ?? 2_000, persistent: false }, onChange);
  process.on("SIGHUP", reload);
  return Object.assign(keys, {
    close() {
      unwatchFile(file, onChange);
      process.off("SIGHUP", reload);
    },
  });
}
