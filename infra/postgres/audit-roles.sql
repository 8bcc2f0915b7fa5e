-- The audit log's two roles on PostgreSQL (services/audit/README.md, "Roles"). Run as a superuser,
-- connected to the audit database, after setup.sql:
--   psql -U postgres -d molt_audit -f infra/postgres/audit-roles.sql
-- molt_audit_owner runs the migrations (MOLT_DATABASE_MIGRATE_URL), so it owns audit_log and its
-- triggers; molt_audit_writer is the service's DATABASE_URL and gets, from the migrate step, only
-- SELECT and INSERT on audit_log (and what its checkpoints need). Not owning the table, the writer
-- cannot DISABLE or DROP the append-only triggers, and has no DELETE, UPDATE or TRUNCATE right.
CREATE ROLE molt_audit_owner LOGIN PASSWORD 'change-me-owner';
CREATE ROLE molt_audit_writer LOGIN PASSWORD 'change-me-writer';
GRANT USAGE, CREATE ON SCHEMA public TO molt_audit_owner;
GRANT USAGE ON SCHEMA public TO molt_audit_writer;
-- PostgreSQL 15 grants PUBLIC no CREATE on public; older servers did: the writer must not create.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
