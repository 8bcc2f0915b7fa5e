import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { tempDir } from "../testing/fixtures.js";
import { ComponentConfig, loadAgentConfigFile } from "./components.js";
import { AgentEnv } from "./config.js";

describe("the agent's configuration file", () => {
  it("[upgrade-client] the example in infra/agent/ is valid", async () => {
    const example = fileURLToPath(new URL("../../../../infra/agent/agent.example.json", import.meta.url));
    const config = await loadAgentConfigFile(example);
    expect(config.components.map((c) => [c.name, c.kind])).toEqual([
      ["metrics-agent", "managed"],
      ["nginx", "third-party"],
      ["geoip-db", "third-party"],
    ]);
    // Defaults are filled in, in milliseconds.
    expect(config.components[2]).toEqual({ name: "geoip-db", kind: "third-party", root: "/opt/geoip" });
    expect(config.components[1]?.stop?.graceMs).toBe(15_000);
  });

  it("[upgrade-client] a bad file is refused at start with one clear line per bad field", async () => {
    const dir = await tempDir("config");
    const path = join(dir, "agent.json");
    await writeFile(
      path,
      JSON.stringify({
        hostId: "bad host",
        root: "/var/lib/molt",
        nats: { urls: ["http://nats:4222"] },
        trustedKeys: [{ publicKey: "not-a-key" }],
        components: [
          { name: "App", kind: "managed" },
          { name: "db", kind: "daemon" },
          { name: "web", kind: "managed", start: { command: "x", systemdUnit: "web.service" }, health: { watchMs: -1 } },
        ],
        extra: true,
      }),
    );
    const err = await loadAgentConfigFile(path).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    const lines = err?.message.split("\n") ?? [];
    expect(lines[0]).toBe(`agent config ${path} is invalid:`);
    for (const field of ["hostId", "nats.urls.0", "components.0.name", "components.0.start", "components.1.kind", "components.2.start", "components.2.health.watchMs", "components.2.health", "(file)"])
      expect(lines.some((l) => l.startsWith(`  ${field}: `)), `a line for ${field} in:\n${err?.message}`).toBe(true);
    // Keys are checked too, once the shape is right.
    await writeFile(path, JSON.stringify({ hostId: "h1", root: "/r", nats: { urls: ["nats://n:4222"] }, trustedKeys: [{ publicKey: "not-a-key" }], components: [] }));
    await expect(loadAgentConfigFile(path)).rejects.toThrow(/trustedKeys: trusted key 0: a public key must be PEM or 32 bytes/);
  });

  it("[scale-faults] packageMirror / MOLT_PACKAGE_MIRROR: one mirror URL or several, kept in order; a bad URL is refused", async () => {
    const path = join(await tempDir("cfg"), "mirrors.json");
    const base = { hostId: "h1", root: "/r", nats: { urls: ["nats://n:4222"] }, components: [] };
    await writeFile(path, JSON.stringify({ ...base, packageMirror: ["http://m1:81", "https://m2.example.com/molt"] }));
    expect((await loadAgentConfigFile(path)).packageMirror).toBe("http://m1:81,https://m2.example.com/molt");
    await writeFile(path, JSON.stringify({ ...base, packageMirror: "http://m1:81" }));
    expect((await loadAgentConfigFile(path)).packageMirror).toBe("http://m1:81");
    await writeFile(path, JSON.stringify({ ...base, packageMirror: ["http://m1:81", "not a url"] }));
    await expect(loadAgentConfigFile(path)).rejects.toThrow(/packageMirror/);
    const host = { MOLT_ROOT: "/r", MOLT_HOST_ID: "h1" };
    expect(AgentEnv.parse({ ...host, MOLT_PACKAGE_MIRROR: "http://m1:81, http://m2:81" }).MOLT_PACKAGE_MIRROR).toBe("http://m1:81,http://m2:81");
    expect(AgentEnv.parse(host).MOLT_PACKAGE_MIRROR).toBeUndefined();
    expect(AgentEnv.safeParse({ ...host, MOLT_PACKAGE_MIRROR: "http://m1:81,nope" }).success).toBe(false);
  });

  describe("components run by a systemd unit (no systemd here: the unit path is proven by its config rules)", () => {
    const problems = (c: unknown) => {
      const r = ComponentConfig.safeParse(c);
      return r.success ? [] : r.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`);
    };
    const health = { url: "http://127.0.0.1:8080/health" };

    it("[upgrade-client] a unit that starts and stops the component, with a health check or a process to find, is taken", () => {
      expect(problems({ name: "web", kind: "managed", start: { systemdUnit: "web.service" }, stop: { systemdUnit: "web.service" }, health })).toEqual([]);
      expect(problems({ name: "web", kind: "managed", start: { systemdUnit: "web@1.service" }, stop: { systemdUnit: "web@1.service" }, processMatch: "^web " })).toEqual([]);
      expect(problems({ name: "web", kind: "third-party", start: { systemdUnit: "web.service" }, stop: { command: "systemctl kill -s HUP web.service" }, pidFile: "/run/web.pid" })).toEqual([]);
    });

    it("[upgrade-client] a unit name is never something the shell would interpret (the client runs systemctl through /bin/sh)", () => {
      for (const unit of ["web.service; reboot", "$(reboot).service", "web", "web.timer", "`id`.service", "a b.service", "web.service\nreboot"])
        expect(problems({ name: "web", kind: "managed", start: { systemdUnit: unit }, stop: { systemdUnit: "web.service" }, health }), unit).toContain(
          "start.systemdUnit: must be a systemd unit name ending in .service or .scope",
        );
    });

    it("[upgrade-client] a component started by a unit must be stopped through it too, and the unit must not stop what a command started", () => {
      expect(problems({ name: "web", kind: "managed", start: { systemdUnit: "web.service" }, health })).toContain(
        "stop: a component started by systemd unit web.service is stopped through it too: give stop.systemdUnit (or stop.command)",
      );
      expect(problems({ name: "web", kind: "managed", start: { systemdUnit: "web.service" }, stop: { graceMs: 1000 }, health })).toContain(
        "stop: a component started by systemd unit web.service is stopped through it too: give stop.systemdUnit (or stop.command)",
      );
      expect(problems({ name: "web", kind: "managed", start: { command: "exec ./web" }, stop: { systemdUnit: "web.service" }, health })).toContain(
        "stop.systemdUnit: only for a component started by a systemd unit (start.systemdUnit)",
      );
    });

    it("[upgrade-client] VERIFY must have something to check for a unit: a health check, a pid file or a process match", () => {
      expect(problems({ name: "web", kind: "managed", start: { systemdUnit: "web.service" }, stop: { systemdUnit: "web.service" } })).toContain(
        "health: a component started by systemd unit web.service needs health, pidFile or processMatch, or VERIFY could not tell that the new version runs",
      );
    });
  });
});
