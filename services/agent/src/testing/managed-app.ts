/**
 * A real managed component for the agent's tests: a long-running node HTTP server that answers
 * its version (read from its own files) on /version and its health on /health, writes its pid
 * file (unless MODE says "no-pid"), and ends on SIGTERM. MODE makes a version crash on start or
 * turn unhealthy shortly after starting; a file `sick` in the component's shared dir makes any
 * version unhealthy (a test breaks a version that was healthy when it was installed).
 */
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { ComponentConfig } from "../agent/components.js";
import type { ComponentPaths } from "../host/layout.js";
import { buildPackage, type BuiltPackage } from "./fixtures.js";

export const APP_SERVER = `
import { createServer } from "node:http";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
const here = (f) => readFileSync(new URL(f, import.meta.url), "utf8").trim();
const version = here("./VERSION");
const mode = here("./MODE");
if (mode === "crash") process.exit(3);
const born = Date.now();
if (mode !== "no-pid") writeFileSync(process.env.MOLT_COMPONENT_DIR + "/app.pid", String(process.pid));
createServer((req, res) => {
  if (req.url === "/health") {
    const sick = (mode === "sick" && Date.now() - born > 250) || existsSync(process.env.MOLT_SHARED_DIR + "/sick");
    res.writeHead(sick ? 500 : 200).end(sick ? "sick" : "ok");
  } else if (req.url === "/version") res.end(JSON.stringify({ version }));
  else res.writeHead(404).end();
}).listen(Number(process.argv[2]), "127.0.0.1");
process.on("SIGTERM", () => process.exit(0));
`;

export type AppMode = "ok" | "crash" | "sick" | "no-pid";

/** The app's package for `version`, behaving as `mode` says. */
export function buildAppPackage(version: string, mode: AppMode): Promise<BuiltPackage> {
  return buildPackage({ VERSION: `${version}\n`, MODE: `${mode}\n`, "server.mjs": APP_SERVER });
}

/** The app as a managed component on `port`: started from `current`, pid file, health and version URLs. */
export function appConfig(name: string, port: number, over: Partial<ComponentConfig> = {}): ComponentConfig {
  return {
    name,
    kind: "managed",
    start: { command: `exec "${process.execPath}" server.mjs ${port}` },
    stop: { graceMs: 2_000 },
    pidFile: "app.pid",
    health: {
      url: `http://127.0.0.1:${port}/health`,
      versionUrl: `http://127.0.0.1:${port}/version`,
      watchMs: 600,
      intervalMs: 50,
      startTimeoutMs: 5_000,
      probeTimeoutMs: 1_000,
      heartbeatStaleMs: 15_000,
    },
    ...over,
  };
}

/** The version the app on `port` answers, or null when nothing answers. */
export async function appAnswers(port: number): Promise<string | null> {
  try {
    return ((await (await fetch(`http://127.0.0.1:${port}/version`)).json()) as { version: string }).version;
  } catch {
    return null;
  }
}

/** The pid the running app wrote. */
export async function appPid(paths: ComponentPaths): Promise<number> {
  return Number((await readFile(join(paths.dir, "app.pid"), "utf8")).trim());
}

/** Makes every version of the app on this host answer 500 on /health (or healthy again). */
export async function setAppSick(paths: ComponentPaths, sick: boolean): Promise<void> {
  const flag = join(paths.shared, "sick");
  if (sick) {
    await mkdir(paths.shared, { recursive: true });
    await writeFile(flag, "");
  } else await rm(flag, { force: true });
}
