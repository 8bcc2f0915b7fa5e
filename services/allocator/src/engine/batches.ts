import { createHash } from "node:crypto";
import type { HostOutcome, MoltEvent } from "@molt/contracts";
import { nextCommands, NotFoundError, type EngineCommand, type HostOutcomeData } from "@molt/domain";
import type { StoredCommit } from "@molt/event-store";
import type { MessageContext } from "./consumer.js";
import { fresh, metaOf, taskIdFor, type EngineDeps } from "./deps.js";

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
      return outcomesCommitId(deploymentId, command.data.outcomes);
    case "RecordPlanPart":
    case "SealPlan":
    case "FailDeployment":
      return `${deploymentId}:${command.type}`;
  }
}

function outcomesCommitId(deploymentId: string, outcomes: HostOutcomeData[]): string {
  const key = outcomes.map((o) => `${o.hostId}#${o.attempt}`).sort().join("\n");
  return `${deploymentId}:outcomes:${createHash("sha256").update(key).digest("hex").slice(0, 24)}`;
}

/**
 * Runs work for one key at a time in this replica, in arrival order: every task outcome of a
 * deployment lands on the same aggregate, and racing appends from one process would only
 * conflict and back off.
 */
function serialByKey() {
  const tails = new Map<string, Promise<unknown>>();
  return <T>(key: string, work: () => Promise<T>): Promise<T> => {
    const run = (tails.get(key) ?? Promise.resolve()).catch(() => undefined).then(work);
    tails.set(key, run);
    void run.finally(() => tails.get(key) === run && tails.delete(key)).catch(() => undefined);
    return run;
  };
}

export function batches(deps: EngineDeps) {
  const serial = serialByKey();
  /** Outcomes waiting for their deployment's next group commit, with the callers to answer. */
  const pending = new Map<string, Array<{ o: HostOutcomeData; e: MoltEvent; done: (err?: Error) => void }>>();

  /**
   * Asks nextCommands what is due, appends it, and asks again until nothing is; a pause that
   * has not passed hands the message back for redelivery at its end (no walk, no timer).
   */
  function advance(deploymentId: string, e: MoltEvent, c: StoredCommit, ctx: MessageContext): Promise<void> {
    return serial(deploymentId, () => advanceNow(deploymentId, e, c, ctx));
  }

  async function advanceNow(deploymentId: string, e: MoltEvent, c: StoredCommit, ctx: MessageContext): Promise<void> {
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
      let command = step.command;
      if (command.type === "AssignHosts" && deps.leases !== undefined) {
        // The fleet-wide cap: only hosts whose task holds a lease are assigned. None free: look
        // again shortly (the message comes back), as leases are released by any deployment's tasks.
        const deadline = new Date(Date.parse(now) + (state.taskTimeoutMs ?? 900_000)).toISOString();
        const tasks = command.data.hosts.map((hostId) => ({ taskId: taskIdFor(deploymentId, hostId, state.attempt), deploymentId, hostId, component: state.component!, deadline }));
        const got = await deps.leases.acquire(tasks, ctx.clock());
        if (got === 0) {
          ctx.redeliverAt(new Date(ctx.clock().getTime() + (deps.leaseRetryMs ?? 250)).toISOString());
          return;
        }
        command = { ...command, data: { ...command.data, hosts: command.data.hosts.slice(0, got) } };
      }
      const out = await deps.deployments.handle(deploymentId, command, metaOf(e, now), commitIdOf(deploymentId, state.attempt, command));
      loaded = { ...loaded, state: out.state, seq: out.seq };
    }
  }

  /**
   * How a host's task ended, into the deployment's counters. Outcomes arriving together are
   * group-committed: one commit per deployment for all that queued while the previous one was
   * being appended. Resolves once this outcome is stored; a task of an unknown deployment is
   * not ours to count.
   */
  function recordOutcome(e: MoltEvent, where: { deploymentId: string; hostId: string; attempt: number }, outcome: HostOutcome, reason?: string): Promise<void> {
    const o: HostOutcomeData = { hostId: where.hostId, attempt: where.attempt, outcome, ...(reason !== undefined ? { reason } : {}) };
    return new Promise<void>((resolve, reject) => {
      const queue = pending.get(where.deploymentId);
      const item = { o, e, done: (err?: Error) => (err === undefined ? resolve() : reject(err)) };
      if (queue) {
        queue.push(item);
        return;
      }
      pending.set(where.deploymentId, [item]);
      void serial(`outcomes:${where.deploymentId}`, () => flush(where.deploymentId));
    });
  }

  async function flush(deploymentId: string): Promise<void> {
    const items = pending.get(deploymentId) ?? [];
    pending.delete(deploymentId);
    if (items.length === 0) return;
    const outcomes = items.map((i) => i.o);
    try {
      await deps.deployments.handle(deploymentId, { type: "RecordHostOutcome", data: { outcomes } }, metaOf(items[0]!.e), outcomesCommitId(deploymentId, outcomes));
      for (const i of items) i.done();
    } catch (err) {
      if (err instanceof NotFoundError) {
        deps.logger.warn({ deploymentId, hosts: outcomes.length }, "tasks ended for a deployment that does not exist");
        for (const i of items) i.done();
      } else for (const i of items) i.done(err instanceof Error ? err : new Error(String(err)));
    }
  }

  return { advance, recordOutcome };
}
