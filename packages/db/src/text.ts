/**
 * PostgreSQL text and jsonb refuse NUL characters and lone UTF-16 surrogates, which hosts can
 * report (an error message cut from a binary's stderr). Replacing them with U+FFFD, deterministically,
 * keeps one odd byte from stalling a projection forever; everything else passes unchanged.
 */
export function pgSafe<T>(value: T): T {
  return clean(value) as T;
}

// eslint-disable-next-line no-control-regex
const REFUSED = /\u0000|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

function clean(value: unknown): unknown {
  if (typeof value === "string") return value.replace(REFUSED, "\uFFFD");
  if (Array.isArray(value)) return value.map(clean);
  if (value !== null && typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[clean(k) as string] = clean(v);
    return out;
  }
  return value;
}
