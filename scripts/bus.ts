/**
 * The bus's admin tool: `pnpm molt-bus <command>`.
 *
 *   init --dir DIR [--resolver-dir DIR]   a new authority (operator, accounts, keys; authority.json,
 *                                         mode 0600), the servers' auth.conf, a credentials file per
 *                                         service, admin, system and --sim identity, one for
 *                                         integrators reading MOLT_RELEASE (release-reader), and
 *                                         host-issuer.json for the action service (enrolment)
 *   provision                             as admin (MOLT_NATS_URL, MOLT_NATS_CREDS = admin.creds):
 *                                         creates the streams, KV buckets and object store that are
 *                                         missing (MOLT_STREAM_REPLICAS, MOLT_PRESENCE_TTL_MS)
 *   revoke --dir DIR USER_KEY...          cuts the users off (e.g. a host's key from its enrolment)
 *                                         at once, through the system account: no restart
 *
 * Services never create or change streams: their identities may not (docs/decisions.md).
 */
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { Objm, StorageType } from "@nats-io/obj";
import { KV_AUDIT_ANCHOR, KV_AUDIT_ANCHOR_HISTORY, KV_DESIRED, KV_LEASES, KV_PRESENCE, OBJ_PACKAGES, RELEASE_DUPLICATE_WINDOW_MS, releaseSubjects, STREAM_RELEASE } from "@molt/contracts";
import { ensureAuditStream, ensureEventStream } from "@molt/event-store";
import {
  BusAuthority,
  connectNats,
  createBusAuthority,
  ensureBucket,
  hostIssuer,
  loadConfig,
  natsEnv,
  natsSecurityFromEnv,
  revokeUsers,
  serverAuthConfig,
  userCreds,
  type BusUser,
} from "@molt/runtime";
import { z } from "zod";

const IDENTITIES: BusUser[] = ["admin", "system", "sim", "action", "allocator", "feedback", "package-repo", "projector", "audit", "release-events", "release-reader"];

async function init(dir: string, resolverDir: string): Promise<void> {
  await mkdir(join(dir, "creds"), { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  const authority = createBusAuthority();
  await writeFile(join(dir, "authority.json"), JSON.stringify(authority, null, 2), { mode: 0o600, flag: "wx" });
  await writeFile(join(dir, "auth.conf"), await serverAuthConfig(authority, resolverDir));
  await writeFile(join(dir, "host-issuer.json"), JSON.stringify(hostIssuer(authority), null, 2), { mode: 0o600 });
  for (const who of IDENTITIES) await writeFile(join(dir, "creds", `${who}.creds`), (await userCreds(authority, who)).creds, { mode: 0o600 });
  console.log(`bus authority in ${dir}: include ${join(dir, "auth.conf")} in every nats-server config; give each service creds/<name>.creds`);
}

/** Creates what is missing; an existing stream or bucket keeps its config (replicas, TTL). */
async function provision(env: NodeJS.ProcessEnv): Promise<void> {
  const config = loadConfig(z.object({ ...natsEnv, MOLT_PRESENCE_TTL_MS: z.coerce.number().int().min(1000).default(30_000) }), env);
  const nc = await connectNats({ url: config.MOLT_NATS_URL, name: "molt-provision", ...natsSecurityFromEnv(config) });
  const replicas = config.MOLT_STREAM_REPLICAS;
  try {
    await ensureEventStream(nc, { replicas });
    await ensureAuditStream(nc, { replicas });
    // Release events (release-events service): msgID = source event id, deduplicated for an hour.
    await ensureEventStream(nc, { stream: STREAM_RELEASE, subjects: [releaseSubjects.all], replicas, duplicateWindowMs: RELEASE_DUPLICATE_WINDOW_MS });
    await ensureBucket(nc, KV_DESIRED, { history: 5, replicas });
    await ensureBucket(nc, KV_PRESENCE, { ttl: config.MOLT_PRESENCE_TTL_MS, history: 1, replicas });
    await ensureBucket(nc, KV_LEASES, { history: 1, replicas });
    await ensureBucket(nc, KV_AUDIT_ANCHOR, { history: KV_AUDIT_ANCHOR_HISTORY, replicas });
    await new Objm(nc).create(OBJ_PACKAGES, { storage: StorageType.File, replicas });
  } finally {
    await nc.close();
  }
}

async function revoke(dir: string, keys: string[], env: NodeJS.ProcessEnv): Promise<void> {
  const authority = BusAuthority.parse(JSON.parse(await readFile(join(dir, "authority.json"), "utf8")));
  const config = loadConfig(z.object(natsEnv), env);
  const sys = await connectNats({ url: config.MOLT_NATS_URL, name: "molt-revoke", ...natsSecurityFromEnv(config), credsFile: join(dir, "creds", "system.creds") });
  try {
    await revokeUsers(sys, authority, keys);
  } finally {
    await sys.close();
  }
  console.log(`revoked ${keys.join(", ")}`);
}

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: { dir: { type: "string" }, "resolver-dir": { type: "string" } },
});
const [command, ...rest] = positionals;
const dir = resolve(values.dir ?? ".molt/bus");
switch (command) {
  case "init":
    await init(dir, resolve(values["resolver-dir"] ?? join(dir, "jwt")));
    break;
  case "provision":
    await provision(process.env);
    console.log("provisioned");
    break;
  case "revoke":
    if (rest.length === 0) throw new Error("revoke: name at least one user public key");
    await revoke(dir, rest, process.env);
    break;
  default:
    console.error("usage: molt-bus init --dir DIR | provision | revoke --dir DIR USER_KEY...");
    process.exit(2);
}
