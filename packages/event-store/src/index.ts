export { concerns, createEventStore, currentTraceparent, decodeCommit, storedCommitOf, type EventStore, type StoredCommit, type NewCommit, type AppendResult } from "./event-store.js";
export { followStream, type RawMessage, type Subscription } from "./follow.js";
export { ensureEventStream, ensureAuditStream, STREAM_AUDIT, type EventStreamOptions } from "./stream.js";
export { EventStoreError, ConcurrencyError, CorruptCommitError, InvalidCommitError, CommitTooLargeError } from "./errors.js";
export { jetStreamPublisher, type JetStreamPublish, type Ack } from "./publish.js";
