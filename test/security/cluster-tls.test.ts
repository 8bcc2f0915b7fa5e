import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { STREAM_EVENTS } from "@molt/contracts";
import { createBusAuthority, natsSecurityOptions, serverAuthConfig, userCreds, type BusAuthority, type BusUser } from "@molt/runtime";
import { freePort, natsServerBinary, startNatsServer, startProcess, waitFor, type RunningProcess } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

/**
 * The shipped 3-node example (infra/nats/cluster-n{1,2,3}.conf) run as it is, on this machine's
 * ports and temp dirs: clients only over TLS and with credentials, routes over verified TLS,
 * monitoring on loopback; the admin provisions R3 streams and a service joins with a CA.
 */
const run = promisify(execFile);
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
let dir: string;
let certs: Certs;
let authority: BusAuthority;
const nodes: Array<{ proc: ChildProcess; client: number; http: number }> = [];
const open: NatsConnection[] = [];
let feedback: RunningProcess | undefined;

interface Certs {
  ca: string;
  cert: string;
  key: string;
  clientCert: string;
  clientKey: string;
  otherCa: string;
}

/** A CA, a server certificate for the nodes' names and 127.0.0.1, a client certificate, and an unrelated CA. */
async function makeCerts(out: string): Promise<Certs> {
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

const urls = () => nodes.map((n) => `tls://127.0.0.1:${n.client}`).join(",");
async function credsFile(who: BusUser): Promise<string> {
  const file = join(dir, `${who}.creds`);
  await writeFile(file, (await userCreds(authority, who)).creds, { mode: 0o600 });
  return file;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "molt-cluster-tls-"));
  certs = await makeCerts(join(dir, "tls"));
  authority = createBusAuthority();
  const ports = await Promise.all(Array.from({ length: 9 }, () => freePort()));
  const route = (i: number) => ports[6 + i]!;
  for (let i = 0; i < 3; i++) {
    const nodeDir = join(dir, `n${i + 1}`);
    await mkdir(nodeDir, { recursive: true });
    let conf = await readFile(join(repoRoot, `infra/nats/cluster-n${i + 1}.conf`), "utf8");
    const client = ports[i]!;
    const http = ports[3 + i]!;
    conf = conf
      .split("\n")
      .filter((line) => !line.trim().startsWith("#"))
      .join("\n")
      .replaceAll("/etc/molt/nats/tls/server.pem", certs.cert)
      .replaceAll("/etc/molt/nats/tls/server-key.pem", certs.key)
      .replaceAll("/etc/molt/nats/tls/ca.pem", certs.ca)
      .replace("/var/lib/molt/nats", join(nodeDir, "js"))
      .replace("listen: 0.0.0.0:4222", `listen: 127.0.0.1:${client}`)
      .replace("http: 127.0.0.1:8222", `http: 127.0.0.1:${http}`)
      .replace("listen: 0.0.0.0:6222", `listen: 127.0.0.1:${route(i)}`);
    for (let k = 0; k < 3; k++) conf = conf.replace(`nats-route://molt-n${k + 1}:6222`, `nats-route://127.0.0.1:${route(k)}`);
    expect(conf).not.toMatch(/\/etc\/molt|\/var\/lib|0\.0\.0\.0|:4222|:6222|:8222/);
    await writeFile(join(nodeDir, "auth.conf"), await serverAuthConfig(authority, join(nodeDir, "jwt")));
    await writeFile(join(nodeDir, "nats.conf"), conf);
    const proc = spawn(natsServerBinary(), ["-c", join(nodeDir, "nats.conf")], { stdio: ["ignore", "ignore", "pipe"] });
    nodes.push({ proc, client, http });
  }
  const adminCreds = await credsFile("admin");
  // The cluster is up once JetStream answers with a meta leader; then the admin provisions R3.
  await waitFor(
    "the cluster's JetStream",
    async () => {
      const nc = await connect({ servers: urls().split(","), reconnect: false, ...natsSecurityOptions({ credsFile: adminCreds, caFile: certs.ca }) }).catch(() => undefined);
      if (!nc) return undefined;
      try {
        const info = await (await jetstreamManager(nc)).getAccountInfo();
        return info ? true : undefined;
      } catch {
        return undefined;
      } finally {
        await nc.close();
      }
    },
    { timeoutMs: 60_000, intervalMs: 500 },
  );
  await waitFor(
    "provisioning as admin",
    async () =>
      run(process.execPath, ["--import", "tsx", join(repoRoot, "scripts/bus.ts"), "provision"], {
        cwd: repoRoot,
        env: { ...process.env, MOLT_NATS_URL: urls(), MOLT_NATS_CREDS: adminCreds, MOLT_NATS_CA: certs.ca, MOLT_STREAM_REPLICAS: "3" },
      }).then(
        () => true,
        () => undefined,
      ),
    { timeoutMs: 90_000, intervalMs: 1000 },
  );
}, 180_000);

afterAll(async () => {
  await feedback?.stop();
  await Promise.all(open.map((nc) => nc.close().catch(() => undefined)));
  await Promise.all(
    nodes.map(async (n) => {
      const exited = new Promise((r) => n.proc.once("exit", r));
      n.proc.kill("SIGTERM");
      await exited;
    }),
  );
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("the 3-node example with TLS", () => {
  it("[security] streams are R3 across the nodes, routes run over verified TLS, and a service joins with its credentials and the CA", async () => {
    const nc = await connect({ servers: urls().split(","), ...natsSecurityOptions({ credsFile: await credsFile("admin"), caFile: certs.ca }) });
    open.push(nc);
    const info = await (await jetstreamManager(nc)).streams.info(STREAM_EVENTS);
    expect(info.config.num_replicas).toBe(3);
    expect(1 + (info.cluster?.replicas?.length ?? 0)).toBe(3);
    // Each node sees the two others as routes, and says they are TLS (monitoring, from this machine).
    for (const n of nodes) {
      const routez = (await (await fetch(`http://127.0.0.1:${n.http}/routez`)).json()) as { routes?: unknown[] };
      expect(routez.routes?.length ?? 0).toBeGreaterThanOrEqual(2);
      const varz = (await (await fetch(`http://127.0.0.1:${n.http}/varz`)).json()) as { tls_required?: boolean; cluster?: { tls_required?: boolean; tls_verify?: boolean } };
      expect(varz.tls_required).toBe(true);
      expect(varz.cluster?.tls_verify).toBe(true);
    }
    feedback = await startProcess(
      "feedback",
      "feedback",
      { MOLT_NATS_URL: urls(), MOLT_NATS_CREDS: await credsFile("feedback"), MOLT_NATS_CA: certs.ca, MOLT_NATS_CERT: certs.clientCert, MOLT_NATS_KEY: certs.clientKey },
      join(dir, "logs"),
      /feedback ready/,
    );
  });

  it("[security] a client without TLS, without credentials, or trusting another CA is refused", async () => {
    const plain = nodes.map((n) => `nats://127.0.0.1:${n.client}`);
    const admin = await credsFile("admin");
    const attempts: Array<() => Promise<unknown>> = [
      () => connect({ servers: plain, reconnect: false, ...natsSecurityOptions({ credsFile: admin }) }),
      () => connect({ servers: urls().split(","), reconnect: false, ...natsSecurityOptions({ caFile: certs.ca }) }),
      () => connect({ servers: urls().split(","), reconnect: false, ...natsSecurityOptions({ credsFile: admin, caFile: certs.otherCa }) }),
    ];
    for (const attempt of attempts) await expect(attempt()).rejects.toThrow();
  });

  it("[security] a single server with client verification takes only clients with a certificate from its CA", async () => {
    const server = await startNatsServer({ secure: true, tls: { certFile: certs.cert, keyFile: certs.key, caFile: certs.ca, verify: true } });
    try {
      const admin = await server.bus.credsFile("admin");
      const ok = await connect({ servers: server.url, reconnect: false, ...natsSecurityOptions({ credsFile: admin, caFile: certs.ca, certFile: certs.clientCert, keyFile: certs.clientKey }) });
      await ok.close();
      await expect(connect({ servers: server.url, reconnect: false, ...natsSecurityOptions({ credsFile: admin, caFile: certs.ca }) })).rejects.toThrow();
    } finally {
      await server.stop();
    }
  });
});
