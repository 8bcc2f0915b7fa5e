// The migrate step on PostgreSQL, run by a deploy before the service starts (or let the service do
// it at start by setting MOLT_DATABASE_MIGRATE_URL there too): creates or upgrades the audit tables
// as the owner role and grants the writer role (DATABASE_URL's user) only SELECT and INSERT on the log.
import { loadConfig } from "@molt/runtime";
import { z } from "zod";
import { migrateAsOwner } from "./log/roles.js";

const config = loadConfig(z.object({ MOLT_DATABASE_MIGRATE_URL: z.string().min(1), DATABASE_URL: z.string().min(1) }));
await migrateAsOwner(config.MOLT_DATABASE_MIGRATE_URL, config.DATABASE_URL);
process.stdout.write(`audit: migrated; ${new URL(config.DATABASE_URL).username} may append and read\n`);
