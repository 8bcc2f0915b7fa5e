import { createHash } from "node:crypto";
import { decodeHostToken, parseEventSubject, SlotState, type MoltEvent } from "@molt/contracts";
import { SlotBusyError, isTerminal, nextBatchToStart, outcomeOf } from "@molt/domain";
import type { DeploymentRepository, SlotRepository } from "@molt/aggregates";
import { CommitTooLargeError, type EventStore, type StoredCommit } from "@molt/event-store";
import type { Logger } from "@molt/runtime";
import type { DesiredStates } from "../dispatch/desired.js";
import { planDeployment } from "../planning/plan.js";
import { loadHostStates, loadPackages } from "../planning/resolve.js";

/** Deterministic, so every replica (and every redelivery) allocates the same task. */
export function taskIdFor(deploymentId: string, hostId: string, attempt: number): string {
  return `t-${createHash("sha256").update(`${deploymentId}\n${hostId}\n${attempt}`).digest("hex").slice(0, 24)}`;
}

/** The slot is held by another task: retry the whole message later, when it may be free. */
export class RetryLater extends Error {}

export interface EngineDeps {
  store: EventStore;
  deployments: DeploymentRepository;
  slots: SlotRepository;
  desired: DesiredStates;
  logger: Logger;
  /** Where hosts download a package variant from (package-repo or the gateway in front of it). */
  downloadUrl: (component: string, version: string, platform: string) => string;
  replicaId: string;
}

/**
 * The roll engine's reaction to one commit. Every rule re-reads the aggregate it writes,
 * decides, and appends with the expected sequence; decisions are idempotent (same commit ids,
 * deciders that answer [] for what is already done), so a redelivered or concurrently handled
 * message changes nothing twice. Time comes from the triggering event, so replicas agree.
 */
export function engine(deps: EngineDeps) {
  const meta = (e: MoltEvent) => ({ now: e.metadata.occurredAt, actor: "allocator", correlationId: e.metadata.correlationId, causationId: e.id });

  async function plan(e: Extract<MoltEvent, { type: "DeploymentRequested" }>) {
    const { deploymentId, component, version, hosts } = e.data;
    const [hostStates, packages] = await Promise.all([
      loadHostStates(deps.store, hosts),
      loadPackages(deps.store, component, version, (p) => deps.downloadUrl(component, version, p)),
    ]);
    const planned = planDeployment({ component, version, hosts, hostStates, packages });
    try {
      await deps.deployments.handle(deploymentId, { type: "PlanDeployment", data: planned }, meta(e), `${deploymentId}:planned`);
    } catch (err) {
      if (!(err instanceof CommitTooLargeError)) throw err;
      // Retrying would fail the same way forever: end the deployment with a reason an operator can act on.
      await deps.deployments.handle(
        deploymentId,
        { type: "FailDeployment", data: { reason: `the plan for ${hosts.length} hosts does not fit in one commit (${err.bytes} bytes, limit ${err.limit}): split the deployment` } },
        meta(e),
        `${deploymentId}:failed`,
      );
    }
  }

  /**
   * A read must include the commit that triggered it; a replica's direct get may lag behind
   * (R3 clusters). Deciding on such a view could ack a message whose work was never done.
   */
  const fresh = <T extends { seq: number }>(loaded: T, atLeast: number, what: string): T => {
    if (loaded.seq < atLeast) throw new RetryLater(`stale read of ${what}: at ${loaded.seq}, the trigger is ${atLeast}`);
    return loaded;
  };

  async function startNext(deploymentId: string, e: MoltEvent, c: StoredCommit) {
    const { state } = fresh(await deps.deployments.load(deploymentId), c.seq, deploymentId);
    const index = nextBatchToStart(state);
    if (index === undefined) return;
    await deps.deployments.handle(deploymentId, { type: "StartBatch", data: { index } }, meta(e), `${deploymentId}:batch:${index}:started`);
  }

  async function allocateBatch(e: Extract<MoltEvent, { type: "BatchStarted" }>, c: StoredCommit) {
    const { deploymentId, index } = e.data;
    const { state } = fresh(await deps.deployments.load(deploymentId), c.seq, deploymentId);
    const batch = state.batches.find((b) => b.index === index);
    if (!batch || !state.component || !state.version || isTerminal(state)) return;
    // The deadline counts from the allocation, not the batch start: a slot that stayed busy
    // must not hand its host a task that is already late. Task ids dedupe, so replicas that
    // compute another deadline for the same task simply append nothing.
    const deadline = new Date(Date.now() + (state.taskTimeoutMs ?? 900_000)).toISOString();
    let busy = 0;
    for (const h of batch.hosts) {
      const pkg = state.packages[h.platform];
      if (!pkg) throw new Error(`plan of ${deploymentId} names no package for platform ${h.platform}`);
      const taskId = taskIdFor(deploymentId, h.hostId, 1);
      try {
        await deps.slots.handle(
          h.hostId,
          state.component,
          {
            type: "AllocateTask",
            data: {
              taskId,
              deploymentId,
              hostId: h.hostId,
              component: state.component,
              version: state.version,
              fromVersion: h.fromVersion,
              attempt: 1,
              deadline,
              package: pkg,
            },
          },
          meta(e),
          `${taskId}:allocated`,
        );
      } catch (err) {
        if (!(err instanceof SlotBusyError)) throw err;
        busy++;
        deps.logger.info({ hostId: h.hostId, activeTask: err.activeTaskId, deploymentId }, "slot busy; will retry");
      }
    }
    if (busy > 0) throw new RetryLater(`${busy} slot(s) busy in batch ${index} of ${deploymentId}`);
  }

  async function dispatch(e: Extract<MoltEvent, { type: "TaskAllocated" }>, c: StoredCommit) {
    const d = e.data;
    const { state } = fresh(await deps.slots.load(d.hostId, d.component), c.seq, c.subject);
    if (state.active?.taskId !== d.taskId || state.active.status !== "allocated") return;
    // TaskAllocated then the KV write is not atomic: whoever handles this message (again)
    // completes the write (a no-op if it is there) and records TaskDispatched.
    const stillAllocated = async () => {
      const now = await deps.slots.load(d.hostId, d.component, { consistent: true });
      return now.state.active?.taskId === d.taskId && now.state.active.status === "allocated";
    };
    const revision = await deps.desired.write(stillAllocated, {
      taskId: d.taskId,
      deploymentId: d.deploymentId,
      hostId: d.hostId,
      component: d.component,
      kind: "upgrade",
      version: d.version,
      fromVersion: d.fromVersion,
      attempt: d.attempt,
      deadline: d.deadline,
      package: d.package,
    });
    if (revision === null) return;
    await deps.slots.handle(d.hostId, d.component, { type: "DispatchTask", data: { taskId: d.taskId, revision } }, meta(e), `${d.taskId}:dispatched`);
  }

  async function taskFinished(c: StoredCommit, taskId: string, e: MoltEvent) {
    const where = parseEventSubject(c.subject);
    if (where?.kind !== "slot") return;
    const done = SlotState.parse(c.commit.state).recent.find((r) => r.taskId === taskId);
    if (!done) return;
    await deps.desired.withdraw(decodeHostToken(where.hostToken), where.component, taskId);
    await completeBatches(done.deploymentId, e);
  }

  async function completeBatches(deploymentId: string, e: MoltEvent) {
    const { state } = await deps.deployments.load(deploymentId);
    if (!state.component) return;
    for (const index of state.startedBatches) {
      if (state.completedBatches.some((b) => b.index === index)) continue;
      const batch = state.batches.find((b) => b.index === index);
      if (!batch) continue;
      let succeeded = 0;
      let failed = 0;
      let open = false;
      for (const h of batch.hosts) {
        // Through the leader: two hosts ending at once must not each see the other as running.
        const { state: slot } = await deps.slots.load(h.hostId, state.component, { consistent: true });
        const outcome = outcomeOf(slot, taskIdFor(deploymentId, h.hostId, 1));
        if (outcome === undefined) {
          open = true;
          break;
        }
        if (outcome === "succeeded") succeeded++;
        else failed++;
      }
      if (open) continue;
      await deps.deployments.handle(
        deploymentId,
        { type: "CompleteBatch", data: { index, succeeded, failed } },
        meta(e),
        `${deploymentId}:batch:${index}:completed`,
      );
    }
  }

  return {
    async handle(c: StoredCommit): Promise<void> {
      for (const e of c.commit.events) {
        switch (e.type) {
          case "DeploymentRequested":
            await plan(e);
            break;
          case "DeploymentPlanned":
          case "BatchCompleted":
          case "DeploymentResumed":
          case "CanaryApproved":
            await startNext(e.data.deploymentId, e, c);
            break;
          case "BatchStarted":
            await allocateBatch(e, c);
            break;
          case "TaskAllocated":
            await dispatch(e, c);
            break;
          case "TaskSucceeded":
          case "TaskFailed":
          case "TaskRejected":
          case "TaskTimedOut":
          case "TaskCancelled":
            await taskFinished(c, e.data.taskId, e);
            break;
          default:
            // Other events need no reaction from the roll engine (yet).
            break;
        }
      }
    },
    /** Times out every active task past its deadline; every replica runs it, the expected sequence makes it once. */
    async tick(now: Date): Promise<number> {
      let timedOut = 0;
      for await (const d of deps.desired.active()) {
        if (Date.parse(d.deadline) > now.getTime()) continue;
        const out = await deps.slots.handle(
          d.hostId,
          d.component,
          { type: "TimeOutTask", data: { taskId: d.taskId, now: now.toISOString() } },
          { now: now.toISOString(), actor: "allocator", correlationId: d.deploymentId },
          `${d.taskId}:timed-out`,
        );
        if (out.events.length > 0) timedOut++;
        // A task that ended while its key was still there is withdrawn here as well.
        if (out.state.active?.taskId !== d.taskId) await deps.desired.withdraw(d.hostId, d.component, d.taskId);
      }
      return timedOut;
    },
  };
}
