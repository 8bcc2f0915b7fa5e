import type { MoltEvent } from "@molt/contracts";
import type { Queryable } from "@molt/db";
import type { Projection } from "../projection/projection.js";

/** Append-only: add statements, never edit one that has shipped. */
const MIGRATIONS = [
  `CREATE TABLE fleet_hosts (
    host_id text PRIMARY KEY,
    os text NOT NULL,
    arch text NOT NULL,
    platform text NOT NULL,
    labels jsonb NOT NULL,
    cluster text,
    registered_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
  );
  CREATE INDEX fleet_hosts_labels ON fleet_hosts USING gin (labels jsonb_path_ops);
  CREATE INDEX fleet_hosts_cluster ON fleet_hosts (cluster, host_id);
  CREATE INDEX fleet_hosts_platform ON fleet_hosts (platform, host_id);
  CREATE TABLE fleet_components (
    host_id text NOT NULL,
    component text NOT NULL,
    -- null: the host reported the component as not installed
    version text,
    observed_at timestamptz NOT NULL,
    PRIMARY KEY (host_id, component)
  );
  CREATE INDEX fleet_components_by_version ON fleet_components (component, version)`,
];

/**
 * The fleet as the hosts describe themselves (their meta events: registered, labels changed,
 * component version observed): labels, cluster, platform and what each host runs. Whether a host
 * is online is not an event; the routes take it from presence.
 */
export function fleetProjection(): Projection {
  return {
    name: "fleet",
    migrations: MIGRATIONS,
    async apply(tx, c) {
      if (c.hostId === null || c.component !== null) return;
      for (const event of c.commit.events) await applyHostEvent(tx, event);
    },
  };
}

async function applyHostEvent(tx: Queryable, event: MoltEvent): Promise<void> {
  const at = event.metadata.occurredAt;
  switch (event.type) {
    case "HostRegistered": {
      const d = event.data;
      await tx.query(
        `INSERT INTO fleet_hosts (host_id, os, arch, platform, labels, cluster, registered_at, updated_at)
         VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7::timestamptz, $7::timestamptz)
         ON CONFLICT (host_id) DO UPDATE SET os = EXCLUDED.os, arch = EXCLUDED.arch, platform = EXCLUDED.platform,
           labels = EXCLUDED.labels, cluster = EXCLUDED.cluster, updated_at = EXCLUDED.updated_at`,
        [d.hostId, d.os, d.arch, d.platform, JSON.stringify(d.labels), d.labels.cluster ?? null, at],
      );
      return;
    }
    case "HostLabelsChanged":
      await tx.query(`UPDATE fleet_hosts SET labels = $2::jsonb, cluster = $3, updated_at = $4::timestamptz WHERE host_id = $1`, [
        event.data.hostId,
        JSON.stringify(event.data.labels),
        event.data.labels.cluster ?? null,
        at,
      ]);
      return;
    case "ComponentVersionObserved":
      await tx.query(
        `INSERT INTO fleet_components (host_id, component, version, observed_at) VALUES ($1, $2, $3, $4::timestamptz)
         ON CONFLICT (host_id, component) DO UPDATE SET version = EXCLUDED.version, observed_at = EXCLUDED.observed_at`,
        [event.data.hostId, event.data.component, event.data.version, at],
      );
      return;
    default:
      // Only host meta events sit on a host's meta subject.
      return;
  }
}
