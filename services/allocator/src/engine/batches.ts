import type { HostOutcome, MoltEvent } from "@molt/contracts";
import { nextCommands, NotFoundError, type EngineCommand } from "@molt/domain";
import type { StoredCommit } from "@molt/event-store";
import type { MessageContext } from "./consumer.js";
import { fresh, metaOf, type EngineDeps } from "./deps.js";

/** The commit id of an engine decision: the same decision from any replica lands once. */
function commitIdOf(deploymentId: string, attempt: number, command: EngineCommand): string {
  switch (command.type) {
    case "StartBatch":
      return `${deploymentId}:batch:${command.data.index}:started`;
    case "AssignHosts":
      return `${deploymentId}:assign:${attempt}:${command.data.batch}:${command.data.from}`;
    case "CompleteBatch":
      return `${deploymentId}:batch:${command.data.index}:completed`;
    case "BrakeDeployment":
      return `${deploymentId}:braked:${attempt}`;
    case "AwaitApproval":
      return `${deploymentId}:awaiting:${command.data.index}`;
    case "CompleteDeployment":
      return `${deploymentId}:completed:${attempt}`;
    case "RecordHostOutcome":
      return `${deploymentId}:outcome:${command.data.hostId}:${command.data.attempt}`;
    case "RecordPlanPart":
    case "SealPlan":
    case "FailDeployment":
      return `${deploymentId}:${command.type}`;
  }
}

export function batches(deps: EngineDeps) {
  /**
   * Asks nextCommands what is due, appends it, and asks again until nothing is; a pause that
   * has not passed hands the message back for redelivery at its end (no walk, no timer).
   */
  async function advance(deploymentId: string, e: MoltEvent, c: StoredCommit, ctx: MessageContext): Promise<void> {
    let loaded = fresh(await deps.deployments.load(deploymentId), c.seq, deploymentId);
    for (;;) {
      const { state } = loaded;
      let now = e.metadata.occurredAt;
      let step = nextCommands(state, state.strategy, now);
      if (step.command === null && step.wakeAt !== null) {
        // Only a pause asks the clock, and only whether it is over.
        const clock = ctx.clock().toISOString();
        if (clock >= step.wakeAt) {
          now = clock;
          step = nextCommands(state, state.strategy, now);
        }
      }
      if (step.command === null) {
        if (step.wakeAt !== null) ctx.redeliverAt(step.wakeAt);
        return;
      }
      const out = await deps.deployments.handle(deploymentId, step.command, metaOf(e, now), commitIdOf(deploymentId, state.attempt, step.command));
      loaded = { ...loaded, state: out.state, seq: out.seq };
    }
  }

  /** How a host's task ended, into the deployment's counters; a task of an unknown deployment is not ours to count. */
  async function recordOutcome(e: MoltEvent, where: { deploymentId: string; hostId: string; attempt: number }, outcome: HostOutcome, reason?: string) {
    try {
      await deps.deployments.handle(
        where.deploymentId,
        { type: "RecordHostOutcome", data: { hostId: where.hostId, attempt: where.attempt, outcome, ...(reason !== undefined ? { reason } : {}) } },
        metaOf(e),
        `${where.deploymentId}:outcome:${where.hostId}:${where.attempt}`,
      );
    } catch (err) {
      if (!(err instanceof NotFoundError)) throw err;
      deps.logger.warn({ ...where }, "a task ended for a deployment that does not exist");
    }
  }

  return { advance, recordOutcome };
}
