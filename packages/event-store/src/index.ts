export { createEventStore, decodeCommit, type EventStore, type StoredCommit, type NewCommit, type AppendResult, type Subscription } from "./event-store.js";
export { ensureEventStream, ensureAuditStream, STREAM_AUDIT, type EventStreamOptions } from "./stream.js";
export { EventStoreError, ConcurrencyError, CorruptCommitError, InvalidCommitError, CommitTooLargeError } from "./errors.js";
