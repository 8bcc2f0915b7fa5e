import { execFileSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startNatsServer, startSystem, waitFor, type SecureNatsServer } from "@molt/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

/** This process's children that are still alive, but `ps` itself. */
function children(): string[] {
  const out = execFileSync("ps", ["-o", "pid=,args=", "--ppid", String(process.pid)], { encoding: "utf8" });
  return out.split("\n").map((l) => l.trim()).filter((l) => l && !/^\d+ ps /.test(l));
}

let nats: SecureNatsServer;
let dataDir: string;
beforeAll(async () => {
  nats = await startNatsServer({ secure: true });
  dataDir = await mkdtemp(join(tmpdir(), "molt-bed-"));
});
afterAll(async () => {
  await nats?.stop();
  await rm(dataDir, { recursive: true, force: true });
});

describe("a test bed whose start fails", () => {
  it("[scale-faults] leaves no process running: the services still starting when one fails are stopped once they are up", async () => {
    const before = new Set(children());
    // audit refuses its config at once; the others take a few seconds more to be ready. A start
    // that gave up at the first failure left them running (an orphan release-events in CI).
    const started = startSystem({ nats, dataDir, tokens: {}, processEnv: { audit: { MOLT_HTTP_PORT: "not-a-port" } } });
    await expect(started).rejects.toThrow(/audit exited/);
    // Nothing started by the bed is alive afterwards.
    const left = () => children().filter((p) => !before.has(p));
    await waitFor("the bed's processes gone", () => (left().length === 0 ? true : undefined), { timeoutMs: 10_000 }).catch(() => undefined);
    expect(left()).toEqual([]);
  });
});
