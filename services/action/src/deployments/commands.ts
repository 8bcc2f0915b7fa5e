import { Strategy, type OperatorCommandAnswer, type OperatorCommandName } from "@molt/contracts";
import { describeDeployment, IllegalStateError, NotFoundError, type OperatorCommand } from "@molt/domain";
import { HttpError } from "@molt/runtime";
import { checkIdempotencyKey, deploymentIdFor, refuseEmpty, sha256, type CreateDeps } from "./create.js";

export interface CommandInput {
  actor: string;
  idempotencyKey: string | null;
  deploymentId: string;
  reason?: string;
  correlationId: string;
}

export interface CommandResult {
  status: 200 | 202;
  body: OperatorCommandAnswer;
  replayed: boolean;
}

/** A rollback goes fast: no canary, the largest batches the strategy allows. */
const ROLLBACK_STRATEGY = Strategy.parse({ maxUnavailable: { percent: 50 } });

/**
 * approve, pause, resume, cancel and retry on the deployment aggregate; the idempotency key
 * (hashed with the actor) is stored in the event, so a replay is recognised from the history
 * however old. rollback creates a new deployment linked to its origin.
 */
export async function runCommand(deps: CreateDeps, name: OperatorCommandName, input: CommandInput): Promise<CommandResult> {
  checkIdempotencyKey(input.idempotencyKey);
  const meta = { now: new Date().toISOString(), actor: input.actor, correlationId: input.correlationId };
  if (name === "rollback") return rollback(deps, input, meta);
  const commandKey = input.idempotencyKey === null ? undefined : sha256(`${input.actor}\n${input.idempotencyKey}`).slice(0, 32);
  const keyed: { commandKey?: string } = commandKey !== undefined ? { commandKey } : {};
  const reason = input.reason !== undefined ? { reason: input.reason } : {};
  const command: OperatorCommand =
    name === "approve"
      ? { type: "ApproveCanary", data: keyed }
      : name === "pause"
        ? { type: "PauseDeployment", data: { ...reason, ...keyed } }
        : name === "resume"
          ? { type: "ResumeDeployment", data: keyed }
          : name === "cancel"
            ? { type: "CancelDeployment", data: { ...reason, ...keyed } }
            : { type: "RetryDeployment", data: keyed };
  const commitId = `${input.deploymentId}:${name}:${commandKey ?? meta.correlationId}`;
  const out = await deps.deployments.handle(input.deploymentId, command, meta, commitId);
  return { status: 200, replayed: out.events.length === 0, body: { deploymentId: input.deploymentId, status: describeDeployment(out.state) } };
}

async function rollback(deps: CreateDeps, input: CommandInput, meta: { now: string; actor: string; correlationId: string }): Promise<CommandResult> {
  const origin = (await deps.deployments.load(input.deploymentId)).state;
  if (origin.status === "none") throw new NotFoundError(`deployment ${input.deploymentId} does not exist`);
  if (!origin.planned || origin.kind === "rollback")
    throw new IllegalStateError(`deployment ${input.deploymentId} is ${describeDeployment(origin)}${origin.kind === "rollback" ? " (a rollback)" : ""}; it cannot be rolled back`);
  const deploymentId = deploymentIdFor(input.actor, input.idempotencyKey === null ? null : `rollback\n${input.idempotencyKey}`);
  const body = { rollbackOf: input.deploymentId };
  const existing = (await deps.deployments.load(deploymentId)).state;
  if (existing.status === "none" && deps.previews !== null)
    refuseEmpty(
      await deps.previews.preview({
        component: origin.component!,
        version: origin.version!,
        hosts: [],
        selector: null,
        strategy: ROLLBACK_STRATEGY,
        kind: "rollback",
        origin: input.deploymentId,
      }),
      false,
    );
  const out = await deps.deployments.handle(
    deploymentId,
    {
      type: "RequestDeployment",
      data: {
        deploymentId,
        component: origin.component!,
        version: origin.version!,
        hosts: [],
        idempotencyKey: input.idempotencyKey,
        requestHash: sha256(JSON.stringify(body)),
        taskTimeoutMs: origin.taskTimeoutMs ?? deps.defaultTaskTimeoutMs,
        strategy: ROLLBACK_STRATEGY,
        kind: "rollback",
        origin: input.deploymentId,
      },
    },
    meta,
    `${deploymentId}:requested`,
  );
  if (out.state.origin !== input.deploymentId) throw new HttpError(422, "idempotency_mismatch", "this idempotency key was used for another rollback");
  return { status: 202, replayed: out.events.length === 0, body: { deploymentId, status: "accepted", location: `/v1/deployments/${deploymentId}` } };
}
