-- One database per service that keeps views (each owns its schema and migrations).
-- psql -U postgres -f infra/postgres/setup.sql
CREATE ROLE molt LOGIN PASSWORD 'change-me';
CREATE DATABASE molt_projector OWNER molt;
CREATE DATABASE molt_audit OWNER molt;
CREATE DATABASE molt_release_events OWNER molt;
