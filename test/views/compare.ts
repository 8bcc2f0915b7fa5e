import type { EventStore } from "@molt/event-store";
import { waitFor } from "@molt/testkit";
import { expect } from "vitest";
import type { operatorApi } from "../roll-engine/harness.js";

/**
 * The projector's views read through the gateway with an admin token, to compare live views with
 * views rebuilt from the start (`POST /v1/projector/rebuild`).
 */
export function projectorViews(admin: ReturnType<typeof operatorApi>, fleet: readonly string[], store: () => EventStore) {
  /**
   * Waits until the hosts have reported the versions a rollout left them at (the last events it
   * causes: the stream is quiet from then on) and the views hold every commit of the stream.
   */
  async function settled(version: string, hosts: number, timeoutMs = 30_000): Promise<void> {
    await waitFor(`${hosts} hosts at ${version} in the views, and no lag`, async () => {
      const v = await admin.api<{ components: Array<{ versions: Array<{ version: string; hosts: number }> }> }>("GET", "/v1/fleet/versions");
      const at = v.body.components?.[0]?.versions.find((x) => x.version === version)?.hosts;
      const s = await admin.api<{ checkpoint: number; streamLastSeq: number }>("GET", "/v1/projector/status");
      return at === hosts && s.body.checkpoint >= s.body.streamLastSeq ? true : undefined;
    }, { timeoutMs });
  }

  /** Everything the views answer about the fleet and its deployments, through the gateway (presence, a clock reading, left out). */
  async function views() {
    const get = async (path: string) => {
      const r = await admin.api<unknown>("GET", path);
      expect(r.status, `${path}: ${JSON.stringify(r.body)}`).toBe(200);
      return r.body;
    };
    const list = (await get("/v1/deployments?limit=1000")) as { deployments: Array<{ deployment: { id: string } }> };
    const deployments: Record<string, unknown> = {};
    for (const { deployment } of list.deployments)
      deployments[deployment.id] = { view: await get(`/v1/deployments/${deployment.id}`), tasks: await get(`/v1/deployments/${deployment.id}/tasks?allAttempts=true&limit=1000`) };
    const hosts = ((await get("/v1/hosts?limit=1000")) as { hosts: Array<Record<string, unknown>> }).hosts.map(({ online: _o, lastSeenAt: _l, ...h }) => h);
    const timelines: Record<string, unknown> = {};
    for (const h of fleet) timelines[h] = await get(`/v1/hosts/${h}/timeline?limit=10000`);
    // The checkpoint too: two snapshots are of the same stream only if it did not move between them.
    const { checkpoint } = (await get("/v1/projector/status")) as { checkpoint: number };
    return { checkpoint, list, deployments, hosts, versions: await get("/v1/fleet/versions"), timelines, deadLetters: await get("/v1/projector/dead-letters") };
  }

  async function rebuild(): Promise<void> {
    const r = await admin.api<{ checkpoint: number }>("POST", "/v1/projector/rebuild");
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.checkpoint).toBeGreaterThanOrEqual(await store().lastSequence());
  }
  return { settled, views, rebuild };
}
