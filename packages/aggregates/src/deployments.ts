import { subjects, type DeploymentEvent, type MoltEvent } from "@molt/contracts";
import {
  decideDeployment,
  evolveDeployment,
  initialDeploymentState,
  toEnvelopes,
  type CommandMeta,
  type DeploymentCommand,
  type DeploymentEventBody,
  type DeploymentState,
} from "@molt/domain";
import type { EventStore } from "@molt/event-store";
import { retryOnConflict } from "./retry.js";

export interface LoadedDeployment {
  state: DeploymentState;
  seq: number;
  /** When the aggregate was first requested, and by whom (from the first event's metadata). */
  requestedAt: string | null;
  requestedBy: string | null;
}

const isDeploymentEvent = (e: MoltEvent): e is DeploymentEvent =>
  e.type === "DeploymentRequested" ||
  e.type === "DeploymentPlanned" ||
  e.type === "BatchStarted" ||
  e.type === "BatchCompleted" ||
  e.type === "DeploymentPaused" ||
  e.type === "DeploymentResumed" ||
  e.type === "DeploymentBraked" ||
  e.type === "CanaryAwaitingApproval" ||
  e.type === "CanaryApproved" ||
  e.type === "DeploymentCancelled" ||
  e.type === "DeploymentCompleted" ||
  e.type === "DeploymentFailed";

/**
 * The deployment aggregate (`molt.es.deployment.<id>`), rebuilt by replaying its commits. An
 * in-process cache keeps the last state per id; a newer commit on the subject (seen through the
 * expected sequence) simply means a fresh replay from where the cache stands.
 */
export function deploymentRepository(store: EventStore) {
  const cache = new Map<string, LoadedDeployment>();

  const load = async (deploymentId: string): Promise<LoadedDeployment> => {
    const subject = subjects.deployment(deploymentId);
    const cached = cache.get(deploymentId);
    const commits = await store.read(subject, cached ? { fromSeq: cached.seq + 1 } : {});
    let loaded: LoadedDeployment = cached ?? { state: initialDeploymentState(), seq: 0, requestedAt: null, requestedBy: null };
    for (const c of commits) {
      let state = loaded.state;
      for (const e of c.commit.events) if (isDeploymentEvent(e)) state = evolveDeployment(state, e);
      const first = c.commit.events[0];
      loaded = {
        state,
        seq: c.seq,
        requestedAt: loaded.requestedAt ?? first?.metadata.occurredAt ?? null,
        requestedBy: loaded.requestedBy ?? first?.metadata.actor ?? null,
      };
    }
    if (loaded.seq > 0) cache.set(deploymentId, loaded);
    return loaded;
  };

  return {
    load,
    async handle(
      deploymentId: string,
      command: DeploymentCommand,
      meta: CommandMeta,
      commitId: string,
    ): Promise<{ events: MoltEvent[]; state: DeploymentState; seq: number }> {
      return retryOnConflict(async () => {
        const loaded = await load(deploymentId);
        const bodies: DeploymentEventBody[] = decideDeployment(command, loaded.state);
        if (bodies.length === 0) return { events: [], state: loaded.state, seq: loaded.seq };
        const events = toEnvelopes(bodies, meta, commitId) as MoltEvent[];
        const { seq } = await store.append(subjects.deployment(deploymentId), { commitId, events }, { expectedSequence: loaded.seq });
        return { events, state: bodies.reduce(evolveDeployment, loaded.state), seq };
      });
    },
  };
}

export type DeploymentRepository = ReturnType<typeof deploymentRepository>;
