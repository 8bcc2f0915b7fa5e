import { readFileSync } from "node:fs";
import type { FastifyInstance, FastifyRequest } from "fastify";
import fp from "fastify-plugin";
import { z } from "zod";
import { HttpError } from "./errors.js";
import { describeIssues } from "@molt/contracts";

export const Role = z.enum(["viewer", "operator", "admin"]);
export type Role = z.infer<typeof Role>;
export interface Principal {
  actor: string;
  role: Role;
}

/** Token file: `{ "<token>": { "actor": "alice", "role": "operator" }, ... }`. */
export const TokenFile = z.record(
  z.string().min(16, "tokens must be at least 16 characters"),
  z.object({ actor: z.string().min(1).max(200), role: Role }),
);
export type TokenMap = ReadonlyMap<string, Principal>;

export function parseTokens(json: string, source: string): TokenMap {
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
  if (!parsed.success)
    throw new Error(`${source}: ${describeIssues(parsed.error)}`);
  return new Map(Object.entries(parsed.data));
}

/** Tokens from MOLT_TOKEN_FILE (a path) or MOLT_TOKENS (the JSON itself). */
export function loadTokens(env: NodeJS.ProcessEnv = process.env): TokenMap {
  const file = env["MOLT_TOKEN_FILE"];
  if (file) return parseTokens(readFileSync(file, "utf8"), file);
  const inline = env["MOLT_TOKENS"];
  if (inline) return parseTokens(inline, "MOLT_TOKENS");
  throw new Error("no tokens configured: set MOLT_TOKEN_FILE or MOLT_TOKENS");
}

declare module "fastify" {
  interface FastifyRequest {
    principal: Principal | null;
  }
  interface FastifyContextConfig {
    /** `false` for routes that need no token (health, host downloads). */
    auth?: boolean;
  }
}

function authenticate(req: FastifyRequest, tokens: TokenMap): HttpError | undefined {
  if (req.routeOptions.config?.auth === false) return undefined;
  const header = req.headers.authorization;
  const match = header ? /^Bearer\s+(\S+)$/i.exec(header) : null;
  if (!match) return new HttpError(401, "unauthorized", "missing bearer token (Authorization: Bearer <token>)");
  const principal = tokens.get(match[1]!);
  if (!principal) return new HttpError(401, "unauthorized", "unknown token");
  // Known before the role check, so a refused write is still audited with its actor.
  req.principal = principal;
  if (WRITE_METHODS.has(req.method) && !hasRole(principal, "operator"))
    return new HttpError(403, "forbidden", `role ${principal.role} may not ${req.method}; operator or admin needed`);
  return undefined;
}

const WRITE_METHODS = new Set(["POST", "PUT", "PATCH", "DELETE"]);
const RANK: Record<Role, number> = { viewer: 0, operator: 1, admin: 2 };

export function hasRole(principal: Principal, atLeast: Role): boolean {
  return RANK[principal.role] >= RANK[atLeast];
}

/**
 * The one bearer-token check every service uses: any valid token may read; writes need
 * `operator` or `admin`. No service trusts an identity header it cannot verify itself.
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
