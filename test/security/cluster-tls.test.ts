import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { STREAM_EVENTS, subjects } from "@molt/contracts";
import { hostInboxPrefix, hostIssuer, issueHostCreds, natsSecurityOptions } from "@molt/runtime";
import { provisionBus, startNatsCluster, startNatsServer, startProcess, waitFor, type NatsCluster, type RunningProcess, type TestCerts } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

/**
 * The shipped 3-node example (infra/nats/cluster-n{1,2,3}.conf) run as it is, on this machine's
 * ports and temp dirs: clients only over TLS and with credentials, routes over verified TLS,
 * monitoring on loopback; the admin provisions R3 streams and a service joins with a CA.
 */
let cluster: NatsCluster;
let certs: TestCerts;
const open: NatsConnection[] = [];
let feedback: RunningProcess | undefined;

beforeAll(async () => {
  cluster = await startNatsCluster();
  certs = cluster.certs;
  await waitFor("provisioning as admin", () => provisionBus(cluster.bus, { MOLT_STREAM_REPLICAS: "3" }).then(() => true, () => undefined), { timeoutMs: 90_000, intervalMs: 1000 });
}, 180_000);

afterAll(async () => {
  await feedback?.stop();
  await Promise.all(open.map((nc) => nc.close().catch(() => undefined)));
  await cluster?.stop();
});

describe("the 3-node example with TLS", () => {
  it("[security] streams are R3 across the nodes, routes run over verified TLS, and a service joins with its credentials and the CA", async () => {
    const nc = await cluster.bus.connect("admin");
    open.push(nc);
    const info = await (await jetstreamManager(nc)).streams.info(STREAM_EVENTS);
    expect(info.config.num_replicas).toBe(3);
    expect(1 + (info.cluster?.replicas?.length ?? 0)).toBe(3);
    // Each node sees the two others as routes, and says they are TLS (monitoring, from this machine).
    for (const n of cluster.nodes) {
      const routez = (await (await fetch(`http://127.0.0.1:${n.httpPort}/routez`)).json()) as { routes?: unknown[] };
      expect(routez.routes?.length ?? 0).toBeGreaterThanOrEqual(2);
      const varz = (await (await fetch(`http://127.0.0.1:${n.httpPort}/varz`)).json()) as { tls_required?: boolean; cluster?: { tls_required?: boolean; tls_verify?: boolean } };
      expect(varz.tls_required).toBe(true);
      expect(varz.cluster?.tls_verify).toBe(true);
    }
    feedback = await startProcess(
      "feedback",
      "feedback",
      { ...(await cluster.bus.env("feedback")), MOLT_NATS_CERT: certs.clientCert, MOLT_NATS_KEY: certs.clientKey },
      join(cluster.dir, "logs"),
      /feedback ready/,
    );
  });

  it("[security] a client without TLS, without credentials, or trusting another CA is refused", async () => {
    const plain = cluster.nodes.map((n) => `nats://127.0.0.1:${n.clientPort}`);
    const admin = await cluster.bus.credsFile("admin");
    const attempts: Array<() => Promise<unknown>> = [
      () => connect({ servers: plain, reconnect: false, ...natsSecurityOptions({ credsFile: admin }) }),
      () => connect({ servers: cluster.urls, reconnect: false, ...natsSecurityOptions({ caFile: certs.ca }) }),
      () => connect({ servers: cluster.urls, reconnect: false, ...natsSecurityOptions({ credsFile: admin, caFile: certs.otherCa }) }),
    ];
    for (const attempt of attempts) await expect(attempt()).rejects.toThrow();
  });

  it("[security] revoking a host cuts it off on every node at once, without restarting any", async () => {
    const host = "web-r.example.com";
    const issued = await issueHostCreds(hostIssuer(cluster.bus.authority), host);
    const pids = cluster.nodes.map((n) => n.pid);
    // The host connected to each node (one connection per node), each working.
    const conns = await Promise.all(cluster.urls.map((url) => cluster.bus.connect({ creds: issued.creds, inboxPrefix: hostInboxPrefix(host) }, { servers: [url], reconnect: false })));
    const closed = conns.map((nc) => nc.closed());
    for (const nc of conns) nc.publish(subjects.heartbeat(host), "alive");
    await Promise.all(conns.map((nc) => nc.flush()));
    expect(conns.map((nc) => nc.isClosed())).toEqual([false, false, false]);
    await cluster.bus.revoke([issued.publicKey]);
    // Every node dropped its connection (closed() settles when the server ends it).
    await Promise.all(closed);
    for (const url of cluster.urls)
      await expect(cluster.bus.connect({ creds: issued.creds, inboxPrefix: hostInboxPrefix(host) }, { servers: [url], reconnect: false })).rejects.toThrow(/authorization|revoked/i);
    expect(cluster.nodes.map((n) => n.pid)).toEqual(pids);
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
