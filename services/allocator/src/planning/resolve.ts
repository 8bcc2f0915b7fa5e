import { HostState, subjects, type PackageRef } from "@molt/contracts";
import type { EventStore } from "@molt/event-store";

/** Host meta commits carry the host's state, so each host costs one direct get. */
export async function loadHostStates(store: EventStore, hosts: readonly string[]): Promise<Map<string, HostState | null>> {
  const out = new Map<string, HostState | null>();
  const queue = [...hosts];
  const worker = async () => {
    for (let h = queue.shift(); h !== undefined; h = queue.shift()) {
      const last = await store.readLast(subjects.hostMeta(h));
      out.set(h, last ? HostState.parse(last.commit.state) : null);
    }
  };
  await Promise.all(Array.from({ length: Math.min(32, hosts.length) }, worker));
  return out;
}

/** The published, not yanked, variants of one component version, by platform. */
export async function loadPackages(
  store: EventStore,
  component: string,
  version: string,
  downloadUrl: (platform: string) => string,
): Promise<Map<string, PackageRef>> {
  const out = new Map<string, PackageRef>();
  for (const c of await store.read(subjects.package(component))) {
    for (const e of c.commit.events) {
      if (e.type === "PackagePublished" && e.data.version === version)
        out.set(e.data.platform, { platform: e.data.platform, sha256: e.data.sha256, size: e.data.size, url: downloadUrl(e.data.platform) });
      if (e.type === "PackageYanked" && e.data.version === version) {
        if (e.data.platform) out.delete(e.data.platform);
        else out.clear();
      }
    }
  }
  return out;
}
