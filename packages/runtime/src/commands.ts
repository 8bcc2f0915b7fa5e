import { createHash, randomUUID } from "node:crypto";
import { jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { subjects, type CommandRecord } from "@molt/contracts";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import fp from "fastify-plugin";
import type { Logger } from "pino";
import { WRITE_METHODS } from "./auth.js";

/** Where a service's command records go (MOLT_AUDIT, read by the audit service). */
export interface CommandLog {
  record(r: Omit<CommandRecord, "id" | "at">): Promise<void>;
}

/**
 * Command records on the MOLT_AUDIT stream (msgID = record id, so a retry is stored once). A
 * publish that fails is retried for `retryForMs` before it is given up and logged: the caller
 * awaits it before answering, so a command is not answered while its record is still unwritten.
 */
export function commandLog(nc: NatsConnection, logger: Logger, opts: { retryForMs?: number } = {}): CommandLog {
  const js = jetstream(nc);
  const retryForMs = opts.retryForMs ?? 5_000;
  return {
    async record(r) {
      const record: CommandRecord = { id: randomUUID(), at: new Date().toISOString(), ...r };
      const deadline = Date.now() + retryForMs;
      for (let wait = 25; ; wait = Math.min(wait * 2, 500)) {
        try {
          await js.publish(subjects.command(r.kind), JSON.stringify(record), { msgID: record.id, timeout: Math.max(500, Math.min(2_000, deadline - Date.now())) });
          return;
        } catch (err) {
          if (Date.now() + wait > deadline) {
            logger.error({ err, record }, "could not append the command record to MOLT_AUDIT");
            return;
          }
          await new Promise((res) => setTimeout(res, wait));
        }
      }
    },
  };
}

/** What a route tells the command audit about the request it handled. */
export interface AuditNote {
  kind?: string;
  target?: string | null;
  replayed?: boolean;
  /** The body is not recorded (it was refused before it could be parsed safely). */
  skip?: boolean;
}

declare module "fastify" {
  interface FastifyRequest {
    audit: AuditNote;
  }
  interface FastifyContextConfig {
    /** The record's kind for writes on this route (default `<method>-<first path segment>`). */
    auditKind?: string;
  }
}

const PUBLIC_TOKEN_HINT = 12;

/** Who a refused request claimed to be, without keeping anything that could be replayed. */
function claimedActor(req: FastifyRequest): string {
  const header = req.headers.authorization;
  const m = header ? /^Bearer\s+(\S+)$/i.exec(header) : null;
  if (!m) return "anonymous";
  // Never the token itself: a prefix of its hash lets an operator tell attempts apart.
  return `unknown-token:${hashHex(m[1]!).slice(0, PUBLIC_TOKEN_HINT)}`;
}

const hashHex = (s: string) => createHash("sha256").update(s).digest("hex");

function defaultKind(req: FastifyRequest): string {
  const seg = (req.url.split("?")[0] ?? "").split("/").filter(Boolean)[1] ?? "root";
  return `${req.method.toLowerCase()}-${seg.toLowerCase().replace(/[^a-z0-9_-]/g, "-").slice(0, 40)}`;
}

/**
 * Records, before the answer leaves: every write by a known token (accepted, replayed or
 * refused), and every 401 and 403 on any route. Rate-limited (429) requests are not recorded:
 * a flood must not turn into a flood of records.
 */
export const commandAudit = fp(
  (app: FastifyInstance, opts: { commands: CommandLog }) => {
    app.decorateRequest("audit", null as unknown as AuditNote);
    app.addHook("onRequest", (req, _reply, done) => {
      req.audit = {};
      done();
    });
    app.addHook("onSend", async (req: FastifyRequest, reply: FastifyReply, payload) => {
      const status = reply.statusCode;
      const note = req.audit ?? {};
      if (note.skip || status === 429) return payload;
      const refusedAuth = status === 401 || status === 403;
      if (!refusedAuth && !(req.principal && WRITE_METHODS.has(req.method))) return payload;
      const path = req.url.split("?")[0] ?? req.url;
      await opts.commands.record({
        kind: status === 401 ? "unauthorized" : (note.kind ?? req.routeOptions.config?.auditKind ?? defaultKind(req)),
        actor: req.principal?.actor ?? claimedActor(req),
        role: req.principal?.role ?? "none",
        target: note.target ?? (status === 401 ? `${req.method} ${path.slice(0, 300)}` : null),
        outcome: status >= 400 ? "refused" : note.replayed ? "replayed" : "accepted",
        status,
        // An upload's body is the archive itself: its query names it.
        body: status === 401 ? null : isStream(req.body) ? { query: req.query ?? null } : (req.body ?? null),
      });
      return payload;
    });
  },
  { name: "molt-command-audit", dependencies: ["molt-bearer-auth"] },
);

function isStream(body: unknown): boolean {
  return typeof body === "object" && body !== null && typeof (body as { pipe?: unknown }).pipe === "function";
}
