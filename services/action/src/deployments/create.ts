import { createHash, randomUUID } from "node:crypto";
import { canonicalJson, Strategy, type CreateDeploymentBody, type DeploymentAccepted, type PlanPreview } from "@molt/contracts";
import type { DeploymentRepository } from "@molt/aggregates";
import { HttpError } from "@molt/runtime";
import type { PlanPreviews } from "./preview.js";

export const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");

/** deployment id = hash(actor, Idempotency-Key): the same key from another actor is another deployment. */
export function deploymentIdFor(actor: string, idempotencyKey: string | null): string {
  return `d-${idempotencyKey === null ? randomUUID().replace(/-/g, "").slice(0, 24) : sha256(`${actor}\n${idempotencyKey}`).slice(0, 24)}`;
}

export const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,200}$/;

export function checkIdempotencyKey(key: string | null): void {
  if (key !== null && !IDEMPOTENCY_KEY.test(key))
    throw new HttpError(400, "validation", "Idempotency-Key must be 1-200 printable ASCII characters without spaces");
}

export interface CreateResult {
  status: 202;
  body: DeploymentAccepted;
  replayed: boolean;
}

export interface CreateDeps {
  deployments: DeploymentRepository;
  previews: PlanPreviews | null;
  defaultTaskTimeoutMs: number;
}

/** An empty plan is refused unless asked for: the operator sees why each host was skipped. */
export function refuseEmpty(plan: PlanPreview | null, allowEmpty: boolean | undefined): void {
  if (plan === null || plan.planned > 0 || allowEmpty === true) return;
  const reasons = plan.skips.slice(0, 20).map((s) => `${s.hostId}: ${s.reason}`);
  throw new HttpError(422, "empty_plan", `every host would be skipped (${plan.skipped}): ${reasons.join("; ")}; set allowEmpty to accept an empty plan`);
}

export async function previewDeployment(deps: Pick<CreateDeps, "previews">, body: CreateDeploymentBody): Promise<PlanPreview | null> {
  if (deps.previews === null) return null;
  return deps.previews.preview({
    component: body.component,
    version: body.version,
    hosts: body.hosts ?? [],
    selector: body.selector ?? null,
    strategy: body.strategy ?? Strategy.parse({}),
    kind: "upgrade",
    origin: null,
  });
}

export async function createDeployment(
  deps: CreateDeps,
  input: { actor: string; idempotencyKey: string | null; body: CreateDeploymentBody; correlationId: string },
): Promise<CreateResult> {
  checkIdempotencyKey(input.idempotencyKey);
  const deploymentId = deploymentIdFor(input.actor, input.idempotencyKey);
  const taskTimeoutMs = input.body.taskTimeoutMs ?? deps.defaultTaskTimeoutMs;
  const requestHash = sha256(canonicalJson({ ...input.body, taskTimeoutMs }));
  const accepted = { deploymentId, status: "accepted" as const, location: `/v1/deployments/${deploymentId}` };
  // A replay (or a mismatch) is answered from the history, before any preview.
  const existing = (await deps.deployments.load(deploymentId)).state;
  if (existing.status === "none") refuseEmpty(await previewDeployment(deps, input.body), input.body.allowEmpty);
  const b = input.body;
  const result = await deps.deployments.handle(
    deploymentId,
    {
      type: "RequestDeployment",
      data: {
        deploymentId,
        component: b.component,
        version: b.version,
        hosts: b.hosts ?? [],
        ...(b.selector !== undefined ? { selector: b.selector } : {}),
        idempotencyKey: input.idempotencyKey,
        requestHash,
        taskTimeoutMs,
        strategy: b.strategy ?? Strategy.parse({}),
        ...(b.allowEmpty !== undefined ? { allowEmpty: b.allowEmpty } : {}),
      },
    },
    { now: new Date().toISOString(), actor: input.actor, correlationId: input.correlationId },
    `${deploymentId}:requested`,
  );
  // A replay returns the original answer: the same status and the same body.
  return { status: 202, replayed: result.events.length === 0, body: accepted };
}
