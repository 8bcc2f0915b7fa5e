import { SlotState, subjects, type MoltEvent, type StepReport } from "@molt/contracts";
import {
  decideSlot,
  evolveSlot,
  initialSlotState,
  toEnvelopes,
  type CommandMeta,
  type ReportResult,
  type SlotCommand,
  type SlotEventBody,
} from "@molt/domain";
import type { EventStore } from "@molt/event-store";
import { retryOnConflict } from "./retry.js";

export interface LoadedSlot {
  state: SlotState;
  seq: number;
}

export interface SlotOutcome {
  events: MoltEvent[];
  state: SlotState;
  seq: number;
}

/**
 * The task-slot aggregate (`molt.es.host.<host>.task.<component>`). Every commit carries the
 * slot's state after it, so a decision needs one direct get, not a replay.
 */
export function slotRepository(store: EventStore) {
  const load = async (hostId: string, component: string, opts?: { consistent?: boolean }): Promise<LoadedSlot> => {
    const last = await store.readLast(subjects.slot(hostId, component), opts);
    if (!last) return { state: initialSlotState(), seq: 0 };
    return { state: SlotState.parse(last.commit.state), seq: last.seq };
  };

  const commit = async (hostId: string, component: string, loaded: LoadedSlot, bodies: SlotEventBody[], meta: CommandMeta, commitId: string) => {
    const state = bodies.reduce(evolveSlot, loaded.state);
    const events = toEnvelopes(bodies, meta, commitId) as MoltEvent[];
    const { seq } = await store.append(subjects.slot(hostId, component), { commitId, events, state }, { expectedSequence: loaded.seq });
    return { events, state, seq };
  };

  return {
    load,
    /** Decides a command against the current slot and appends the result; no events → nothing written. */
    async handle(
      hostId: string,
      component: string,
      command: Exclude<SlotCommand, { type: "RecordReport" }>,
      meta: CommandMeta,
      commitId: string,
      /** The slot as the caller just read it: the first try decides on it (a conflict re-reads). */
      known?: LoadedSlot,
    ): Promise<SlotOutcome> {
      let first = known;
      return retryOnConflict(async () => {
        const loaded = first ?? (await load(hostId, component));
        first = undefined;
        const bodies = decideSlot(command, loaded.state);
        if (bodies.length === 0) return { events: [], state: loaded.state, seq: loaded.seq };
        return commit(hostId, component, loaded, bodies, meta, commitId);
      });
    },
    /**
     * One step report → one commit, with the commit id `taskId:lastSeq` so a report retried by the
     * agent after its answer was lost is stored once (and answered `duplicate` on the re-decide).
     */
    async record(report: StepReport, meta: CommandMeta): Promise<ReportResult> {
      const lastSeq = report.entries[report.entries.length - 1]!.seq;
      const commitId = `${report.taskId}:${lastSeq}`;
      return retryOnConflict(async () => {
        let loaded = await load(report.hostId, report.component);
        let result = decideSlot({ type: "RecordReport", data: { report } }, loaded.state);
        if (result.status === "refused") {
          // A refusal is final for the agent: make sure it does not rest on a replica's stale view.
          loaded = await load(report.hostId, report.component, { consistent: true });
          result = decideSlot({ type: "RecordReport", data: { report } }, loaded.state);
        }
        if (result.status !== "accepted") return result;
        const out = await store.append(
          subjects.slot(report.hostId, report.component),
          { commitId, events: toEnvelopes(result.events, meta, commitId), state: result.events.reduce(evolveSlot, loaded.state) },
          { expectedSequence: loaded.seq },
        );
        return out.duplicate ? { status: "duplicate" } : result;
      });
    },
  };
}

export type SlotRepository = ReturnType<typeof slotRepository>;
