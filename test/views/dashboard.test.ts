import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { NatsConnection } from "@nats-io/transport-node";
import { buildDashboard } from "@molt/dashboard";
import { createEventStore, type EventStore } from "@molt/event-store";
import { startNatsServer, startSystem, waitFor, type SecureNatsServer, type System } from "@molt/testkit";
import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { COMPONENT, history, operatorApi, simIds, teardown } from "../roll-engine/harness.js";

/**
 * The dashboard in a real headless Chromium (Debian's, driven by playwright-core) against the
 * whole system: 12 simulated hosts, one of which fails its download. Numbers are read from the
 * page's data attributes, not its pixels; screenshots go to test-artifacts/dashboard/.
 */
const OPERATOR = "operator-token-dash-00001";
const VIEWER = "viewer-token-dash-000001";
const HOSTS = simIds("sim-", 12);
const FAILING = "sim-007";
const ARTIFACTS = fileURLToPath(new URL("../../test-artifacts/dashboard/", import.meta.url));

let nats: SecureNatsServer;
let nc: NatsConnection;
let store: EventStore;
let system: System;
let dataDir: string;
let browser: Browser;
let page: Page;
const op = operatorApi(() => system, OPERATOR);

function chromiumPath(): string {
  try {
    return execFileSync("which", ["chromium"], { encoding: "utf8" }).trim();
  } catch {
    throw new Error("Debian's chromium is not installed: run scripts/bootstrap.sh (it installs it)");
  }
}

async function signIn(token: string): Promise<void> {
  await page.goto(system.gatewayUrl + "/");
  await page.evaluate("localStorage.clear()");
  await page.reload();
  await page.fill('input[name="token"]', token);
  await page.click('button[type="submit"]');
  await page.waitForSelector("[data-role]");
}

const shot = (name: string) => page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "molt-dash-"));
  await mkdir(ARTIFACTS, { recursive: true });
  // The page is built from the sources under test, not whatever dist/ an earlier build left.
  const dashboardDir = join(dataDir, "dashboard");
  await buildDashboard(dashboardDir);
  const faultFile = join(dataDir, "fault.json");
  await writeFile(faultFile, JSON.stringify({ hosts: [FAILING], step: "download", message: "injected: mirror down" }));
  nats = await startNatsServer({ secure: true });
  nc = await nats.bus.connect("admin");
  store = createEventStore(nc);
  system = await startSystem({
    nats,
    dataDir,
    tokens: { [OPERATOR]: { actor: "otto", role: "operator" }, [VIEWER]: { actor: "vera", role: "viewer" } },
    sim: { count: HOSTS.length, seed: `${COMPONENT}@1.0.0`, stepDelayMs: 150 },
    env: { MOLT_HEARTBEAT_MS: "500", MOLT_POLL_MS: "1000", MOLT_RETRY_DELAY_MS: "100", MOLT_SIM_FAULT_FILE: faultFile, MOLT_DASHBOARD_DIR: dashboardDir },
  });
  await waitFor("12 hosts in the fleet view", async () => {
    const r = await op.api<{ hosts: unknown[] }>("GET", "/v1/hosts?limit=100");
    return r.body.hosts.length === HOSTS.length ? true : undefined;
  }, { timeoutMs: 60_000 });
  await op.upload("2.0.0");
  browser = await chromium.launch({ executablePath: chromiumPath(), args: ["--no-sandbox"] });
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
}, 180_000);

afterAll(async () => {
  await browser?.close();
  await teardown({ extra: [], system, nc, nats, dataDir });
});

describe("dashboard in Chromium", () => {
  it("[views] a rollout's progress reaches 100 % on the page without a reload; the failed task's page shows its error and step; the host page lists its history", async () => {
    await signIn(OPERATOR);
    const id = await op.deploy({ version: "2.0.0", hosts: HOSTS, strategy: { maxUnavailable: { percent: 25 } } }, "dash-1");
    await page.goto(`${system.gatewayUrl}/#/deployments/${id}`);
    await page.waitForSelector(`[data-deployment-id="${id}"][data-progress]`);
    // A marker on the window: a reload would drop it.
    await page.evaluate("window.moltNoReload = true");
    const seen = new Set<number>();
    await waitFor("progress 100 on the page", async () => {
      const p = Number(await page.getAttribute(`[data-deployment-id="${id}"]`, "data-progress"));
      seen.add(p);
      return p === 100 ? true : undefined;
    }, { timeoutMs: 60_000, intervalMs: 50 });
    expect(await page.evaluate("window.moltNoReload === true")).toBe(true);
    // It moved on the page: values between 0 and 100 were shown before the end.
    expect([...seen].some((p) => p > 0 && p < 100), `progress values seen: ${[...seen].join(", ")}`).toBe(true);
    await page.waitForSelector(`[data-deployment-id="${id}"][data-state="completed"]`, { timeout: 30_000 });
    const root = `[data-deployment-id="${id}"]`;
    expect(await page.getAttribute(root, "data-total")).toBe(String(HOSTS.length));
    expect(await page.getAttribute(root, "data-failed")).toBe("1");
    expect(await page.getAttribute('[data-count-state="succeeded"]', "data-count")).toBe(String(HOSTS.length - 1));
    expect(await page.getAttribute('[data-failure-step="download"]', "data-failure-count")).toBe("1");
    // A bar per batch, every one done and full, together the 12 hosts with the one failure.
    const total = Number(await page.getAttribute("[data-batches-total]", "data-batches-total"));
    expect(await page.locator("li[data-batch]").count()).toBe(total);
    const batches: number[][] = [];
    for (let i = 0; i < total; i++) {
      const li = `li[data-batch="${i}"]`;
      expect(await page.getAttribute(li, "data-batch-state")).toBe("done");
      batches.push(await Promise.all(["size", "finished", "succeeded", "failed"].map(async (k) => Number(await page.getAttribute(li, `data-batch-${k}`)))));
    }
    for (const [size, finished] of batches) expect(finished).toBe(size);
    const sum = (k: number) => batches.reduce((n, b) => n + b[k]!, 0);
    expect([sum(0), sum(2), sum(3)]).toEqual([HOSTS.length, HOSTS.length - 1, 1]);
    // The numbers on the page are the events' numbers.
    const done = await history(store).waitFor(id, "DeploymentCompleted");
    expect(done.e.type === "DeploymentCompleted" && done.e.data).toMatchObject({ succeeded: HOSTS.length - 1, failed: 1 });
    expect(await page.locator("[data-action]").count()).toBeGreaterThan(0);
    await shot("deployment");

    // The failed task: its page shows the error and the step it stopped at.
    await page.click(`tr[data-host-id="${FAILING}"][data-state="failed"] a[href*="/tasks/"]`);
    await page.waitForSelector('[data-task-id][data-state="failed"]');
    expect(await page.getAttribute("[data-task-id][data-state]", "data-step")).toBe("download");
    expect(await page.textContent('[data-testid="task-error"]')).toContain("injected: mirror down");
    expect(await page.getAttribute('tr[data-step="download"]', "data-state")).toBe("failed");
    await shot("task-failed");

    // The host page: its history lists the task, failed.
    await page.goto(`${system.gatewayUrl}/#/hosts/${FAILING}`);
    await page.waitForSelector('[data-testid="history"] tr[data-outcome="failed"]');
    expect(Number(await page.getAttribute(`[data-host-id="${FAILING}"][data-history-count]`, "data-history-count"))).toBeGreaterThanOrEqual(1);
    await shot("host");

    // The fleet page: the version chart counts the hosts per version.
    await page.goto(`${system.gatewayUrl}/#/fleet`);
    await waitFor("fleet chart shows 2.0.0 on 11 hosts", async () =>
      (await page.getAttribute(`[data-component="${COMPONENT}"] [data-label="2.0.0"]`, "data-value").catch(() => null)) === String(HOSTS.length - 1) ? true : undefined,
    { timeoutMs: 20_000 });
    await shot("fleet");
  }, 150_000);

  it("[views] a viewer sees the deployment but no operator actions", async () => {
    await signIn(VIEWER);
    await page.goto(`${system.gatewayUrl}/#/`);
    await page.waitForSelector("tr[data-deployment-id]");
    await page.click("tr[data-deployment-id] a");
    await page.waitForSelector("[data-deployment-id][data-progress]");
    expect(await page.locator('[data-testid="actions"]').count()).toBe(0);
    expect(await page.getAttribute("[data-role]", "data-role")).toBe("viewer");
    await shot("viewer");
  }, 60_000);
});
