import type { Queryable } from "@molt/db";
import type { ReleaseName, WebhookFilters } from "@molt/contracts";

export const WEBHOOK_MIGRATIONS = [
  `CREATE TABLE IF NOT EXISTS webhooks (
    id text PRIMARY KEY,
    url text NOT NULL,
    description text,
    secret text NOT NULL,
    components jsonb NOT NULL,
    types jsonb NOT NULL,
    state text NOT NULL CHECK (state IN ('active', 'paused', 'failing')),
    cursor bigint NOT NULL,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
  )`,
  `CREATE TABLE IF NOT EXISTS webhook_attempts (
    id bigserial PRIMARY KEY,
    webhook_id text NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id text NOT NULL,
    event_type text NOT NULL,
    stream_seq bigint NOT NULL,
    attempt int NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    status int,
    ok boolean NOT NULL,
    error text,
    duration_ms int NOT NULL
  )`,
  `CREATE INDEX IF NOT EXISTS webhook_attempts_by_webhook ON webhook_attempts (webhook_id, id)`,
  // When the first attempt at the event the subscription stands at failed: the give-up time counts
  // from it, across restarts; cleared when the cursor moves and when the state changes.
  `ALTER TABLE webhooks ADD COLUMN IF NOT EXISTS retry_since timestamptz`,
];

export type WebhookState = "active" | "paused" | "failing";

export interface Webhook {
  id: string;
  url: string;
  description: string | null;
  secret: string;
  filters: { components: string[]; types: ReleaseName[] };
  state: WebhookState;
  /** The last MOLT_RELEASE sequence this subscription is done with. */
  cursor: number;
  lastError: string | null;
  /** Since when the event at the cursor has been retried (null: not failing). */
  retrySince: string | null;
  createdAt: string;
}

interface Row {
  id: string;
  url: string;
  description: string | null;
  secret: string;
  components: string[];
  types: ReleaseName[];
  state: WebhookState;
  cursor: string | number;
  last_error: string | null;
  retry_since: Date | string | null;
  created_at: Date | string;
}
const fromRow = (r: Row): Webhook => ({
  id: r.id,
  url: r.url,
  description: r.description,
  secret: r.secret,
  filters: { components: r.components, types: r.types },
  state: r.state,
  cursor: Number(r.cursor),
  lastError: r.last_error,
  retrySince: r.retry_since === null ? null : new Date(r.retry_since).toISOString(),
  createdAt: new Date(r.created_at).toISOString(),
});

/** What the API shows of a subscription: never its secret. */
export const publicView = ({ secret: _secret, ...w }: Webhook) => w;

export interface Attempt {
  id: number;
  eventId: string;
  eventType: string;
  streamSeq: number;
  attempt: number;
  at: string;
  status: number | null;
  ok: boolean;
  error: string | null;
  durationMs: number;
}

export function webhookStore(db: Queryable) {
  return {
    async create(w: { id: string; url: string; description: string | null; secret: string; filters: WebhookFilters; cursor: number }): Promise<Webhook> {
      const r = await db.query<Row>(
        `INSERT INTO webhooks (id, url, description, secret, components, types, state, cursor) VALUES ($1, $2, $3, $4, $5, $6, 'active', $7) RETURNING *`,
        [w.id, w.url, w.description, w.secret, JSON.stringify(w.filters.components), JSON.stringify(w.filters.types), w.cursor],
      );
      return fromRow(r.rows[0]!);
    },
    async get(id: string): Promise<Webhook | undefined> {
      const r = await db.query<Row>("SELECT * FROM webhooks WHERE id = $1", [id]);
      return r.rows[0] ? fromRow(r.rows[0]) : undefined;
    },
    async list(): Promise<Webhook[]> {
      return (await db.query<Row>("SELECT * FROM webhooks ORDER BY created_at, id")).rows.map(fromRow);
    },
    async setState(id: string, state: WebhookState, lastError: string | null = null): Promise<Webhook | undefined> {
      // A pause, a resume or giving up starts the give-up clock again.
      const r = await db.query<Row>("UPDATE webhooks SET state = $2, last_error = $3, retry_since = NULL, updated_at = now() WHERE id = $1 RETURNING *", [id, state, lastError]);
      return r.rows[0] ? fromRow(r.rows[0]) : undefined;
    },
    async advance(id: string, cursor: number): Promise<void> {
      await db.query("UPDATE webhooks SET cursor = $2, retry_since = NULL, updated_at = now() WHERE id = $1 AND cursor < $2", [id, cursor]);
    },
    /** The event at the cursor failed: since when it has been retried (the first failure's time, kept). */
    async retrying(id: string, at: Date): Promise<Date> {
      const r = await db.query<{ retry_since: Date | string }>("UPDATE webhooks SET retry_since = COALESCE(retry_since, $2) WHERE id = $1 RETURNING retry_since", [id, at.toISOString()]);
      return r.rows[0] ? new Date(r.rows[0].retry_since) : at;
    },
    async remove(id: string): Promise<boolean> {
      return (await db.query("DELETE FROM webhooks WHERE id = $1 RETURNING 1", [id])).rows.length > 0;
    },
    async record(webhookId: string, a: Omit<Attempt, "id" | "at">): Promise<void> {
      await db.query(
        `INSERT INTO webhook_attempts (webhook_id, event_id, event_type, stream_seq, attempt, status, ok, error, duration_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
        [webhookId, a.eventId, a.eventType, a.streamSeq, a.attempt, a.status, a.ok, a.error, a.durationMs],
      );
    },
    async attempts(webhookId: string, opts: { after: number; limit: number }): Promise<Attempt[]> {
      const r = await db.query<{ id: string | number; event_id: string; event_type: string; stream_seq: string | number; attempt: number; at: Date | string; status: number | null; ok: boolean; error: string | null; duration_ms: number }>(
        "SELECT * FROM webhook_attempts WHERE webhook_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        [webhookId, opts.after, opts.limit],
      );
      return r.rows.map((x) => ({
        id: Number(x.id),
        eventId: x.event_id,
        eventType: x.event_type,
        streamSeq: Number(x.stream_seq),
        attempt: x.attempt,
        at: new Date(x.at).toISOString(),
        status: x.status,
        ok: x.ok,
        error: x.error,
        durationMs: x.duration_ms,
      }));
    },
  };
}
export type WebhookStore = ReturnType<typeof webhookStore>;
