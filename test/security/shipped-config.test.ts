import { spawn, type ChildProcess } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { connect as tcpConnect } from "node:net";
import { networkInterfaces, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createBusAuthority, serverAuthConfig } from "@molt/runtime";
import { freePort, natsServerBinary, natsServerVersion, waitFor } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

/**
 * Issue 7's first finding was the shipped configs: `infra/nats/*.conf` set no auth, listened on
 * every interface and exposed monitoring. Each shipped config is read as text, and single.conf is
 * run as it is (only its ports and store dir moved, auth.conf from `molt-bus init`'s generator)
 * and attacked the way the issue did: a plain `CONNECT {}` on the NATS port, and its monitoring
 * port from another interface.
 */
const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const confDir = join(root, "infra/nats");
const configs = readdirSync(confDir).filter((f) => f.endsWith(".conf"));
/** Config lines without comments. */
const lines = (file: string) =>
  readFileSync(join(confDir, file), "utf8")
    .split("\n")
    .map((l) => l.replace(/#.*$/, "").trim())
    .filter((l) => l !== "");

let dir: string;
let server: ChildProcess | undefined;
let clientPort: number;
let httpPort: number;

/** What the server answers to `send` on a raw TCP connection to host:port, or the connection error. */
function raw(host: string, port: number, send: string): Promise<string> {
  return new Promise((res) => {
    let got = "";
    const s = tcpConnect({ host, port });
    s.setTimeout(3000, () => s.destroy());
    s.on("connect", () => s.write(send));
    s.on("data", (d) => {
      got += d.toString();
      if (/-ERR|PONG/.test(got)) s.end();
    });
    s.on("error", (err) => res(`error: ${(err as NodeJS.ErrnoException).code ?? err.message}`));
    s.on("close", () => res(got));
  });
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "molt-shipped-"));
  [clientPort, httpPort] = [await freePort(), await freePort()];
  await writeFile(join(dir, "auth.conf"), await serverAuthConfig(createBusAuthority(), join(dir, "jwt")));
  let conf = readFileSync(join(confDir, "single.conf"), "utf8")
    .replace("listen: 127.0.0.1:4222", `listen: 127.0.0.1:${clientPort}`)
    .replace("http: 127.0.0.1:8222", `http: 127.0.0.1:${httpPort}`)
    .replace("/var/lib/molt/nats", join(dir, "js"));
  const [major = 0, minor = 0] = natsServerVersion();
  if (major === 2 && minor < 10) conf = conf.replace(/^\s*sync_interval:.*$/m, "");
  expect(conf).toContain(`listen: 127.0.0.1:${clientPort}`);
  expect(conf).toContain(`http: 127.0.0.1:${httpPort}`);
  await writeFile(join(dir, "nats.conf"), conf);
  server = spawn(natsServerBinary(), ["-c", join(dir, "nats.conf")], { stdio: "ignore" });
  await waitFor("the shipped single.conf serving", async () => ((await fetch(`http://127.0.0.1:${httpPort}/healthz`).catch(() => null))?.ok ? true : undefined), { timeoutMs: 20_000, intervalMs: 100 });
}, 30_000);

afterAll(async () => {
  if (server && server.exitCode === null) {
    const exited = new Promise((r) => server!.once("exit", r));
    server.kill("SIGTERM");
    await exited;
  }
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("the shipped nats-server configs", () => {
  it.each(configs)("[security] %s: every client authenticates (auth.conf: operator and resolver), no anonymous user, monitoring on loopback only", (file) => {
    const l = lines(file);
    expect(l).toContain('include "auth.conf"');
    for (const anonymous of [/^no_auth_user/, /^authorization\s*[{:]/, /^accounts\s*[{:]/, /^users\s*[{:[]/, /^(user|password|token)\s*:/])
      expect(l.filter((x) => anonymous.test(x)), String(anonymous)).toEqual([]);
    const monitoring = l.filter((x) => /^(http|https|http_port|https_port|monitor_port)\s*:/.test(x));
    expect(monitoring.length).toBeGreaterThan(0);
    for (const m of monitoring) expect(m, file).toMatch(/^(http|https)\s*:\s*"?127\.0\.0\.1:\d+"?$/);
    // Clients: the single server on loopback; a cluster node on the network only over TLS, its routes verified.
    if (file.startsWith("cluster")) {
      const text = l.join("\n");
      expect(text).toMatch(/^tls\s*\{[^}]*cert_file[^}]*\}/m);
      expect(text).toMatch(/cluster\s*\{[\s\S]*tls\s*\{[^}]*verify:\s*true/);
    } else {
      expect(l.filter((x) => /^(listen|port|host|net)\s*:/.test(x))).toEqual(["listen: 127.0.0.1:4222"]);
    }
  });

  it("[security] the demo runs its nats-server secured (the shipped single.conf with credentials)", () => {
    const demo = readFileSync(join(root, "scripts/demo.ts"), "utf8");
    expect(demo).toMatch(/startNatsServer\(\{[^}]*secure: true/);
    expect(demo).not.toMatch(/secure: false/);
  });

  it("[security] single.conf run as shipped: a plain CONNECT {} is refused (Authorization Violation), and neither port answers on another interface", async () => {
    const answer = await raw("127.0.0.1", clientPort, "CONNECT {}\r\nPING\r\n");
    expect(answer).toMatch(/-ERR 'Authorization Violation'/);
    expect(answer).not.toMatch(/PONG/);
    expect((await fetch(`http://127.0.0.1:${httpPort}/varz`)).status).toBe(200);
    const others = Object.values(networkInterfaces())
      .flat()
      .filter((a) => a && !a.internal && a.family === "IPv4")
      .map((a) => a!.address);
    for (const address of others) {
      expect(await raw(address, clientPort, "PING\r\n"), `${address}:${clientPort}`).toBe("error: ECONNREFUSED");
      expect(await raw(address, httpPort, "GET /varz HTTP/1.0\r\n\r\n"), `${address}:${httpPort}`).toBe("error: ECONNREFUSED");
    }
  });
});
