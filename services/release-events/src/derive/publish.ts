import { releaseNameOf, releaseSubjects, STREAM_EVENTS, subjects, STREAM_RELEASE } from "@molt/contracts";
import { createCheckpointedFollower, type CheckpointedFollower, type Db } from "@molt/db";
import { concerns, followStream, storedCommitOf, type RawMessage } from "@molt/event-store";
import type { Logger } from "@molt/runtime";
import { jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { deriveRelease, DERIVED_FROM } from "./derive.js";

/** The checkpoint row of the derivation. */
export const DERIVE_CHECKPOINT = "release-events";

/**
 * How long a run of commits waits for more before its one transaction. A rollout's commits come
 * a few ms apart: without the wait each was its own transaction (most of this service's CPU in a
 * rollout). Release events are published that much later.
 */
export const DEFAULT_LINGER_MS = 100;

/**
 * Follows MOLT_EVENTS from its checkpoint and publishes each commit's release events into
 * MOLT_RELEASE before the transaction that moves the checkpoint commits. A crash between the two
 * publishes them again on restart under the same message ids (the source events' ids), which
 * JetStream drops inside the stream's duplicate window: none is lost, none is stored twice.
 */
export function createReleasePublisher(deps: {
  nc: NatsConnection;
  db: Db;
  logger: Logger;
  stream?: string;
  retryMs?: number;
  /** See DEFAULT_LINGER_MS. */
  lingerMs?: number;
  /** Told once a commit's events are published and its checkpoint committed. */
  onPublished?: () => void;
}): CheckpointedFollower {
  const js = jetstream(deps.nc);
  const stream = deps.stream ?? STREAM_RELEASE;
  return createCheckpointedFollower<RawMessage>({
    db: deps.db,
    logger: deps.logger,
    name: DERIVE_CHECKPOINT,
    open: (fromSeq, handler, onError) => followStream(deps.nc, { stream: STREAM_EVENTS, filter: subjects.all, fromSeq, handler, onError }),
    lingerMs: deps.lingerMs ?? DEFAULT_LINGER_MS,
    apply: async (tx, m) => {
      if (!concerns(m.data, DERIVED_FROM)) return;
      let events;
      try {
        events = storedCommitOf(m).commit.events;
      } catch (err) {
        // The event store refuses such commits on append; one that got in anyway has no public meaning.
        deps.logger.warn({ err, seq: m.seq, subject: m.subject }, "skipped a commit that does not validate");
        return;
      }
      for (const { component, event } of await deriveRelease(tx, events)) {
        const name = releaseNameOf(event.type)!;
        await js.publish(releaseSubjects.of(component, name), JSON.stringify(event), { msgID: event.id, expect: { streamName: stream } });
      }
    },
    ...(deps.onPublished ? { onApplied: deps.onPublished } : {}),
    ...(deps.retryMs !== undefined ? { retryMs: deps.retryMs } : {}),
  });
}
