/** Base of every event-store error; `code` is mapped to HTTP at one boundary. */
export class EventStoreError extends Error {
  readonly code: string = "event_store";
}

/** The subject moved on since it was read: re-read, re-decide, retry. JetStream error 10071 (10164 on a replicated stream, nats-server 2.11+). */
export class ConcurrencyError extends EventStoreError {
  override readonly code = "concurrency";
  constructor(
    readonly subject: string,
    readonly expectedSequence: number,
  ) {
    super(`concurrency conflict on ${subject}: expected last sequence ${expectedSequence}, the subject has moved on`);
  }
}

/** A stored message that does not parse as a commit. */
export class CorruptCommitError extends EventStoreError {
  override readonly code = "corrupt_commit";
  constructor(
    readonly subject: string,
    readonly seq: number,
    detail: string,
  ) {
    super(`message ${seq} on ${subject} is not a valid commit: ${detail}`);
  }
}

/** A commit that does not match the contracts: refused before it is stored (the stream is immutable). */
export class InvalidCommitError extends EventStoreError {
  override readonly code = "invalid_commit";
  constructor(
    readonly subject: string,
    detail: string,
  ) {
    super(`refused to append an invalid commit to ${subject}: ${detail}`);
  }
}

/** A commit larger than the server accepts in one message. */
export class CommitTooLargeError extends EventStoreError {
  override readonly code = "too_large";
  constructor(
    readonly subject: string,
    readonly bytes: number,
    readonly limit: number,
  ) {
    super(`commit for ${subject} is ${bytes} bytes; one commit may hold at most ${limit}`);
  }
}
