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

/**
 * The one shape of every error body, in every service and the gateway:
 * `{ "error": { "code": "<stable code>", "message": "<what was wrong, for a human>" } }`.
 */
export interface ErrorBody {
  error: { code: string; message: string };
}

export function errorBody(code: string, message: string): ErrorBody {
  return { error: { code, message } };
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
  unsupported_media_type: 415,
  idempotency_mismatch: 422,
  rate_limited: 429,
  unavailable: 503,
};

export function statusForCode(code: string): number | undefined {
  return STATUS_BY_CODE[code];
}

/** fastify's own 4xx codes (router, body parsers) → a stable Molt code, so clients see one vocabulary. */
const CODE_BY_FASTIFY_CODE: Record<string, string> = {
  FST_ERR_BAD_URL: "validation",
  FST_ERR_CTP_INVALID_JSON_BODY: "validation",
  FST_ERR_CTP_EMPTY_JSON_BODY: "validation",
  FST_ERR_CTP_BODY_TOO_LARGE: "too_large",
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: "validation",
  FST_ERR_CTP_INVALID_MEDIA_TYPE: "unsupported_media_type",
  FST_ERR_CTP_INVALID_TYPE: "unsupported_media_type",
  FST_ERR_ASYNC_CONSTRAINT: "validation",
};

export function codeForFastifyCode(code: string | undefined): string {
  return (code !== undefined ? CODE_BY_FASTIFY_CODE[code] : undefined) ?? "bad_request";
}
