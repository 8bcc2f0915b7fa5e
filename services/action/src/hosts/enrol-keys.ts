import { timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import { describeIssues, Timestamp } from "@molt/contracts";
import { hashToken } from "@molt/runtime";
import { z } from "zod";

/**
 * Enrolment keys file (`MOLT_ENROL_KEYS_FILE`): `{ "sha256:<hex of sha256(key)>": { "name": "rack-12",
 * "hosts": "web-*.dc1", "expiresAt": "<ISO>", "uses": 20 }, ... }`. A key enrols only host ids its
 * `hosts` glob matches (`*` = any run of host-id characters), until `expiresAt` (required: no key
 * lasts forever), at most `uses` times. Only hashes are held (`pnpm molt-token` prints one).
 */
export const EnrolKeyFile = z.record(
  z.string().regex(/^sha256:[0-9a-f]{64}$/, "keys are stored as sha256:<hex>"),
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
}

function globToRegExp(glob: string): RegExp {
  return new RegExp(`^${glob.replace(/[.]/g, "\\.").replace(/\*/g, "[A-Za-z0-9._:-]*")}$`);
}

export function parseEnrolKeys(json: string, source: string): EnrolKeys {
  const parsed = EnrolKeyFile.safeParse(JSON.parse(json));
  if (!parsed.success) throw new Error(`${source}: ${describeIssues(parsed.error)}`);
  const keys: Key[] = Object.entries(parsed.data).map(([hash, k]) => ({
    name: k.name,
    pattern: k.hosts,
    hosts: globToRegExp(k.hosts),
    expiresAt: Date.parse(k.expiresAt),
    uses: k.uses,
    digest: Buffer.from(hash.slice("sha256:".length), "hex"),
  }));
  // Uses spent, per key name, in this process (see the README: counted per action replica).
  const spent = new Map<string, number>();
  return {
    spend(key, hostId, now = Date.now()) {
      const digest = Buffer.from(hashToken(key).slice("sha256:".length), "hex");
      let found: Key | undefined;
      // Every key compared, so the time taken says nothing about which one matched.
      for (const k of keys) if (timingSafeEqual(k.digest, digest) && found === undefined) found = k;
      if (!found) return { ok: false, status: 401, name: null, message: "unknown enrolment key" };
      const { name } = found;
      if (found.expiresAt <= now) return { ok: false, status: 401, name, message: `enrolment key ${name} expired` };
      if (!found.hosts.test(hostId)) return { ok: false, status: 403, name, message: `enrolment key ${name} may enrol only hosts matching ${found.pattern}` };
      const used = spent.get(name) ?? 0;
      if (used >= found.uses) return { ok: false, status: 403, name, message: `enrolment key ${name} is used up (${found.uses} uses)` };
      spent.set(name, used + 1);
      return { ok: true, name };
    },
  };
}

export function loadEnrolKeys(file: string): EnrolKeys {
  return parseEnrolKeys(readFileSync(file, "utf8"), file);
}

