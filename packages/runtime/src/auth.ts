import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync, unwatchFile, watchFile } from "node:fs";
import type { FastifyInstance, FastifyRequest } from "fastify";
import fp from "fastify-plugin";
import { z } from "zod";
import { HttpError } from "./errors.js";
import { describeIssues, Timestamp } from "@molt/contracts";

export const Role = z.enum(["viewer", "operator", "admin"]);
export type Role = z.infer<typeof Role>;
export interface Principal {
  actor: string;
  role: Role;
}

const HASHED = /^sha256:[0-9a-f]{64}$/;

/**
 * Token file: `{ "sha256:<hex of sha256(token)>": { "actor": "alice", "role": "operator",
 * "expiresAt"?: "<ISO>" }, ... }`. A key that is not `sha256:…` is taken as the token itself
 * (at least 16 characters) and hashed on load, so older files keep working; `pnpm molt-token`
 * prints the hashed form of a new token.
 */
export const TokenFile = z.record(
  z.string().min(16, "tokens must be at least 16 characters"),
  z.object({ actor: z.string().min(1).max(200), role: Role, expiresAt: Timestamp.optional() }).strict(),
);

export function hashToken(token: string): string {
  return `sha256:${createHash("sha256").update(token).digest("hex")}`;
}

interface Entry extends Principal {
  digest: Buffer;
  expiresAt: number | null;
}

export type TokenLookup = { ok: true; principal: Principal } | { ok: false; reason: "unknown" | "expired" };

/** The tokens a service accepts. Only hashes are held; a lookup compares every one in constant time. */
export interface TokenMap {
  lookup(token: string, now?: number): TokenLookup;
  readonly size: number;
  /** Stops watching the token file (a no-op for tokens that came from a string). */
  close(): void;
}

function parseEntries(json: string, source: string): Entry[] {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch (err) {
    throw new Error(`${source}: not JSON (${(err as Error).message})`);
  }
  if (raw && typeof raw === "object") {
    const short = Object.keys(raw).find((t) => t.length < 16);
    if (short !== undefined) throw new Error(`${source}: tokens must be at least 16 characters (found one of ${short.length})`);
  }
  const parsed = TokenFile.safeParse(raw);
  if (!parsed.success) throw new Error(`${source}: ${describeIssues(parsed.error)}`);
  return Object.entries(parsed.data).map(([key, p]) => ({
    actor: p.actor,
    role: p.role,
    digest: Buffer.from((HASHED.test(key) ? key : hashToken(key)).slice("sha256:".length), "hex"),
    expiresAt: p.expiresAt !== undefined ? Date.parse(p.expiresAt) : null,
  }));
}

function tokenMap(load: () => Entry[], close: () => void = () => {}): TokenMap & { replace(entries: Entry[]): void } {
  let entries = load();
  return {
    get size() {
      return entries.length;
    },
    replace(next: Entry[]) {
      entries = next;
    },
    close,
    lookup(token, now = Date.now()) {
      const digest = createHash("sha256").update(token).digest();
      let found: Entry | undefined;
      // Every entry is compared, equal or not, so the time taken says nothing about the table.
      for (const e of entries) if (timingSafeEqual(e.digest, digest) && found === undefined) found = e;
      if (!found) return { ok: false, reason: "unknown" };
      if (found.expiresAt !== null && found.expiresAt <= now) return { ok: false, reason: "expired" };
      return { ok: true, principal: { actor: found.actor, role: found.role } };
    },
  };
}

export function parseTokens(json: string, source: string): TokenMap {
  return tokenMap(() => parseEntries(json, source));
}

export interface LoadTokensOptions {
  /** How often the token file is checked for changes (ms); SIGHUP reloads at once. */
  pollMs?: number;
  /** A reload that fails keeps the tokens in use; this hears why. */
  onReload?: (err: Error | null, size: number) => void;
}

/**
 * Tokens from MOLT_TOKEN_FILE (a path) or MOLT_TOKENS (the JSON itself). A token file is
 * reloaded without a restart: when it changes (polled) and on SIGHUP. A bad file on reload is
 * reported and the previous tokens stay in force.
 */
export function loadTokens(env: NodeJS.ProcessEnv = process.env, opts: LoadTokensOptions = {}): TokenMap {
  const file = env["MOLT_TOKEN_FILE"];
  if (!file) {
    const inline = env["MOLT_TOKENS"];
    if (inline) return parseTokens(inline, "MOLT_TOKENS");
    throw new Error("no tokens configured: set MOLT_TOKEN_FILE or MOLT_TOKENS");
  }
  const read = () => parseEntries(readFileSync(file, "utf8"), file);
  const reload = () => {
    try {
      map.replace(read());
      opts.onReload?.(null, map.size);
    } catch (err) {
      opts.onReload?.(err as Error, map.size);
    }
  };
  const onChange = (cur: { mtimeMs: number; size: number; ino: number }, prev: { mtimeMs: number; size: number; ino: number }) => {
    if (cur.mtimeMs !== prev.mtimeMs || cur.size !== prev.size || cur.ino !== prev.ino) reload();
  };
  const map = tokenMap(read, () => {
    unwatchFile(file, onChange);
    process.off("SIGHUP", reload);
  });
  watchFile(file, { interval: opts.pollMs ?? 2_000, persistent: false }, onChange);
  process.on("SIGHUP", reload);
  return map;
}

declare module "fastify" {
  interface FastifyRequest {
    principal: Principal | null;
  }
  interface FastifyContextConfig {
    /** `false` for routes that need no token (health, host downloads). */
    auth?: boolean;
    /** The least role a route needs (default: any role reads, operator writes). */
    role?: Role;
  }
}

function authenticate(req: FastifyRequest, tokens: TokenMap): HttpError | undefined {
  if (req.routeOptions.config?.auth === false) return undefined;
  const header = req.headers.authorization;
  const match = header ? /^Bearer\s+(\S+)$/i.exec(header) : null;
  if (!match) return new HttpError(401, "unauthorized", "missing bearer token (Authorization: Bearer <token>)");
  const found = tokens.lookup(match[1]!);
  if (!found.ok) return new HttpError(401, "unauthorized", found.reason === "expired" ? "token expired" : "unknown token");
  const principal = found.principal;
  // Known before the role check, so a refused write is still audited with its actor.
  req.principal = principal;
  const needed = req.routeOptions.config?.role ?? (WRITE_METHODS.has(req.method) ? "operator" : "viewer");
  if (!hasRole(principal, needed))
    return new HttpError(403, "forbidden", `role ${principal.role} may not ${req.method} ${req.routeOptions.url ?? ""}; ${needed === "admin" ? "admin" : "operator or admin"} needed`);
  return undefined;
}

export const WRITE_METHODS: ReadonlySet<string> = new Set(["POST", "PUT", "PATCH", "DELETE"]);
const RANK: Record<Role, number> = { viewer: 0, operator: 1, admin: 2 };

export function hasRole(principal: Principal, atLeast: Role): boolean {
  return RANK[principal.role] >= RANK[atLeast];
}

/**
 * The one bearer-token check every service uses: any valid token may read; writes need
 * `operator` or `admin`; a route may ask for more (`config.role`). No service trusts an
 * identity header it cannot verify itself.
 */
export const bearerAuth = fp(
  (app: FastifyInstance, opts: { tokens: TokenMap }) => {
    app.decorateRequest("principal", null);
    app.addHook("onRequest", (req: FastifyRequest, _reply, done) => {
      done(authenticate(req, opts.tokens));
    });
  },
  { name: "molt-bearer-auth" },
);
