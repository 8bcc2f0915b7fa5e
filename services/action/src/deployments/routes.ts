import { CreateDeploymentBody, OperatorCommandBody, OperatorCommandName, QuarantineBody, HostId, type QuarantineAnswer } from "@molt/contracts";
import type { DeploymentRepository, SlotRepository } from "@molt/aggregates";
import { createHttpApp, hasRole, hostInboxPrefix, HttpError, issueHostCreds, type CommandLog, type HostIssuer, type Logger, type RateLimits, type TokenMap } from "@molt/runtime";
import { z } from "zod";
import type { FastifyRequest } from "fastify";
import type { EnrolKeys } from "../hosts/enrol-keys.js";
import { runCommand } from "./commands.js";
import { createDeployment, previewDeployment } from "./create.js";
import type { PlanPreviews } from "./preview.js";
import { quarantine } from "./quarantine.js";

export function buildApp(deps: {
  logger: Logger;
  tokens: TokenMap;
  deployments: DeploymentRepository;
  slots?: SlotRepository;
  commands: CommandLog;
  defaultTaskTimeoutMs: number;
  rateLimits?: RateLimits | false;
  previews?: PlanPreviews | null;
  /** The MOLT account's host signing key: enrolment issues host credentials with it. */
  hostIssuer?: HostIssuer | null;
  /** Scoped enrolment keys (MOLT_ENROL_KEYS_FILE): a host-id glob, an expiry and a number of uses each. */
  enrolKeys?: EnrolKeys | null;
}) {
  // Every command, refused ones (bad body, 409, 422, 403, 401) too, is audited with its actor and
  // what was sent, before the answer leaves (the runtime's command audit; routes name kind and target).
  const app = createHttpApp({ logger: deps.logger, tokens: deps.tokens, commands: deps.commands, ...(deps.rateLimits !== undefined ? { rateLimits: deps.rateLimits } : {}) });
  const createDeps = { deployments: deps.deployments, previews: deps.previews ?? null, defaultTaskTimeoutMs: deps.defaultTaskTimeoutMs };
  const keyOf = (h: unknown) => (typeof h === "string" ? h : null);

  app.post("/v1/deployments", { config: { auditKind: "create-deployment" }, schema: { body: CreateDeploymentBody, querystring: z.object({ dryRun: z.enum(["true", "false"]).optional() }) } }, async (req, reply) => {
    if (req.query.dryRun === "true") {
      Object.assign(req.audit, { kind: "preview-deployment", replayed: true });
      const plan = await previewDeployment(createDeps, req.body);
      if (plan === null) return reply.code(503).send({ error: { code: "unavailable", message: "no allocator answered the plan preview" } });
      return reply.code(200).send({ dryRun: true, plan });
    }
    const result = await createDeployment(createDeps, {
      actor: req.principal!.actor,
      idempotencyKey: keyOf(req.headers["idempotency-key"]),
      body: req.body,
      correlationId: req.id,
    });
    Object.assign(req.audit, { target: result.body.deploymentId, replayed: result.replayed });
    return reply.code(result.status).header("location", result.body.location).send(result.body);
  });

  app.post(
    "/v1/deployments/:id/:command",
    { schema: { params: z.object({ id: z.string().regex(/^[a-z0-9_-]{1,128}$/, "id must be 1-128 characters of a-z 0-9 _ -"), command: OperatorCommandName }), body: OperatorCommandBody.nullish() } },
    async (req, reply) => {
      Object.assign(req.audit, { kind: `${req.params.command}-deployment`, target: req.params.id });
      const result = await runCommand(createDeps, req.params.command, {
        actor: req.principal!.actor,
        idempotencyKey: keyOf(req.headers["idempotency-key"]),
        deploymentId: req.params.id,
        ...(req.body?.reason !== undefined ? { reason: req.body.reason } : {}),
        correlationId: req.id,
      });
      req.audit.replayed = result.replayed;
      return reply.code(result.status).send(result.body);
    },
  );

  // Enrolment: a fresh identity for the host, allowed only its own subjects and keys. The
  // credentials are in this answer only (never stored, never audited): give them to the host.
  // Authorised by an operator token, or by a scoped enrolment key (X-Molt-Enrol-Key), which
  // enrols only the host ids its glob matches, until it expires, as many times as it allows.
  const authoriseEnrolment = (req: FastifyRequest & { params: { hostId: string } }): void => {
    const key = req.headers["x-molt-enrol-key"];
    if (typeof key === "string") {
      const check = deps.enrolKeys ? deps.enrolKeys.spend(key, req.params.hostId) : ({ ok: false, status: 401, name: null, message: "enrolment keys are not configured (MOLT_ENROL_KEYS_FILE)" } as const);
      // The audit record names the key (never the key itself), refused or not.
      if (check.name) req.principal = { actor: `enrol-key:${check.name}`, role: "operator" };
      if (!check.ok) throw new HttpError(check.status, check.status === 401 ? "unauthorized" : "forbidden", check.message);
      return;
    }
    const bearer = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? "");
    if (!bearer) throw new HttpError(401, "unauthorized", "missing bearer token (Authorization: Bearer <token>) or enrolment key (X-Molt-Enrol-Key)");
    const found = deps.tokens.lookup(bearer[1]!);
    if (!found.ok) throw new HttpError(401, "unauthorized", found.reason === "expired" ? "token expired" : "unknown token");
    req.principal = found.principal;
    if (!hasRole(found.principal, "operator")) throw new HttpError(403, "forbidden", `role ${found.principal.role} may not enrol hosts; operator or admin needed`);
  };
  app.post("/v1/hosts/:hostId/enrol", { config: { auth: false, auditKind: "enrol-host" }, schema: { params: z.object({ hostId: HostId }) } }, async (req, reply) => {
    Object.assign(req.audit, { target: req.params.hostId });
    authoriseEnrolment(req);
    if (!deps.hostIssuer) return reply.code(503).send({ error: { code: "unavailable", message: "host enrolment is not configured (MOLT_HOST_ISSUER_FILE)" } });
    const issued = await issueHostCreds(deps.hostIssuer, req.params.hostId);
    return reply
      .code(201)
      .header("cache-control", "no-store")
      .send({ hostId: req.params.hostId, userKey: issued.publicKey, inboxPrefix: hostInboxPrefix(req.params.hostId), credentials: issued.creds });
  });

  app.post(
    "/v1/hosts/:hostId/:action",
    { schema: { params: z.object({ hostId: HostId, action: z.enum(["quarantine", "clear"]) }), body: QuarantineBody } },
    async (req, reply) => {
      Object.assign(req.audit, { kind: `${req.params.action}-host`, target: req.params.hostId });
      if (!deps.slots) return reply.code(503).send({ error: { code: "unavailable", message: "quarantine is not configured" } });
      const out = await quarantine(deps.slots, {
        hostId: req.params.hostId,
        component: req.body.component,
        action: req.params.action,
        reason: req.body.reason ?? `drained by ${req.principal!.actor}`,
        meta: { now: new Date().toISOString(), actor: req.principal!.actor, correlationId: req.id },
      });
      req.audit.replayed = !out.changed;
      const answer: QuarantineAnswer = { hostId: req.params.hostId, component: req.body.component, quarantined: out.quarantined };
      return reply.code(200).send(answer);
    },
  );
  return app;
}
