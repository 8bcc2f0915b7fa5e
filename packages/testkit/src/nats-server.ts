import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { connect, type ConnectionOptions, type NatsConnection } from "@nats-io/transport-node";
import { createBusAuthority, natsSecurityOptions, revokeUsers, serverAuthConfig, userCreds, type BusAuthority, type BusUser } from "@molt/runtime";

export interface NatsServer {
  readonly url: string;
  readonly port: number;
  readonly dataDir: string;
  /** The running server's process id (a restart changes it). */
  readonly pid: number | undefined;
  /** Stops the server (SIGTERM, then SIGKILL) and removes its data dir unless `keepData`. */
  stop(opts?: { keepData?: boolean }): Promise<void>;
  /** Kills the server process and starts it again on the same port and data dir. */
  restart(): Promise<void>;
  /** With `secure`: the bus's authority and a credentials file per identity. */
  readonly bus?: SecureBus;
}

/** A server started `secure`: its bus is always there. */
export interface SecureNatsServer extends NatsServer {
  readonly bus: SecureBus;
}

/** TLS files for the client port (PEM). `verify`: clients must present a certificate from `caFile`. */
export interface ServerTls {
  certFile: string;
  keyFile: string;
  caFile: string;
  verify?: boolean;
}

export interface SecureBus {
  readonly authority: BusAuthority;
  /** The CA clients must trust, when the server speaks TLS. */
  readonly caFile?: string;
  /** Writes (once) and returns the credentials file of an identity. */
  credsFile(who: BusUser): Promise<string>;
  /** The env a Molt process needs to connect as `who`: URL, credentials, CA. */
  env(who: BusUser): Promise<Record<string, string>>;
  /** Connects as `who`, or with a credentials text (a host's, from enrolment). */
  connect(who: BusUser | { creds: string; inboxPrefix?: string }, extra?: Partial<ConnectionOptions>): Promise<NatsConnection>;
  /** Revokes users by public key, without restarting the server. */
  revoke(userKeys: string[]): Promise<void>;
}

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");

/** The nats-server binary: MOLT_NATS_SERVER, else the bootstrap's pinned build, else PATH. */
export function natsServerBinary(): string {
  const fromEnv = process.env["MOLT_NATS_SERVER"];
  if (fromEnv && existsSync(fromEnv)) return fromEnv;
  const pinned = join(repoRoot, ".tools/bin/nats-server");
  if (existsSync(pinned)) return pinned;
  return "nats-server";
}

/** The binary's version as [major, minor, patch] (read once per binary). */
const versions = new Map<string, number[]>();
export function natsServerVersion(binary = natsServerBinary()): number[] {
  let v = versions.get(binary);
  if (!v) {
    const out = execFileSync(binary, ["--version"], { encoding: "utf8" });
    v = (/v(\d+)\.(\d+)\.(\d+)/.exec(out) ?? []).slice(1).map(Number);
    if (v.length !== 3) throw new Error(`cannot read the version of ${binary}: ${out}`);
    versions.set(binary, v);
  }
  return v;
}

/**
 * A port nothing listens on, for a process the test starts next. Chosen below the kernel's
 * ephemeral range (`ip_local_port_range`, 32768-60999 here): a port the kernel hands out for
 * `listen(0)` is also one it hands to outgoing connections, and with hundreds of connections
 * open one took a port between this answer and the service's listen (EADDRINUSE, once in a
 * cluster-suite run). Below the range only another listener can take it. Falls back to the
 * kernel's choice if 50 random tries find nothing free.
 */
export async function freePort(): Promise<number> {
  const low = ephemeralLow();
  for (let i = 0; i < 50; i++) {
    const port = 10_000 + Math.floor(Math.random() * Math.max(1, low - 10_000));
    // Never the same port twice from this process: two answers given before either is listened on.
    if (handedOut.has(port) || !(await canListen(port))) continue;
    handedOut.add(port);
    return port;
  }
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once("error", rej);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => res(port));
    });
  });
}

const handedOut = new Set<number>();
let ephemeral: number | undefined;
function ephemeralLow(): number {
  if (ephemeral === undefined) {
    try {
      ephemeral = Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]) || 32_768;
    } catch {
      ephemeral = 32_768;
    }
  }
  return ephemeral;
}

function canListen(port: number): Promise<boolean> {
  return new Promise((res) => {
    const srv = createServer();
    srv.once("error", () => res(false));
    srv.listen(port, "127.0.0.1", () => srv.close(() => res(true)));
  });
}

async function waitForPort(port: number, deadlineMs: number, proc: ChildProcess): Promise<void> {
  const until = Date.now() + deadlineMs;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`nats-server exited with code ${proc.exitCode}`);
    const ok = await new Promise<boolean>((res) => {
      const s = tcpConnect(port, "127.0.0.1");
      s.once("connect", () => {
        s.destroy();
        res(true);
      });
      s.once("error", () => res(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`nats-server did not listen on ${port} within ${deadlineMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export interface NatsServerOptions {
  dataDir?: string;
  port?: number;
  secure?: boolean;
  tls?: ServerTls;
}

/**
 * Starts a real nats-server with JetStream on a free port and its own temp data dir. Plain, it
 * takes anonymous clients (a test bed for one component); `secure`, it runs the shipped auth
 * (operator, accounts, a user per identity: no anonymous access) and optionally TLS — what the
 * whole system (`startSystem`) and the demo run on.
 */
export async function startNatsServer(opts: NatsServerOptions & { secure: true }): Promise<SecureNatsServer>;
export async function startNatsServer(opts?: NatsServerOptions): Promise<NatsServer>;
export async function startNatsServer(opts: NatsServerOptions = {}): Promise<NatsServer> {
  const port = opts.port ?? (await freePort());
  const dataDir = opts.dataDir ?? (await mkdtemp(join(tmpdir(), "molt-nats-")));
  let proc: ChildProcess;
  let args = ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", dataDir];
  let bus: SecureBus | undefined;
  const scheme = opts.tls ? "tls" : "nats";
  const url = `${scheme}://127.0.0.1:${port}`;
  if (opts.secure || opts.tls) {
    const secure = await secureServer(dataDir, port, url, opts.tls);
    args = ["-c", secure.configFile];
    bus = secure.bus;
  }
  const launch = async () => {
    proc = spawn(natsServerBinary(), args, {
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    proc.stderr?.on("data", (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-4000);
    });
    try {
      await waitForPort(port, 15_000, proc);
    } catch (err) {
      proc.kill("SIGKILL");
      throw new Error(`${(err as Error).message}\n${stderr}`);
    }
  };
  const kill = async (signal: NodeJS.Signals) => {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise<void>((r) => proc.once("exit", () => r()));
    proc.kill(signal);
    const timer = setTimeout(() => proc.kill("SIGKILL"), 5_000);
    await exited;
    clearTimeout(timer);
  };
  await launch();
  return {
    url,
    port,
    dataDir,
    ...(bus ? { bus } : {}),
    get pid() {
      return proc.pid;
    },
    async stop(stopOpts) {
      await kill("SIGTERM");
      if (!stopOpts?.keepData && !opts.dataDir) await rm(dataDir, { recursive: true, force: true });
    },
    async restart() {
      await kill("SIGKILL");
      await launch();
    },
  };
}

/** Writes the server config of a secured server (auth from a fresh authority, optional TLS) and its SecureBus. */
async function secureServer(dataDir: string, port: number, url: string, tls: ServerTls | undefined): Promise<{ configFile: string; bus: SecureBus }> {
  const authority = createBusAuthority();
  const authDir = join(dataDir, "auth");
  await mkdir(join(authDir, "creds"), { recursive: true, mode: 0o700 });
  await writeFile(join(authDir, "authority.json"), JSON.stringify(authority), { mode: 0o600 });
  await writeFile(join(authDir, "auth.conf"), await serverAuthConfig(authority, join(authDir, "jwt")));
  const tlsBlock = tls
    ? [`tls {`, `  cert_file: ${JSON.stringify(tls.certFile)}`, `  key_file: ${JSON.stringify(tls.keyFile)}`, `  ca_file: ${JSON.stringify(tls.caFile)}`, `  verify: ${tls.verify ? "true" : "false"}`, `}`]
    : [];
  // The shipped single-node config, on this server's port and dirs (monitoring off: ports collide).
  const shipped = await readFile(join(repoRoot, "infra/nats/single.conf"), "utf8");
  for (const expected of ["listen: 127.0.0.1:4222", "http: 127.0.0.1:8222", "/var/lib/molt/nats", 'include "auth.conf"'])
    if (!shipped.includes(expected)) throw new Error(`infra/nats/single.conf no longer has ${expected}: update the test kit`);
  let config = shipped
    .replace("listen: 127.0.0.1:4222", `listen: "127.0.0.1:${port}"`)
    .replace("http: 127.0.0.1:8222", "")
    .replace("/var/lib/molt/nats", dataDir);
  // `sync_interval` came with nats-server 2.10; the floor the project supports (Debian's 2.9.10,
  // MOLT_ALLOW_OLD_NATS=1) refuses the field, and syncs on its own interval instead.
  const [major = 0, minor = 0] = natsServerVersion();
  if (major === 2 && minor < 10) config = config.replace(/^\s*sync_interval:.*$/m, "");
  const configFile = join(authDir, "nats.conf");
  await writeFile(configFile, [config, `log_file: ${JSON.stringify(process.env["MOLT_NATS_LOG_FILE"] ?? join(authDir, "nats.log"))}`, ...tlsBlock, ""].join("\n"));
  const bus = secureBus(authority, authDir, [url], tls ? { caFile: tls.caFile } : {});
  return { configFile, bus };
}

/**
 * The SecureBus of a server or cluster: credentials files written once per identity into
 * `authDir/creds`, the env a Molt process needs (every URL, comma-separated), connections as an
 * identity, and revocation through the system account.
 */
export function secureBus(authority: BusAuthority, authDir: string, urls: string[], tls: { caFile?: string }): SecureBus {
  const files = new Map<BusUser, string>();
  const credsFile = async (who: BusUser) => {
    let f = files.get(who);
    if (!f) {
      f = join(authDir, "creds", `${who}.creds`);
      await mkdir(dirname(f), { recursive: true, mode: 0o700 });
      await writeFile(f, (await userCreds(authority, who)).creds, { mode: 0o600 });
      files.set(who, f);
    }
    return f;
  };
  const bus: SecureBus = {
    authority,
    ...(tls.caFile ? { caFile: tls.caFile } : {}),
    credsFile,
    async env(who) {
      return { MOLT_NATS_URL: urls.join(","), MOLT_NATS_CREDS: await credsFile(who), ...(tls.caFile ? { MOLT_NATS_CA: tls.caFile } : {}) };
    },
    async connect(who, extra = {}) {
      if (typeof who === "string") return connect({ servers: urls, ...natsSecurityOptions({ credsFile: await credsFile(who), ...tls }), ...extra });
      const f = join(authDir, "creds", `adhoc-${Date.now()}-${Math.random().toString(36).slice(2)}.creds`);
      await writeFile(f, who.creds, { mode: 0o600 });
      return connect({ servers: urls, ...natsSecurityOptions({ credsFile: f, ...tls, inboxPrefix: who.inboxPrefix }), ...extra });
    },
    async revoke(userKeys) {
      const sys = await bus.connect("system");
      try {
        await revokeUsers(sys, authority, userKeys);
      } finally {
        await sys.close();
      }
    },
  };
  return bus;
}
