/** An error with an HTTP status and a stable code, raised at the edge. */
export class HttpError extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Domain error codes → HTTP status, mapped at one boundary. */
const STATUS_BY_CODE: Record<string, number> = {
  validation: 400,
  invalid_host_id: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  illegal_state: 409,
  conflict: 409,
  busy: 409,
  concurrency: 412,
  too_large: 413,
  idempotency_mismatch: 422,
  unavailable: 503,
};

export function statusForCode(code: string): number | undefined {
  return STATUS_BY_CODE[code];
}
