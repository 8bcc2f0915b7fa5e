import { DeploymentEvent, subjects, type MoltEvent } from "@molt/contracts";
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

const DEPLOYMENT_EVENTS: ReadonlySet<string> = new Set(DeploymentEvent.options.map((o) => o.shape.type.value));
const isDeploymentEvent = (e: MoltEvent): e is DeploymentEvent => DEPLOYMENT_EVENTS.has(e.type);

/**
 * The deployment aggregate (`molt.es.deployment.<id>`), rebuilt by replaying its commits. An
 * in-process cache keeps the last state per id (bounded, least recently used first out); a newer commit on the subject (seen through the expected sequence) simply
 * means a replay from where the cache stands. States only ever move forward: evolve updates a
 * state's host map in place, so a decision's result is read back through `load`, never folded
 * into the cached value a second time.
 */
export function deploymentRepository(store: EventStore, opts: { cacheSize?: number } = {}) {
  const cacheSize = opts.cacheSize ?? 256;
  const cache = new Map<string, LoadedDeployment>();
  // One replay at a time per id: two concurrent loads folding into the same cached state would apply events twice.
  const loading = new Map<string, Promise<LoadedDeployment>>();

  const load = (deploymentId: string): Promise<LoadedDeployment> => {
    const running = loading.get(deploymentId);
    // A load that started earlier may miss a commit the caller already knows of: chain, then read on.
    const next = (running ?? Promise.resolve(undefined)).catch(() => undefined).then(() => replay(deploymentId));
    loading.set(deploymentId, next);
    void next.finally(() => loading.get(deploymentId) === next && loading.delete(deploymentId)).catch(() => undefined);
    return next;
  };

  const replay = async (deploymentId: string): Promise<LoadedDeployment> => {
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
    cache.delete(deploymentId);
    if (loaded.seq > 0) {
      cache.set(deploymentId, loaded);
      for (const oldest of cache.keys()) {
        if (cache.size <= cacheSize) break;
        cache.delete(oldest);
      }
    }
    return loaded;
  };

  return {
    load,
    /** How many deployments the cache holds (bounded by `cacheSize`). */
    cached: () => cache.size,
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
        await store.append(subjects.deployment(deploymentId), { commitId, events }, { expectedSequence: loaded.seq });
        const after = await load(deploymentId);
        return { events, state: after.state, seq: after.seq };
      });
    },
  };
}

export type DeploymentRepository = ReturnType<typeof deploymentRepository>;
