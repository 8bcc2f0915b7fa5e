/**
 * Package downloads against nginx, measured in one run with one client (undici):
 * C concurrent GETs of one P MiB package (default 200 × 20 MiB), each body read to the end and
 * dropped, from
 *   - nginx (Debian's package, `scripts/nginx.sh`, started here with a generated config on a free
 *     port, `sendfile on`): the baseline;
 *   - package-repo directly (`/v1/packages/<c>/<v>/<platform>/download`, served from its cache);
 *   - the gateway (the URL hosts are given: PackageInfo.url), which relays to package-repo.
 * Every server is its own process; the client is this one. Each side runs R rounds alternately
 * after one warm-up round; the median rate is compared. Target: ≥ 0.7 of nginx for each.
 * Then the mirror's effect on hosts: H concurrent downloads through the upgrade client's own
 * download code (sha256 checked, written to disk) from the gateway, then with nginx as the mirror.
 * Usage: pnpm bench:download [--concurrency 200] [--package-mib 20] [--rounds 3] [--host-downloads 20]
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { link, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs, promisify } from "node:util";
import { Agent, request } from "undici";
import { create as createTar } from "tar";
import { downloadPackage, nodeGet, viaMirror } from "@molt/agent/client/download";
import { freePort, startNatsServer, startProcess, waitFor } from "@molt/testkit";

const { values } = parseArgs({
  options: {
    concurrency: { type: "string", default: "200" },
    "package-mib": { type: "string", default: "20" },
    rounds: { type: "string", default: "3" },
    "host-downloads": { type: "string", default: "20" },
  },
});
const CONCURRENCY = Number(values.concurrency);
const PACKAGE_MIB = Number(values["package-mib"]);
const ROUNDS = Number(values.rounds);
const HOST_DOWNLOADS = Number(values["host-downloads"]);
const TARGET = 0.7;
const MiB = 1024 * 1024;
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const TOKEN = "bench-operator-token-0123456789";

const work = await mkdtemp(join(tmpdir(), "molt-bench-download-"));
const children: { stop(): Promise<void> }[] = [];
try {
  // ---- nginx from Debian (unpacked into .tools by the script)
  const { stdout } = await promisify(execFile)(join(repoRoot, "scripts/nginx.sh"));
  const nginxBin = stdout.trim().split("\n").pop()!;

  // ---- the package: a tar.gz of random bytes (incompressible: the download is the full size)
  const src = join(work, "src");
  await mkdir(src);
  await writeFile(join(src, "payload.bin"), randomBytes(PACKAGE_MIB * MiB));
  const archive = join(work, "bench.tar.gz");
  await createTar({ gzip: true, file: archive, cwd: src }, ["payload.bin"]);

  // ---- package-repo and the gateway, real processes on a real nats-server
  const nats = await startNatsServer();
  children.push(nats);
  const [repoPort, gatewayPort, nginxPort] = [await freePort(), await freePort(), await freePort()];
  const tokens = JSON.stringify({ [TOKEN]: { actor: "bench", role: "operator" } });
  const logs = join(work, "logs");
  const gatewayUrl = `http://127.0.0.1:${gatewayPort}`;
  const repoUrl = `http://127.0.0.1:${repoPort}`;
  const quiet = { MOLT_TOKENS: tokens, MOLT_LOG_LEVEL: "info" };
  children.push(
    await startProcess(
      "package-repo",
      "package-repo",
      { ...quiet, MOLT_NATS_URL: nats.url, MOLT_HTTP_PORT: String(repoPort), MOLT_DATA_DIR: join(work, "repo"), MOLT_PUBLIC_URL: gatewayUrl },
      logs,
      /"msg":"listening"/,
    ),
  );
  const unused = "http://127.0.0.1:9";
  children.push(
    await startProcess(
      "gateway",
      "gateway",
      { ...quiet, MOLT_HTTP_PORT: String(gatewayPort), MOLT_PACKAGE_REPO_URL: repoUrl, MOLT_ACTION_URL: unused, MOLT_PROJECTOR_URL: unused, MOLT_AUDIT_URL: unused },
      logs,
      /"msg":"listening"/,
    ),
  );
  const { readFile } = await import("node:fs/promises");
  const bytes = await readFile(archive);
  const published = await fetch(`${gatewayUrl}/v1/packages?component=bench-app&version=1.0.0&platform=linux-amd64`, {
    method: "POST",
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/gzip" },
    body: bytes,
  });
  if (published.status !== 201) throw new Error(`publish answered ${published.status}: ${await published.text()}`);
  const info = (await published.json()) as { sha256: string; size: number; url: string };
  const path = new URL(info.url).pathname;

  // ---- nginx serving the same bytes at the same path (a mirror keeps the path)
  const mirrorRoot = join(work, "mirror");
  await mkdir(join(mirrorRoot, dirname(path)), { recursive: true });
  await link(join(work, "repo", "cache", info.sha256), join(mirrorRoot, path));
  const nginxDir = join(work, "nginx");
  await mkdir(join(nginxDir, "tmp"), { recursive: true });
  const conf = join(nginxDir, "nginx.conf");
  await writeFile(
    conf,
    // As root, nginx's workers would switch to nobody, who cannot enter the private temp dir.
    `daemon off;
${process.getuid?.() === 0 ? "user root;\n" : ""}worker_processes auto;
pid ${nginxDir}/nginx.pid;
error_log ${nginxDir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  client_body_temp_path ${nginxDir}/tmp;
  proxy_temp_path ${nginxDir}/tmp;
  fastcgi_temp_path ${nginxDir}/tmp;
  uwsgi_temp_path ${nginxDir}/tmp;
  scgi_temp_path ${nginxDir}/tmp;
  default_type application/gzip;
  server {
    listen 127.0.0.1:${nginxPort};
    root ${mirrorRoot};
  }
}
`,
  );
  const nginx: ChildProcess = spawn(nginxBin, ["-c", conf, "-p", nginxDir, "-e", join(nginxDir, "error.log")], { stdio: "ignore" });
  children.push({ stop: () => new Promise<void>((r) => (nginx.exitCode !== null ? r() : (nginx.once("exit", () => r()), nginx.kill("SIGTERM")))) });
  const nginxUrl = `http://127.0.0.1:${nginxPort}`;
  await waitFor("nginx to answer", async () => ((await fetch(`${nginxUrl}${path}`, { method: "HEAD" }).catch(() => null))?.status === 200 ? true : undefined), { timeoutMs: 10_000 });

  // ---- the client: one undici agent, as many connections as downloads in flight
  const agent = new Agent({ connections: CONCURRENCY, pipelining: 1 });
  const one = async (url: string): Promise<number> => {
    const res = await request(url, { dispatcher: agent });
    if (res.statusCode !== 200) throw new Error(`${url} answered ${res.statusCode}`);
    let n = 0;
    for await (const chunk of res.body) n += (chunk as Buffer).length;
    if (n !== info.size) throw new Error(`${url} gave ${n} bytes, expected ${info.size}`);
    return n;
  };
  /** One round: CONCURRENCY downloads at once; MiB/s over the whole round. */
  const round = async (url: string): Promise<number> => {
    const t0 = performance.now();
    const got = await Promise.all(Array.from({ length: CONCURRENCY }, () => one(url)));
    const secs = (performance.now() - t0) / 1000;
    return got.reduce((a, b) => a + b, 0) / MiB / secs;
  };
  const sides = { nginx: `${nginxUrl}${path}`, packageRepo: `${repoUrl}${path}`, gateway: info.url } as const;
  const rates: Record<keyof typeof sides, number[]> = { nginx: [], packageRepo: [], gateway: [] };
  for (const url of Object.values(sides)) await round(url); // warm-up (page cache, JIT, connections)
  for (let r = 0; r < ROUNDS; r++) for (const [name, url] of Object.entries(sides)) rates[name as keyof typeof sides].push(await round(url));
  await agent.close();
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const med = { nginx: median(rates.nginx), packageRepo: median(rates.packageRepo), gateway: median(rates.gateway) };
  const ratio = { packageRepo: med.packageRepo / med.nginx, gateway: med.gateway / med.nginx };
  const line = (name: string, k: keyof typeof sides) =>
    console.log(`${name.padEnd(22)} ${med[k].toFixed(0).padStart(6)} MiB/s median [${rates[k].map((x) => x.toFixed(0)).join(", ")}]${k === "nginx" ? "" : `  ratio ${(med[k] / med.nginx).toFixed(2)} (target ≥ ${TARGET}) ${med[k] / med.nginx >= TARGET ? "ok" : "UNDER"}`}`);
  console.log(`${CONCURRENCY} concurrent downloads of ${(info.size / MiB).toFixed(1)} MiB, ${ROUNDS} rounds each after a warm-up:`);
  line("nginx (baseline)", "nginx");
  line("package-repo directly", "packageRepo");
  line("gateway (hosts' URL)", "gateway");

  // ---- hosts: the upgrade client's download (to disk, sha256 checked), origin vs nginx as the mirror
  const hostRate = async (mirror: string | undefined): Promise<number> => {
    const dir = join(work, `hosts-${mirror ? "mirror" : "origin"}`);
    await mkdir(dir);
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: HOST_DOWNLOADS }, (_, i) =>
        downloadPackage({ url: viaMirror(info.url, mirror), dest: join(dir, `${i}.tar.gz`), size: info.size, sha256: info.sha256, get: nodeGet }),
      ),
    );
    const secs = (performance.now() - t0) / 1000;
    await rm(dir, { recursive: true, force: true });
    return (HOST_DOWNLOADS * info.size) / MiB / secs;
  };
  const hostOrigin = await hostRate(undefined);
  const hostMirror = await hostRate(nginxUrl);
  console.log(`hosts (${HOST_DOWNLOADS} upgrade-client downloads, verified, to disk): gateway ${hostOrigin.toFixed(0)} MiB/s, nginx mirror ${hostMirror.toFixed(0)} MiB/s (${(hostMirror / hostOrigin).toFixed(2)}×)`);
  const check = createHash("sha256").update(bytes).digest("hex");
  if (check !== info.sha256) throw new Error("package-repo reported another sha256 than the bytes uploaded");
  console.log(
    JSON.stringify({
      bench: "download",
      concurrency: CONCURRENCY,
      packageBytes: info.size,
      rounds: ROUNDS,
      mibPerSec: med,
      samples: rates,
      ratio,
      target: TARGET,
      pass: ratio.packageRepo >= TARGET && ratio.gateway >= TARGET,
      hosts: { downloads: HOST_DOWNLOADS, gatewayMibPerSec: hostOrigin, mirrorMibPerSec: hostMirror },
    }),
  );
} finally {
  for (const c of children.reverse()) await c.stop().catch(() => undefined);
  await rm(work, { recursive: true, force: true });
}
