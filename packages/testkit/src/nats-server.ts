import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export interface NatsServer {
  readonly url: string;
  readonly port: number;
  readonly dataDir: string;
  /** Stops the server (SIGTERM, then SIGKILL) and removes its data dir unless `keepData`. */
  stop(opts?: { keepData?: boolean }): Promise<void>;
  /** Kills the server process and starts it again on the same port and data dir. */
  restart(): Promise<void>;
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

export async function freePort(): Promise<number> {
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

/** Starts a real nats-server with JetStream on a free port and its own temp data dir. */
export async function startNatsServer(opts: { dataDir?: string; port?: number } = {}): Promise<NatsServer> {
  const port = opts.port ?? (await freePort());
  const dataDir = opts.dataDir ?? (await mkdtemp(join(tmpdir(), "molt-nats-")));
  let proc: ChildProcess;
  const launch = async () => {
    proc = spawn(natsServerBinary(), ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", dataDir], {
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
    url: `nats://127.0.0.1:${port}`,
    port,
    dataDir,
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
