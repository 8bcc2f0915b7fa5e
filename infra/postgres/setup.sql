-- One database per service that keeps views (each owns its schema and migrations).
-- psql -U postgres -f infra/postgres/setup.sql
-- Audit on PostgreSQL: then infra/postgres/audit-roles.sql (owner and writer roles; services/audit/README.md).
CREATE ROLE molt LOGIN PASSWORD 'change-me';
CREATE DATABASE molt_projector OWNER molt;
CREATE DATABASE molt_audit OWNER molt;
CREATE DATABASE molt_release_events OWNER molt;
