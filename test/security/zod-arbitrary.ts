import fc from "fast-check";
import { z } from "zod";

/**
 * fast-check arbitraries from the contracts' zod schemas, through zod 4's own JSON Schema export
 * (`z.toJSONSchema`): JSON Schema is a published format, where zod's internals are not, and no
 * released library maps zod 4 to fast-check 4 yet (zod-fast-check stops at zod 3 / fast-check 3).
 * `valid` follows the schema's shape and bounds (formats and patterns included, refinements not);
 * `nearlyValid` then breaks one thing: a field replaced by hostile input, a required field dropped,
 * or an unknown field added, which is where parsers and databases disagree.
 */
export interface JsonSchema {
  type?: string | string[];
  properties?: Record<string, JsonSchema>;
  required?: string[];
  additionalProperties?: boolean | JsonSchema;
  propertyNames?: JsonSchema;
  items?: JsonSchema;
  prefixItems?: JsonSchema[];
  minItems?: number;
  maxItems?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  format?: string;
  enum?: unknown[];
  const?: unknown;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  allOf?: JsonSchema[];
  $ref?: string;
  $defs?: Record<string, JsonSchema>;
}

/** Nesting deeper than this becomes `null`: recursive schemas stay finite. */
const MAX_DEPTH = 8;
/** Collections stay small: the fuzz wants many requests, not large ones. */
const MAX_ITEMS = 4;

export function arbitraryFromZod(schema: z.ZodType): fc.Arbitrary<unknown> {
  return arbitraryFromJsonSchema(z.toJSONSchema(schema, { io: "input", unrepresentable: "any" }) as JsonSchema);
}

/**
 * The same from a JSON Schema a service published: the request bodies of its OpenAPI document,
 * which fastify-type-provider-zod generates from the route's zod schema.
 */
export function arbitraryFromJsonSchema(root: JsonSchema): fc.Arbitrary<unknown> {
  return build(root, root, 0);
}

/** Valid now and then, nearly valid mostly: one field broken with `hostile`, dropped, or one added. */
export function nearlyValid(schema: z.ZodType | JsonSchema, hostile: fc.Arbitrary<unknown>): fc.Arbitrary<unknown> {
  const valid = schema instanceof z.ZodType ? arbitraryFromZod(schema) : arbitraryFromJsonSchema(schema);
  const broken = fc.tuple(valid, fc.nat(), fc.constantFrom("replace", "drop", "add"), hostile, fc.string({ maxLength: 12 })).map(([value, pick, op, junk, key]) => {
    const copy = structuredClone(value);
    const spots = objectsIn(copy);
    if (spots.length === 0) return junk;
    const target = spots[pick % spots.length]!;
    const keys = Object.keys(target);
    const name = keys.length > 0 ? keys[pick % keys.length]! : key;
    if (op === "add" || keys.length === 0) target[`${key}_extra`] = junk;
    else if (op === "drop") delete target[name];
    else target[name] = junk;
    return copy;
  });
  return fc.oneof({ weight: 1, arbitrary: valid }, { weight: 2, arbitrary: broken });
}

function objectsIn(value: unknown, depth = 0): Record<string, unknown>[] {
  if (value === null || typeof value !== "object" || depth > MAX_DEPTH) return [];
  const children = Object.values(value).flatMap((v) => objectsIn(v, depth + 1));
  return Array.isArray(value) ? children : [value as Record<string, unknown>, ...children];
}

/** A local JSON pointer (`#`, `#/$defs/X`, or an OpenAPI document's `#/components/schemas/X` when the root carries them). */
function resolve(root: JsonSchema, ref: string): JsonSchema {
  let at: unknown = root;
  for (const part of ref.replace(/^#\/?/, "").split("/").filter((p) => p !== "")) {
    at = at !== null && typeof at === "object" ? (at as Record<string, unknown>)[part.replaceAll("~1", "/").replaceAll("~0", "~")] : undefined;
  }
  if (at === undefined || at === null || typeof at !== "object") throw new Error(`zod-arbitrary: unresolved $ref ${ref}`);
  return at;
}

function build(s: JsonSchema, root: JsonSchema, depth: number): fc.Arbitrary<unknown> {
  if (depth > MAX_DEPTH) return fc.constant(null);
  if (s.$ref !== undefined) return build(resolve(root, s.$ref), root, depth + 1);
  if ("const" in s) return fc.constant(s.const);
  if (s.enum !== undefined) return fc.constantFrom(...s.enum);
  const alternatives = s.anyOf ?? s.oneOf;
  if (alternatives !== undefined) return fc.oneof(...alternatives.map((a) => build(a, root, depth + 1)));
  if (s.allOf !== undefined && s.allOf.length > 0) return build(s.allOf[0]!, root, depth + 1);
  if (Array.isArray(s.type)) return fc.oneof(...s.type.map((t) => build({ ...s, type: t }, root, depth)));
  switch (s.type) {
    case "string":
      return stringOf(s);
    case "integer": {
      const min = Math.max(s.minimum ?? (s.exclusiveMinimum !== undefined ? s.exclusiveMinimum + 1 : -1_000_000), Number.MIN_SAFE_INTEGER);
      const max = Math.min(s.maximum ?? (s.exclusiveMaximum !== undefined ? s.exclusiveMaximum - 1 : 1_000_000), Number.MAX_SAFE_INTEGER);
      return fc.integer({ min: Math.ceil(min), max: Math.max(Math.ceil(min), Math.floor(max)) });
    }
    case "number":
      return fc.double({ min: s.minimum ?? s.exclusiveMinimum ?? -1e9, max: s.maximum ?? s.exclusiveMaximum ?? 1e9, noNaN: true, noDefaultInfinity: true });
    case "boolean":
      return fc.boolean();
    case "null":
      return fc.constant(null);
    case "array": {
      if (s.prefixItems !== undefined) return fc.tuple(...s.prefixItems.map((p) => build(p, root, depth + 1)));
      const minLength = s.minItems ?? 0;
      return fc.array(s.items ? build(s.items, root, depth + 1) : fc.jsonValue({ maxDepth: 2 }), { minLength, maxLength: Math.max(minLength, Math.min(s.maxItems ?? MAX_ITEMS, MAX_ITEMS)) });
    }
    case "object": {
      if (s.properties !== undefined && Object.keys(s.properties).length > 0) {
        const fields = Object.fromEntries(Object.entries(s.properties).map(([k, v]) => [k, build(v, root, depth + 1)]));
        return fc.record(fields, { requiredKeys: s.required ?? [] });
      }
      if (typeof s.additionalProperties === "object") {
        const key = s.propertyNames ? (build(s.propertyNames, root, depth + 1) as fc.Arbitrary<string>) : fc.string({ maxLength: 12 });
        return fc.dictionary(key, build(s.additionalProperties, root, depth + 1), { maxKeys: MAX_ITEMS });
      }
      return fc.constant({});
    }
    default:
      return fc.jsonValue({ maxDepth: 2 });
  }
}

function stringOf(s: JsonSchema): fc.Arbitrary<string> {
  switch (s.format) {
    case "date-time":
      return fc.date({ min: new Date("1970-01-01T00:00:00Z"), max: new Date("2100-01-01T00:00:00Z"), noInvalidDate: true }).map((d) => d.toISOString());
    case "uri":
    case "url":
      return fc.webUrl();
    case "uuid":
      return fc.uuid();
    case "email":
      return fc.emailAddress();
    default:
      break;
  }
  const minLength = s.minLength ?? 0;
  const maxLength = Math.max(minLength, Math.min(s.maxLength ?? 40, 80));
  if (s.pattern !== undefined) {
    try {
      // Bounded after the fact: a pattern says nothing of length; a too-long one is still a fine probe.
      return fc.stringMatching(new RegExp(s.pattern)).map((v) => (v.length > maxLength && s.maxLength !== undefined ? v.slice(0, s.maxLength) : v));
    } catch {
      // A construct fast-check cannot generate from (lookarounds): plain strings instead.
    }
  }
  return fc.string({ minLength, maxLength });
}
