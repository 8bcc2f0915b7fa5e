import { decodeHostToken, parseEventSubject, SlotState, subjects, type EventOf, type HostOutcome, type MoltEvent, type TaskOutcome } from "@molt/contracts";
import { inFlightHosts, isTerminal, SlotBusyError } from "@molt/domain";
import { currentTraceparent, type StoredCommit } from "@molt/event-store";
import type { LoadedSlot } from "@molt/aggregates";
import { ZodError } from "zod";

/** The allocation's trace (when tracing), for the host to continue. */
const traceOf = () => {
  const traceparent = currentTraceparent();
  return traceparent ? { traceparent } : {};
};
import type { batches } from "./batches.js";
import { fresh, metaOf, pool, RetryLater, taskIdFor, type EngineDeps } from "./deps.js";

const FAILED_OUTCOMES: ReadonlySet<TaskOutcome> = new Set(["failed", "rejected", "timed-out"]);

export function dispatcher(deps: EngineDeps, rules: ReturnType<typeof batches>) {
  /**
   * HostsAssigned → one TaskAllocated per host. A slot held by another deployment's task is
   * not waited for: the host is recorded `busy` with the holder (the operator retries it
   * later), so one busy slot never holds a batch. A host whose task cannot be built is failed
   * with the reason instead of stopping the batch.
   */
  async function allocate(e: EventOf<"HostsAssigned">, c: StoredCommit): Promise<void> {
    const { deploymentId, attempt, hosts } = e.data;
    let loaded = fresh(await deps.deployments.load(deploymentId), c.seq, deploymentId);
    const component = loaded.state.component!;
    const deadline = new Date(Date.parse(e.metadata.occurredAt) + (loaded.state.taskTimeoutMs ?? 900_000)).toISOString();
    /**
     * The deployment as it is now, not as it was when the message arrived: a brake (or a cancel)
     * appended meanwhile must stop the allocations that have not happened yet. One direct get of
     * the subject's last sequence; a replay only when something was appended.
     */
    const latest = async () => {
      if ((await deps.store.lastSequence(subjects.deployment(deploymentId))) > loaded.seq) loaded = await deps.deployments.load(deploymentId);
      return loaded.state;
    };
    await pool(hosts, 16, async (hostId) => {
      const entry = loaded.state.hostIndex.get(hostId);
      if (entry === undefined || entry.attempt !== attempt) return;
      const where = { deploymentId, hostId, attempt };
      const taskId = taskIdFor(deploymentId, hostId, attempt);
      const state = await latest();
      if (isTerminal(state)) return notAllocated(e, where, taskId, "cancelled", `deployment ${state.status} before the task was allocated`);
      if (state.braked !== null)
        return notAllocated(e, where, taskId, "cancelled", `not allocated: the deployment braked (${state.braked.failed} of ${state.braked.finished} failed) before the task was allocated`);
      const version = entry.version ?? state.version!;
      if (attempt > 1) {
        // A retry runs only hosts still short of the target: another deployment (or a hand) may have upgraded it since.
        const slot = (await deps.slots.load(hostId, component)).state;
        if (slot.active === null && slot.version === version)
          return notAllocated(e, where, taskId, "skipped", `already at ${component} ${version}: upgraded since attempt ${attempt - 1} of this deployment`);
      }
      const pkg = state.packages[entry.platform];
      if (state.kind === "upgrade" && pkg === undefined)
        return notAllocated(e, where, taskId, "failed", `the plan names no package for platform ${entry.platform}`);
      try {
        await deps.slots.handle(
          hostId,
          component,
          {
            type: "AllocateTask",
            data: {
              taskId,
              deploymentId,
              hostId,
              component,
              version,
              fromVersion: entry.fromVersion,
              attempt,
              deadline,
              ...(state.kind === "rollback" ? { kind: "rollback" as const } : { package: pkg! }),
            },
          },
          metaOf(e),
          `${taskId}:allocated`,
        );
      } catch (err) {
        if (err instanceof SlotBusyError) {
          const holder = (await deps.slots.load(hostId, component)).state.active;
          return notAllocated(e, where, taskId, "busy", `slot busy with task ${err.activeTaskId}${holder ? ` of deployment ${holder.deploymentId}` : ""}`);
        }
        if (err instanceof ZodError) return notAllocated(e, where, taskId, "failed", `the task cannot be built: ${err.message.slice(0, 300)}`);
        throw err;
      }
    });
  }

  /** A host of an assignment that gets no task: its outcome says why. */
  async function notAllocated(e: MoltEvent, where: { deploymentId: string; hostId: string; attempt: number }, taskId: string, outcome: HostOutcome, reason: string): Promise<void> {
    await rules.recordOutcome(e, where, outcome, reason);
    await deps.leases?.release(taskId);
  }

  /**
   * TaskAllocated → the desired state in KV, then TaskDispatched; a cancelled deployment's task
   * is cancelled instead. The slot is read once, consistently, after the key's revision (see
   * `desired.write`), and that read is what TaskDispatched is decided on.
   */
  async function dispatch(e: EventOf<"TaskAllocated">, c: StoredCommit): Promise<void> {
    const d = e.data;
    let slot: LoadedSlot | undefined;
    const stillAllocated = async () => {
      slot = await deps.slots.load(d.hostId, d.component, { consistent: true });
      if (slot.seq < c.seq) throw new RetryLater(`stale read of ${c.subject}: at ${slot.seq}, the trigger is ${c.seq}`);
      return slot.state.active?.taskId === d.taskId && slot.state.active.status === "allocated";
    };
    const deployment = (await deps.deployments.load(d.deploymentId)).state;
    if (deployment.status === "cancelled") {
      await deps.slots.handle(d.hostId, d.component, { type: "CancelTask", data: { taskId: d.taskId, reason: "deployment cancelled" } }, metaOf(e), `${d.taskId}:cancelled`);
      return;
    }
    // TaskAllocated then the KV write is not atomic: whoever handles this message (again)
    // completes the write (a no-op if it is there) and records TaskDispatched.
    const revision = await deps.desired.write(stillAllocated, {
      taskId: d.taskId,
      deploymentId: d.deploymentId,
      hostId: d.hostId,
      component: d.component,
      kind: d.kind ?? "upgrade",
      version: d.version,
      fromVersion: d.fromVersion,
      attempt: d.attempt,
      deadline: d.deadline,
      ...(d.package !== undefined ? { package: d.package } : {}),
      ...traceOf(),
    });
    if (revision === null) return;
    await deps.slots.handle(d.hostId, d.component, { type: "DispatchTask", data: { taskId: d.taskId, revision } }, metaOf(e), `${d.taskId}:dispatched`, slot);
  }

  /**
   * A task ended: withdraw its key, count its outcome in its deployment, and quarantine the
   * slot when its last N tasks all failed.
   */
  async function finished(c: StoredCommit, taskId: string, e: MoltEvent): Promise<void> {
    const where = parseEventSubject(c.subject);
    if (where?.kind !== "slot") return;
    const slot = SlotState.parse(c.commit.state);
    const done = slot.recent.find((r) => r.taskId === taskId);
    if (!done) return;
    const hostId = decodeHostToken(where.hostToken);
    await deps.desired.withdraw(hostId, where.component, taskId);
    await deps.leases?.release(taskId);
    if (done.attempt !== undefined) await rules.recordOutcome(e, { deploymentId: done.deploymentId, hostId, attempt: done.attempt }, done.outcome);
    const n = deps.quarantineAfter ?? 0;
    const last = slot.recent.slice(0, n);
    if (n > 0 && !slot.quarantined && last.length === n && last.every((r) => FAILED_OUTCOMES.has(r.outcome)))
      await deps.slots.handle(
        hostId,
        where.component,
        { type: "QuarantineSlot", data: { hostId, component: where.component, reason: `its last ${n} tasks failed`, by: "failures" } },
        metaOf(e),
        `${taskId}:quarantined`,
      );
  }

  /** DeploymentCancelled → every task in flight is withdrawn: cancelled if not started, its key deleted either way. */
  async function cancel(e: EventOf<"DeploymentCancelled">, c: StoredCommit): Promise<void> {
    const { deploymentId } = e.data;
    const { state } = fresh(await deps.deployments.load(deploymentId), c.seq, deploymentId);
    const component = state.component!;
    await pool(inFlightHosts(state), 16, async ({ hostId, attempt }) => {
      const taskId = taskIdFor(deploymentId, hostId, attempt);
      const out = await deps.slots.handle(hostId, component, { type: "CancelTask", data: { taskId, reason: "deployment cancelled" } }, metaOf(e), `${taskId}:cancelled`);
      // A task the host already runs is not cancelled in the slot: the withdrawn key tells the
      // agent to stop its client if it has not reached OVERRIDE; its report ends the task.
      if (out.state.active?.taskId === taskId || out.events.length > 0) await deps.desired.withdraw(hostId, component, taskId);
    });
  }

  return { allocate, dispatch, finished, cancel };
}
