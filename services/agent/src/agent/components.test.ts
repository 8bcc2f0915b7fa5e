import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { tempDir } from "../testing/fixtures.js";
import { loadAgentConfigFile } from "./components.js";

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
    expect(config.components[2]).toEqual({ name: "geoip-db", kind: "third-party" });
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
});
