/** Append-only: add statements, never edit one that has shipped. */
export const AUDIT_MIGRATIONS = [
  `CREATE TABLE audit_log (
    id bigserial PRIMARY KEY,
    source text NOT NULL CHECK (source IN ('event', 'command')),
    source_stream text NOT NULL,
    source_seq bigint NOT NULL,
    -- a commit holds several events: one entry each
    source_idx integer NOT NULL DEFAULT 0,
    at timestamptz NOT NULL,
    actor text NOT NULL,
    kind text NOT NULL,
    target text,
    outcome text,
    data jsonb NOT NULL,
    prev_hash text NOT NULL,
    hash text NOT NULL,
    UNIQUE (source_stream, source_seq, source_idx)
  );
  CREATE INDEX audit_log_actor ON audit_log (actor, id);
  CREATE INDEX audit_log_kind ON audit_log (kind, id);
  CREATE INDEX audit_log_target ON audit_log (target, id);
  CREATE INDEX audit_log_at ON audit_log (at);

  -- Append-only in the database too: whoever holds a connection still cannot rewrite history
  -- without first disabling these triggers (which needs the table's owner).
  CREATE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
  END
  $$;
  CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();
  CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();`,
];

/** An audit_log row as both drivers return it (bigint as number, timestamptz as Date, jsonb parsed). */
export interface AuditRow {
  id: number;
  source: "event" | "command";
  source_stream: string;
  source_seq: number;
  source_idx: number;
  at: Date;
  actor: string;
  kind: string;
  target: string | null;
  outcome: string | null;
  data: unknown;
  prev_hash: string;
  hash: string;
}
