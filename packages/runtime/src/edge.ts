import { HttpError } from "./errors.js";

/**
 * Input checks every service (and the gateway) makes before anything else sees a request. What
 * they refuse would otherwise surface as a 500: a query whose %-encoding is not UTF-8 throws in
 * decodeURIComponent; NUL and lone surrogates are refused by PostgreSQL (text and jsonb) after
 * the edge has accepted them; a deeply nested body costs recursion in every layer that walks it
 * (zod, canonical JSON, jsonb) and is never a legitimate request.
 */
export const MAX_JSON_DEPTH = 64;

/** NUL, or a UTF-16 surrogate without its pair (what invalid UTF-8 and `\ud800` escapes become). */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

export function hasUnstorableText(s: string): boolean {
  return s.includes("\u0000") || LONE_SURROGATE.test(s);
}

/** Refuses a query string that does not decode to storable UTF-8 text. */
export function checkQueryString(url: string): void {
  const q = url.indexOf("?");
  if (q < 0) return;
  for (const part of url.slice(q + 1).split("&")) {
    let decoded: string;
    try {
      decoded = decodeURIComponent(part.replace(/\+/g, " "));
    } catch {
      throw new HttpError(400, "validation", `query: malformed percent-encoding in ${JSON.stringify(part.slice(0, 100))} (must be UTF-8)`);
    }
    if (hasUnstorableText(decoded))
      throw new HttpError(400, "validation", `query: ${JSON.stringify(part.slice(0, 100))} holds a NUL or an unpaired surrogate`);
  }
}

/** How deep arrays and objects nest in JSON text, counted without parsing it (strings skipped). */
export function jsonDepth(text: string, stopAt = Infinity): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++;
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > max) max = depth;
      if (max > stopAt) return max;
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
  return max;
}

/** A body refused because walking or storing it is itself the harm: it is not kept, not even in the audit log. */
export class UnsafeBodyError extends HttpError {
  constructor(message: string) {
    super(400, "validation", message);
  }
}

/** JSON.parse for request bodies: bounded depth, and no text PostgreSQL would refuse. */
export function parseJsonBody(text: string): unknown {
  if (text.trim() === "") throw new HttpError(400, "validation", "body: empty, but content-type is application/json");
  if (jsonDepth(text, MAX_JSON_DEPTH) > MAX_JSON_DEPTH)
    throw new UnsafeBodyError(`body: nested more than ${MAX_JSON_DEPTH} levels deep`);
  let bad: string | undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text, (key, value: unknown) => {
      if (bad === undefined && (hasUnstorableText(key) || (typeof value === "string" && hasUnstorableText(value)))) bad = key;
      return value;
    });
  } catch (err) {
    throw new HttpError(400, "validation", `body: not JSON (${(err as Error).message})`);
  }
  if (bad !== undefined) throw new UnsafeBodyError(`body: ${JSON.stringify(bad.slice(0, 100))} holds a NUL or an unpaired surrogate`);
  return parsed;
}
