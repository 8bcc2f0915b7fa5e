import type { MoltEvent } from "@molt/contracts";
import type { StoredCommit } from "@molt/event-store";
import { batches } from "./batches.js";
import type { MessageContext } from "./consumer.js";
import type { EngineDeps } from "./deps.js";
import { dispatcher } from "./dispatch.js";
import { planner } from "./plan.js";
import { timeouts } from "./timeouts.js";

export { RetryLater, taskIdFor, type EngineDeps } from "./deps.js";
export { allocationOf } from "./timeouts.js";

/** Every event type `handle` acts on (the consumer skips commits with none of them unread). */
export const HANDLED: ReadonlySet<string> = new Set([
  "DeploymentRequested",
  "HostsAssigned",
  "DeploymentCancelled",
  "DeploymentPlanned",
  "BatchStarted",
  "BatchCompleted",
  "HostOutcomeRecorded",
  "DeploymentResumed",
  "CanaryApproved",
  "DeploymentRetried",
  "TaskAllocated",
  "TaskSucceeded",
  "TaskFailed",
  "TaskRejected",
  "TaskTimedOut",
  "TaskCancelled",
] satisfies Array<MoltEvent["type"]>);

/**
 * The roll engine's reaction to one commit. Every rule re-reads the aggregate it writes,
 * decides (the deployment's rules are `nextCommands` in @molt/domain), and appends with the
 * expected sequence; decisions are idempotent (deterministic commit ids, deciders that answer []
 * for what is already done), so a redelivered or concurrently handled message changes nothing
 * twice. Time comes from the triggering event, so replicas agree.
 */
export function engine(deps: EngineDeps) {
  const rules = batches(deps);
  const plans = planner(deps);
  const tasks = dispatcher(deps, rules);
  return {
    plans,
    async handle(c: StoredCommit, ctx: MessageContext): Promise<void> {
      for (const e of c.commit.events) {
        switch (e.type) {
          case "DeploymentRequested":
            await plans.plan(e, c);
            break;
          case "HostsAssigned":
            await tasks.allocate(e, c);
            break;
          case "DeploymentCancelled":
            await tasks.cancel(e, c);
            break;
          case "DeploymentPlanned":
          case "BatchStarted":
          case "BatchCompleted":
          case "HostOutcomeRecorded":
          case "DeploymentResumed":
          case "CanaryApproved":
          case "DeploymentRetried":
            await rules.advance(e.data.deploymentId, e, c, ctx);
            break;
          case "TaskAllocated":
            await tasks.dispatch(e, c);
            break;
          case "TaskSucceeded":
          case "TaskFailed":
          case "TaskRejected":
          case "TaskTimedOut":
          case "TaskCancelled":
            await tasks.finished(c, e.data.taskId, e);
            break;
          default:
            // Other events need no reaction from the roll engine.
            break;
        }
      }
    },
    deadlines: timeouts(deps),
  };
}
