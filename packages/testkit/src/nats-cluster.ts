import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { jetstreamManager } from "@nats-io/jetstream";
import { createBusAuthority, serverAuthConfig } from "@molt/runtime";
import { freePort, natsServerBinary, natsServerVersion, secureBus, type SecureBus } from "./nats-server.js";
import { waitFor } from "./wait.js";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
const run = promisify(execFile);

/** PEM files made by openssl for a test: a CA, a server certificate, a client one, and an unrelated CA. */
export interface TestCerts {
  ca: string;
  cert: string;
  key: string;
  clientCert: string;
  clientKey: string;
  otherCa: string;
}

/** A CA, a server certificate for the nodes' names and 127.0.0.1, a client certificate, and an unrelated CA. */
export async function makeTestCerts(out: string): Promise<TestCerts> {
  await mkdir(out, { recursive: true });
  const f = (n: string) => join(out, n);
  const ssl = (...args: string[]) => run("openssl", args, { cwd: out });
  for (const ca of ["ca", "other-ca"])
    await ssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", `/CN=molt test ${ca}`, "-keyout", f(`${ca}-key.pem`), "-out", f(`${ca}.pem`));
  const leaf = async (name: string, san: string, usage: string) => {
    await ssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", `/CN=${name}`, "-keyout", f(`${name}-key.pem`), "-out", f(`${name}.csr`));
    await writeFile(f(`${name}.ext`), `subjectAltName=${san}\nextendedKeyUsage=${usage}\n`);
    await ssl("x509", "-req", "-in", f(`${name}.csr`), "-CA", f("ca.pem"), "-CAkey", f("ca-key.pem"), "-CAcreateserial", "-days", "2", "-extfile", f(`${name}.ext`), "-out", f(`${name}.pem`));
  };
  await leaf("server", "DNS:molt-n1,DNS:molt-n2,DNS:molt-n3,DNS:localhost,IP:127.0.0.1", "serverAuth,clientAuth");
  await leaf("client", "DNS:molt-client", "clientAuth");
  return { ca: f("ca.pem"), cert: f("server.pem"), key: f("server-key.pem"), clientCert: f("client.pem"), clientKey: f("client-key.pem"), otherCa: f("other-ca.pem") };
}

/** One node of the cluster: its ports, and the faults a test inflicts on it. */
export interface ClusterNode {
  /** `molt-n1` … as in the shipped config (the JetStream API names leaders by it). */
  readonly name: string;
  readonly clientPort: number;
  readonly httpPort: number;
  readonly pid: number | undefined;
  readonly running: boolean;
  /** SIGKILL: no goodbye to the routes, nothing flushed. */
  kill(): Promise<void>;
  /** SIGTERM, waiting for the exit. */
  stop(): Promise<void>;
  /** Starts the node again on its ports, config and data (after kill or stop). */
  start(): Promise<void>;
  /** SIGSTOP: the process hangs with its sockets open (a frozen VM, a long GC pause). */
  freeze(): void;
  /** SIGCONT after `freeze`. */
  thaw(): void;
}

export interface NatsCluster {
  readonly nodes: ClusterNode[];
  /** tls://127.0.0.1:<client port> of every node. */
  readonly urls: string[];
  readonly certs: TestCerts;
  readonly dir: string;
  /** Credentials, env (every URL and the CA) and connections per identity, as on one server. */
  readonly bus: SecureBus;
  /** The index in `nodes` of the node that leads a stream's replicas now. */
  leaderOf(stream: string): Promise<number>;
  /** Stops every node and removes the cluster's files. */
  stop(): Promise<void>;
}

/**
 * The shipped 3-node example (`infra/nats/cluster-n{1,2,3}.conf`) run as it is, on this machine's
 * ports and a temp dir: clients over TLS with credentials, routes over verified TLS, JetStream on
 * every node with `sync_interval: always`. Resolves once JetStream has a meta leader.
 */
export async function startNatsCluster(): Promise<NatsCluster> {
  const dir = await mkdtemp(join(tmpdir(), "molt-cluster-"));
  const certs = await makeTestCerts(join(dir, "tls"));
  const authority = createBusAuthority();
  const ports = await Promise.all(Array.from({ length: 9 }, () => freePort()));
  const route = (i: number) => ports[6 + i]!;
  const [major = 0, minor = 0] = natsServerVersion();
  const nodes: ClusterNode[] = [];
  for (let i = 0; i < 3; i++) {
    const nodeDir = join(dir, `n${i + 1}`);
    await mkdir(nodeDir, { recursive: true });
    const clientPort = ports[i]!;
    const httpPort = ports[3 + i]!;
    let conf = (await readFile(join(repoRoot, `infra/nats/cluster-n${i + 1}.conf`), "utf8"))
      .split("\n")
      .filter((line) => !line.trim().startsWith("#"))
      .join("\n")
      .replaceAll("/etc/molt/nats/tls/server.pem", certs.cert)
      .replaceAll("/etc/molt/nats/tls/server-key.pem", certs.key)
      .replaceAll("/etc/molt/nats/tls/ca.pem", certs.ca)
      .replace("/var/lib/molt/nats", join(nodeDir, "js"))
      .replace("listen: 0.0.0.0:4222", `listen: 127.0.0.1:${clientPort}`)
      .replace("http: 127.0.0.1:8222", `http: 127.0.0.1:${httpPort}`)
      .replace("listen: 0.0.0.0:6222", `listen: 127.0.0.1:${route(i)}`);
    for (let k = 0; k < 3; k++) conf = conf.replace(`nats-route://molt-n${k + 1}:6222`, `nats-route://127.0.0.1:${route(k)}`);
    if (/\/etc\/molt|\/var\/lib|0\.0\.0\.0|:4222\b|:6222\b|:8222\b/.test(conf)) throw new Error(`infra/nats/cluster-n${i + 1}.conf changed shape: update the test kit`);
    if (major === 2 && minor < 10) conf = conf.replace(/^\s*sync_interval:.*$/m, "");
    await writeFile(join(nodeDir, "auth.conf"), await serverAuthConfig(authority, join(nodeDir, "jwt")));
    await writeFile(join(nodeDir, "nats.conf"), `${conf}\nlog_file: ${JSON.stringify(join(nodeDir, "nats.log"))}\n`);
    nodes.push(clusterNode(`molt-n${i + 1}`, join(nodeDir, "nats.conf"), clientPort, httpPort));
  }
  await Promise.all(nodes.map((n) => n.start()));
  const urls = nodes.map((n) => `tls://127.0.0.1:${n.clientPort}`);
  const bus = secureBus(authority, join(dir, "auth"), urls, { caFile: certs.ca });
  const jsm = async <T>(f: (m: Awaited<ReturnType<typeof jetstreamManager>>) => Promise<T>): Promise<T> => {
    const nc = await bus.connect("admin", { reconnect: false, timeout: 2_000 });
    try {
      return await f(await jetstreamManager(nc, { timeout: 2_000 }));
    } finally {
      await nc.close();
    }
  };
  await waitFor("the cluster's JetStream (a meta leader)", () => jsm((m) => m.getAccountInfo()).then(() => true, () => undefined), { timeoutMs: 60_000, intervalMs: 500 });
  return {
    nodes,
    urls,
    certs,
    dir,
    bus,
    async leaderOf(stream) {
      const leader = await jsm(async (m) => (await m.streams.info(stream)).cluster?.leader);
      const i = nodes.findIndex((n) => n.name === leader);
      if (i < 0) throw new Error(`stream ${stream} has no leader among the nodes (${String(leader)})`);
      return i;
    },
    async stop() {
      for (const n of nodes) n.thaw();
      await Promise.all(nodes.map((n) => n.stop()));
      await rm(dir, { recursive: true, force: true });
    },
  };
}

function clusterNode(name: string, configFile: string, clientPort: number, httpPort: number): ClusterNode {
  let proc: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  const alive = () => proc !== undefined && proc.exitCode === null && proc.signalCode === null;
  const end = async (signal: NodeJS.Signals) => {
    if (!alive()) return;
    proc!.kill("SIGCONT");
    proc!.kill(signal);
    const timer = setTimeout(() => proc?.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  };
  return {
    name,
    clientPort,
    httpPort,
    get pid() {
      return proc?.pid;
    },
    get running() {
      return alive();
    },
    kill: () => end("SIGKILL"),
    stop: () => end("SIGTERM"),
    async start() {
      if (alive()) return;
      const p = spawn(natsServerBinary(), ["-c", configFile], { stdio: ["ignore", "ignore", "ignore"] });
      proc = p;
      exited = new Promise((r) => p.once("exit", () => r()));
      await waitFor(`${name} listening on ${clientPort}`, async () => {
        if (p.exitCode !== null) throw new Error(`${name} exited with code ${p.exitCode} (see ${dirname(configFile)}/nats.log)`);
        const r = await fetch(`http://127.0.0.1:${httpPort}/healthz?js-enabled-only=true`).catch(() => undefined);
        return r ? true : undefined;
      }, { timeoutMs: 30_000, intervalMs: 100 });
    },
    freeze() {
      if (alive()) proc!.kill("SIGSTOP");
    },
    thaw() {
      if (alive()) proc!.kill("SIGCONT");
    },
  };
}
