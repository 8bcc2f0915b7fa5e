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
    // fromEntries defines own properties: an assignment `out["__proto__"] = v` would set the copy's
    // prototype instead, and the key would vanish from the stored JSON.
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [clean(k), clean(v)]));
  }
  return value;
}
