import { z } from "zod";
import { ComponentName, HostId, Id, Platform, Sha256, Timestamp, Version } from "./ids.js";

/**
 * Release events: the public, versioned vocabulary other platforms read (CloudEvents 1.0 JSON).
 * Versioned apart from the internal events in events.ts, which may change freely: a change that
 * breaks a reader here is a new `.v2` type, published beside the old one.
 */
export const STREAM_RELEASE = "MOLT_RELEASE";
/**
 * MOLT_RELEASE's msgID dedupe window: a publisher killed between publishing a commit's events and
 * committing its checkpoint publishes them again when it restarts, and the stream drops them if
 * that restart is within the window.
 */
export const RELEASE_DUPLICATE_WINDOW_MS = 3_600_000;
export const releaseSubjects = {
  all: "molt.release.>",
  /** `molt.release.<component>.<kind>.<action>`, e.g. `molt.release.metrics-agent.deployment.started`. */
  of: (component: string, name: ReleaseName) => `molt.release.${component}.${name}`,
} as const;

const Deployment = {
  deploymentId: Id,
  component: ComponentName,
  /** The version the deployment installs (a rollback: the version it leaves). */
  version: Version,
  kind: z.enum(["upgrade", "rollback"]),
};
const Counts = { succeeded: z.number().int().nonnegative(), failed: z.number().int().nonnegative() };
const Host = { hostId: HostId, component: ComponentName, deploymentId: Id, fromVersion: Version.nullable(), toVersion: Version };

/** Each release event's data, by its short name (`<kind>.<action>`); the CloudEvents type adds `dev.molt.` and `.v1`. */
export const RELEASE_DATA = {
  "package.published": z.object({ component: ComponentName, version: Version, platform: Platform, sha256: Sha256, size: z.number().int().positive(), signed: z.boolean() }),
  "package.yanked": z.object({ component: ComponentName, version: Version, platform: Platform.nullable(), reason: z.string() }),
  "deployment.started": z.object({ ...Deployment, batches: z.number().int().nonnegative(), hosts: z.number().int().nonnegative(), skipped: z.number().int().nonnegative() }),
  "deployment.batch-completed": z.object({ ...Deployment, index: z.number().int().nonnegative(), ...Counts }),
  "deployment.braked": z.object({ ...Deployment, failed: z.number().int(), finished: z.number().int(), threshold: z.number() }),
  "deployment.paused": z.object({ ...Deployment, reason: z.string().nullable() }),
  "deployment.completed": z.object({ ...Deployment, ...Counts, skipped: z.number().int().nonnegative() }),
  "deployment.failed": z.object({ ...Deployment, ...Counts, reason: z.string() }),
  "deployment.cancelled": z.object({ ...Deployment, reason: z.string().nullable() }),
  /** A rollback deployment finished: its hosts are back on their previous versions (`origin`: the deployment it undid). */
  "deployment.rolled-back": z.object({ ...Deployment, origin: Id.nullable(), ...Counts, skipped: z.number().int().nonnegative() }),
  "host.upgraded": z.object(Host),
  "host.upgrade-failed": z.object({ ...Host, step: z.string().nullable(), reason: z.string() }),
} as const;
export type ReleaseName = keyof typeof RELEASE_DATA;
export const RELEASE_NAMES = Object.keys(RELEASE_DATA) as ReleaseName[];
export type ReleaseData<N extends ReleaseName> = z.infer<(typeof RELEASE_DATA)[N]>;

export const releaseType = (name: ReleaseName) => `dev.molt.${name}.v1` as const;
/** Where each type's JSON Schema is documented (it is also in the AsyncAPI document). */
export const releaseDataSchema = (name: ReleaseName) => `https://molt.dev/schemas/release/${name}.v1.json`;

/**
 * The JSON Schema (draft-07) of one type's `data`, with `$id` = its `dataschema`: served by the
 * release-events service at `/v1/release-events/schemas/<name>.v1.json`.
 */
export function releaseDataJsonSchema(name: ReleaseName): Record<string, unknown> {
  const { $schema: _drop, ...rest } = z.toJSONSchema(RELEASE_DATA[name], { target: "draft-7", unrepresentable: "any" });
  return { $schema: "http://json-schema.org/draft-07/schema#", $id: releaseDataSchema(name), title: `data of ${releaseType(name)}`, ...rest };
}

const envelope = <N extends ReleaseName>(name: N) =>
  z
    .object({
      specversion: z.literal("1.0"),
      /** The source event's id: stable across replays, so a reader deduplicates on it. */
      id: z.string().min(1).max(200),
      /** `/molt/deployments/<id>` or `/molt/packages/<component>`. */
      source: z.string().min(1),
      type: z.literal(releaseType(name)),
      /** The deployment id, the host id, or the package's version. */
      subject: z.string().min(1),
      time: Timestamp,
      datacontenttype: z.literal("application/json"),
      dataschema: z.literal(releaseDataSchema(name)),
      data: RELEASE_DATA[name],
    })
    .strict();

/** The whole CloudEvents envelope of one type, its data included. */
export const releaseEventSchema = <N extends ReleaseName>(name: N) => envelope(name);

export const ReleaseEvent = z.discriminatedUnion(
  "type",
  RELEASE_NAMES.map((n) => envelope(n)) as unknown as [ReturnType<typeof envelope<ReleaseName>>, ...ReturnType<typeof envelope<ReleaseName>>[]],
);
export type ReleaseEvent = { [N in ReleaseName]: Omit<z.infer<ReturnType<typeof envelope<N>>>, "data"> & { type: `dev.molt.${N}.v1`; data: ReleaseData<N> } }[ReleaseName];

/** The short name of a CloudEvents type (`dev.molt.host.upgraded.v1` → `host.upgraded`), or undefined. */
export function releaseNameOf(type: string): ReleaseName | undefined {
  const m = /^dev\.molt\.(.+)\.v1$/.exec(type);
  return m && m[1] && m[1] in RELEASE_DATA ? (m[1] as ReleaseName) : undefined;
}

/**
 * The AsyncAPI 3 document of the release events, generated from the schemas above: one channel
 * per type (`molt.release.{component}.<type>`), each message's payload the envelope's JSON Schema.
 */
export function releaseAsyncApi(opts: { natsUrl?: string } = {}) {
  const key = (n: ReleaseName) => n.replaceAll(".", "-");
  const schema = (n: ReleaseName) => {
    const { $schema: _drop, ...rest } = z.toJSONSchema(releaseEventSchema(n), { target: "draft-7", unrepresentable: "any" });
    return rest;
  };
  // MOLT_NATS_URL may list a cluster's nodes, comma-separated: each is a server of the document.
  const nodes = (opts.natsUrl ?? "").split(",").map((u) => u.trim()).filter(Boolean).map((u) => new URL(u));
  return {
    asyncapi: "3.0.0",
    info: {
      title: "Molt release events",
      version: "1.0.0",
      description:
        "What Molt released, for other platforms: CloudEvents 1.0 (structured JSON) on NATS JetStream stream " +
        `${STREAM_RELEASE} (message id = event id), and the same bodies by signed webhook (Standard Webhooks).`,
    },
    defaultContentType: "application/cloudevents+json",
    ...(nodes.length > 0
      ? { servers: Object.fromEntries(nodes.map((u, i) => [nodes.length === 1 ? "nats" : `nats-${i + 1}`, { host: u.host, protocol: "nats", description: `JetStream stream ${STREAM_RELEASE}` }])) }
      : {}),
    channels: Object.fromEntries(
      RELEASE_NAMES.map((n) => [
        key(n),
        {
          address: `molt.release.{component}.${n}`,
          title: releaseType(n),
          parameters: { component: { description: "The component the event is about (a-z 0-9 _ -)." } },
          messages: { [key(n)]: { $ref: `#/components/messages/${key(n)}` } },
        },
      ]),
    ),
    operations: Object.fromEntries(
      RELEASE_NAMES.map((n) => [
        `receive-${key(n)}`,
        { action: "receive", channel: { $ref: `#/channels/${key(n)}` }, messages: [{ $ref: `#/channels/${key(n)}/messages/${key(n)}` }] },
      ]),
    ),
    components: {
      messages: Object.fromEntries(
        RELEASE_NAMES.map((n) => [key(n), { name: releaseType(n), title: releaseType(n), contentType: "application/cloudevents+json", payload: schema(n) }]),
      ),
    },
  };
}

// ---------- webhook subscriptions (the release-events service's admin API) ----------
export const WebhookFilters = z
  .object({
    /** Only these components (empty: all). */
    components: z.array(ComponentName).max(100).default([]),
    /** Only these types, as CloudEvents types or short names (empty: all). */
    types: z.array(z.string().transform((t, ctx) => {
      const name = releaseNameOf(t) ?? (t in RELEASE_DATA ? (t as ReleaseName) : undefined);
      if (!name) ctx.addIssue({ code: "custom", message: `unknown release event type ${t.slice(0, 100)}` });
      return name ?? "package.published";
    })).max(RELEASE_NAMES.length).default([]),
  })
  .strict();
export type WebhookFilters = z.infer<typeof WebhookFilters>;

export const CreateWebhook = z
  .object({
    url: z.url({ protocol: /^https?$/ }).max(2000),
    description: z.string().max(500).optional(),
    filters: WebhookFilters.default({ components: [], types: [] }),
    /**
     * Where the new subscription starts on MOLT_RELEASE: `now` (the default: what is published
     * from now on), `beginning` (everything the stream still holds), or a date-time (what was
     * published at or after it).
     */
    startAt: z.union([z.enum(["now", "beginning"]), Timestamp]).default("now"),
  })
  .strict();
export type CreateWebhook = z.infer<typeof CreateWebhook>;
