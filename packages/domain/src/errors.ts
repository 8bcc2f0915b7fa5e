/**
 * Codes are the only thing a boundary looks at: each service maps them to HTTP (or to a
 * `refused` answer) in one place, so deciders never know about transports.
 */
export type DomainErrorCode = "validation" | "illegal_state" | "not_found" | "conflict" | "idempotency_mismatch" | "busy";

export abstract class DomainError extends Error {
  abstract readonly code: DomainErrorCode;

  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

export class ValidationError extends DomainError {
  readonly code = "validation";
}

export class IllegalStateError extends DomainError {
  readonly code = "illegal_state";
}

export class NotFoundError extends DomainError {
  readonly code = "not_found";
}

export class ConflictError extends DomainError {
  readonly code = "conflict";
}

/** The same idempotency key (hence the same deployment id) came back with a different body. */
export class IdempotencyMismatchError extends DomainError {
  readonly code = "idempotency_mismatch";

  constructor(
    readonly deploymentId: string,
    message = `deployment ${deploymentId} was already requested with a different body for this idempotency key`,
  ) {
    super(message);
  }
}

/** A different task holds the slot; the allocator retries after that task ends. */
export class SlotBusyError extends DomainError {
  readonly code = "busy";

  constructor(
    readonly requestedTaskId: string,
    readonly activeTaskId: string,
  ) {
    super(`slot is busy with task ${activeTaskId}; cannot allocate task ${requestedTaskId}`);
  }
}
