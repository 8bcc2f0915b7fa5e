import { CreateDeploymentBody } from "@molt/contracts";
import type { DeploymentRepository } from "@molt/aggregates";
import { createHttpApp, type Logger, type TokenMap } from "@molt/runtime";
import type { CommandLog } from "../audit/command-log.js";
import { createDeployment } from "./create.js";

export function buildApp(deps: {
  logger: Logger;
  tokens: TokenMap;
  deployments: DeploymentRepository;
  commands: CommandLog;
  defaultTaskTimeoutMs: number;
}) {
  const app = createHttpApp({ logger: deps.logger, tokens: deps.tokens });

  // Refused commands (bad body, 422, 403) are audited too, with what was sent.
  app.addHook("onResponse", async (req, reply) => {
    if (req.method !== "POST" || !req.principal) return;
    const status = reply.statusCode;
    const target = (req as { moltTarget?: string }).moltTarget ?? null;
    await deps.commands.record({
      kind: "create-deployment",
      actor: req.principal.actor,
      role: req.principal.role,
      target,
      outcome: status >= 400 ? "refused" : (req as { moltReplayed?: boolean }).moltReplayed ? "replayed" : "accepted",
      status,
      body: req.body ?? null,
    });
  });

  app.post("/v1/deployments", { schema: { body: CreateDeploymentBody } }, async (req, reply) => {
    const key = req.headers["idempotency-key"];
    const result = await createDeployment(
      { deployments: deps.deployments, defaultTaskTimeoutMs: deps.defaultTaskTimeoutMs },
      { actor: req.principal!.actor, idempotencyKey: typeof key === "string" ? key : null, body: req.body, correlationId: req.id },
    );
    Object.assign(req, { moltTarget: result.body.deploymentId, moltReplayed: result.replayed });
    return reply.code(result.status).header("location", result.body.location).send(result.body);
  });
  return app;
}
