import { execFile } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { chown, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { freePort } from "./nats-server.js";

const run = promisify(execFile);

/** A PostgreSQL server of its own for one test file: a fresh cluster in a temp dir, on a free port. */
export interface PostgresServer {
  /** `postgres://molt@127.0.0.1:<port>/postgres` (trust auth, loopback only). */
  readonly url: string;
  readonly running: boolean;
  /** Stops the server at once (`pg_ctl stop -m immediate`): no checkpoint, clients cut off, as a crash. */
  crash(): Promise<void>;
  /** Starts it again on the same port and data. */
  start(): Promise<void>;
  /** Stops it and removes its files. */
  stop(): Promise<void>;
}

/** The newest Debian PostgreSQL's bin dir (`scripts/postgres.sh` installs the package). */
function binDir(): string {
  const root = "/usr/lib/postgresql";
  const versions = existsSync(root) ? readdirSync(root).filter((v) => existsSync(join(root, v, "bin", "initdb"))) : [];
  const newest = versions.sort((a, b) => Number(b) - Number(a))[0];
  if (!newest) throw new Error("no PostgreSQL server binaries in /usr/lib/postgresql: run scripts/postgres.sh (it installs Debian's postgresql)");
  return join(root, newest, "bin");
}

/**
 * initdb + pg_ctl start of a throwaway cluster. PostgreSQL refuses to run as root, so under root
 * the cluster belongs to the `postgres` user and its commands run through `runuser`.
 */
export async function startPostgres(): Promise<PostgresServer> {
  const bin = binDir();
  const dir = await mkdtemp(join(tmpdir(), "molt-pg-"));
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    const { stdout } = await run("id", ["-u", "postgres"]);
    const { stdout: gid } = await run("id", ["-g", "postgres"]);
    await chown(dir, Number(stdout.trim()), Number(gid.trim()));
  }
  const pg = (tool: string, args: string[]) => (asRoot ? run("runuser", ["-u", "postgres", "--", join(bin, tool), ...args]) : run(join(bin, tool), args));
  const data = join(dir, "data");
  await pg("initdb", ["-D", data, "-U", "molt", "--auth=trust", "-E", "UTF8", "--no-sync"]);
  const port = await freePort();
  let running = false;
  const start = async () => {
    await pg("pg_ctl", ["-D", data, "-l", join(dir, "server.log"), "-w", "-o", `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`, "start"]);
    running = true;
  };
  await start();
  return {
    url: `postgres://molt@127.0.0.1:${port}/postgres`,
    get running() {
      return running;
    },
    async crash() {
      await pg("pg_ctl", ["-D", data, "-m", "immediate", "-w", "stop"]);
      running = false;
    },
    start,
    async stop() {
      if (running) await pg("pg_ctl", ["-D", data, "-m", "fast", "-w", "stop"]).catch(() => undefined);
      running = false;
      await rm(dir, { recursive: true, force: true });
    },
  };
}
