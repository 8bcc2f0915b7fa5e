import { createHash, randomUUID } from "node:crypto";
import { canonicalJson, type CreateDeploymentBody, type DeploymentAccepted } from "@molt/contracts";
import type { DeploymentRepository } from "@molt/aggregates";
import { HttpError } from "@molt/runtime";

const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");

/** deployment id = hash(actor, Idempotency-Key): the same key from another actor is another deployment. */
export function deploymentIdFor(actor: string, idempotencyKey: string | null): string {
  return `d-${idempotencyKey === null ? randomUUID().replace(/-/g, "").slice(0, 24) : sha256(`${actor}\n${idempotencyKey}`).slice(0, 24)}`;
}

export const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,200}$/;

export interface CreateResult {
  status: 202;
  body: DeploymentAccepted;
  replayed: boolean;
}

export async function createDeployment(
  deps: { deployments: DeploymentRepository; defaultTaskTimeoutMs: number },
  input: { actor: string; idempotencyKey: string | null; body: CreateDeploymentBody; correlationId: string },
): Promise<CreateResult> {
  if (input.idempotencyKey !== null && !IDEMPOTENCY_KEY.test(input.idempotencyKey))
    throw new HttpError(400, "validation", "Idempotency-Key must be 1-200 printable ASCII characters without spaces");
  const deploymentId = deploymentIdFor(input.actor, input.idempotencyKey);
  const taskTimeoutMs = input.body.taskTimeoutMs ?? deps.defaultTaskTimeoutMs;
  const requestHash = sha256(canonicalJson({ ...input.body, taskTimeoutMs }));
  const result = await deps.deployments.handle(
    deploymentId,
    {
      type: "RequestDeployment",
      data: {
        deploymentId,
        component: input.body.component,
        version: input.body.version,
        hosts: input.body.hosts,
        idempotencyKey: input.idempotencyKey,
        requestHash,
        taskTimeoutMs,
      },
    },
    { now: new Date().toISOString(), actor: input.actor, correlationId: input.correlationId },
    `${deploymentId}:requested`,
  );
  // A replay returns the original answer: the same status and the same body.
  return {
    status: 202,
    replayed: result.events.length === 0,
    body: { deploymentId, status: "accepted", location: `/v1/deployments/${deploymentId}` },
  };
}
