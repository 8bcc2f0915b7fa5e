import { z } from "zod";

/**
 * Host ids are what fleets use: hostnames, FQDNs, IPv4/IPv6 addresses, instance ids.
 * Anything else (spaces, `*`, `>`, control characters, empty, too long) is refused at the edge.
 */
export const HOST_ID_PATTERN = /^[A-Za-z0-9._:-]{1,253}$/;
export const HostId = z
  .string()
  .regex(HOST_ID_PATTERN, "host id must be 1-253 characters of A-Z a-z 0-9 . _ : -");
export type HostId = z.infer<typeof HostId>;

/** Component names and other ids: lower-case letters, digits, `_` and `-`. */
export const NAME_PATTERN = /^[a-z0-9_-]{1,64}$/;
export const ComponentName = z.string().regex(NAME_PATTERN, "component must be 1-64 characters of a-z 0-9 _ -");
export type ComponentName = z.infer<typeof ComponentName>;

export const Id = z.string().regex(/^[a-z0-9_-]{1,128}$/, "id must be 1-128 characters of a-z 0-9 _ -");

/** A version as the package declares it (semver or any dotted label); safe in paths and subjects. */
export const Version = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9.+_-]{0,63}$/, "version must be 1-64 characters of A-Z a-z 0-9 . + _ - (not starting with a symbol)");
export type Version = z.infer<typeof Version>;

export const Platform = z.string().regex(/^[a-z0-9_]+-[a-z0-9_]+$/, "platform must look like linux-amd64");
export type Platform = z.infer<typeof Platform>;

export const Sha256 = z.string().regex(/^[0-9a-f]{64}$/, "sha256 must be 64 lower-case hex digits");

/**
 * Host id → one NATS subject token / KV key token, reversibly.
 * `_` → `_u`, `.` → `_d`, `:` → `_c`; every other allowed character stays as it is,
 * so the token only holds [A-Za-z0-9_-], valid both in subjects and in KV keys.
 */
export function encodeHostToken(hostId: string): string {
  const parsed = HostId.safeParse(hostId);
  if (!parsed.success) throw new InvalidHostIdError(hostId);
  return hostId.replace(/[_.:]/g, (c) => (c === "_" ? "_u" : c === "." ? "_d" : "_c"));
}

export function decodeHostToken(token: string): string {
  if (!/^[A-Za-z0-9_-]+$/.test(token)) throw new InvalidHostIdError(token);
  const out = token.replace(/_(.?)/g, (_m, c: string) => {
    if (c === "u") return "_";
    if (c === "d") return ".";
    if (c === "c") return ":";
    throw new InvalidHostIdError(token);
  });
  if (!HOST_ID_PATTERN.test(out)) throw new InvalidHostIdError(token);
  return out;
}

export class InvalidHostIdError extends Error {
  readonly code = "invalid_host_id";
  constructor(readonly value: string) {
    super(`invalid host id ${JSON.stringify(value.slice(0, 300))}: must be 1-253 characters of A-Z a-z 0-9 . _ : -`);
  }
}

/**
 * A point in time as ISO 8601 UTC. `z.iso.datetime()` alone takes `0000-01-01T00:00:00Z`, which
 * PostgreSQL refuses (there is no year 0), so a report carrying it would be stored on the
 * immutable stream and then refused by every view: years 1970 to 9999 only.
 */
export const Timestamp = z.iso.datetime().refine((s) => {
  const year = Number(s.slice(0, 4));
  return year >= 1970 && year <= 9999 && !Number.isNaN(Date.parse(s));
}, "must be a date-time between 1970 and 9999");
