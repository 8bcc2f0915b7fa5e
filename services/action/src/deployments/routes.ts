import { CreateDeploymentBody, OperatorCommandBody, OperatorCommandName, QuarantineBody, HostId } from "@molt/contracts";
import type { DeploymentRepository, SlotRepository } from "@molt/aggregates";
import { createHttpApp, hostInboxPrefix, issueHostCreds, type HostIssuer, type Logger, type TokenMap } from "@molt/runtime";
import { z } from "zod";
import type { CommandLog } from "../audit/command-log.js";
import { runCommand } from "./commands.js";
import { createDeployment, previewDeployment } from "./create.js";
import type { PlanPreviews } from "./preview.js";
import { quarantine } from "./quarantine.js";

type Audited = { moltKind?: string; moltTarget?: string; moltReplayed?: boolean };

export function buildApp(deps: {
  logger: Logger;
  tokens: TokenMap;
  deployments: DeploymentRepository;
  slots?: SlotRepository;
  commands: CommandLog;
  defaultTaskTimeoutMs: number;
  previews?: PlanPreviews | null;
  /** The MOLT account's host signing key: enrolment issues host credentials with it. */
  hostIssuer?: HostIssuer | null;
}) {
  const app = createHttpApp({ logger: deps.logger, tokens: deps.tokens });
  const createDeps = { deployments: deps.deployments, previews: deps.previews ?? null, defaultTaskTimeoutMs: deps.defaultTaskTimeoutMs };
  const keyOf = (h: unknown) => (typeof h === "string" ? h : null);

  // Every command, refused ones (bad body, 409, 422, 403) too, is audited with its actor and what was sent.
  app.addHook("onResponse", async (req, reply) => {
    if (req.method !== "POST" || !req.principal) return;
    const status = reply.statusCode;
    const r = req as Audited;
    await deps.commands.record({
      kind: r.moltKind ?? "create-deployment",
      actor: req.principal.actor,
      role: req.principal.role,
      target: r.moltTarget ?? null,
      outcome: status >= 400 ? "refused" : r.moltReplayed ? "replayed" : "accepted",
      status,
      body: req.body ?? null,
    });
  });

  app.post("/v1/deployments", { schema: { body: CreateDeploymentBody, querystring: z.object({ dryRun: z.enum(["true", "false"]).optional() }) } }, async (req, reply) => {
    if (req.query.dryRun === "true") {
      Object.assign(req, { moltKind: "preview-deployment", moltReplayed: true });
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
    Object.assign(req, { moltTarget: result.body.deploymentId, moltReplayed: result.replayed });
    return reply.code(result.status).header("location", result.body.location).send(result.body);
  });

  app.post(
    "/v1/deployments/:id/:command",
    { schema: { params: z.object({ id: z.string().regex(/^[a-z0-9_-]{1,128}$/, "id must be 1-128 characters of a-z 0-9 _ -"), command: OperatorCommandName }), body: OperatorCommandBody.nullish() } },
    async (req, reply) => {
      Object.assign(req, { moltKind: `${req.params.command}-deployment`, moltTarget: req.params.id });
      const result = await runCommand(createDeps, req.params.command, {
        actor: req.principal!.actor,
        idempotencyKey: keyOf(req.headers["idempotency-key"]),
        deploymentId: req.params.id,
        ...(req.body?.reason !== undefined ? { reason: req.body.reason } : {}),
        correlationId: req.id,
      });
      Object.assign(req, { moltReplayed: result.replayed });
      return reply.code(result.status).send(result.body);
    },
  );

  // Enrolment: a fresh identity for the host, allowed only its own subjects and keys. The
  // credentials are in this answer only (never stored, never audited): give them to the host.
  app.post("/v1/hosts/:hostId/enrol", { schema: { params: z.object({ hostId: HostId }) } }, async (req, reply) => {
    Object.assign(req, { moltKind: "enrol-host", moltTarget: req.params.hostId });
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
      Object.assign(req, { moltKind: `${req.params.action}-host`, moltTarget: req.params.hostId });
      if (!deps.slots) return reply.code(503).send({ error: { code: "unavailable", message: "quarantine is not configured" } });
      const out = await quarantine(deps.slots, {
        hostId: req.params.hostId,
        component: req.body.component,
        action: req.params.action,
        reason: req.body.reason ?? `drained by ${req.principal!.actor}`,
        meta: { now: new Date().toISOString(), actor: req.principal!.actor, correlationId: req.id },
      });
      Object.assign(req, { moltReplayed: !out.changed });
      return reply.code(200).send({ hostId: req.params.hostId, component: req.body.component, quarantined: out.quarantined });
    },
  );
  return app;
}
