import { z } from "zod";
import { ComponentName, HostId, Platform, Version, type FleetVersions, type HostList, type HostView } from "@molt/contracts";
import type { Db } from "@molt/db";
import { HttpError, type App } from "@molt/runtime";
import type { Presence } from "./presence.js";

interface HostRow {
  host_id: string;
  os: string;
  arch: string;
  platform: string;
  labels: Record<string, string>;
  cluster: string | null;
  registered_at: Date;
  components: Record<string, string | null> | null;
}

/** `key=value`, as operators write label selectors. */
const LabelFilter = z.string().regex(/^[a-z0-9_./-]{1,63}=.{0,253}$/, "label must be key=value");
const one = <T extends z.ZodType>(t: T) => z.union([t, z.array(t)]).transform((v) => (Array.isArray(v) ? v : [v]) as Array<z.infer<T>>);

const HostQuery = z
  .object({
    label: one(LabelFilter).optional(),
    cluster: z.string().min(1).max(253).optional(),
    platform: Platform.optional(),
    component: ComponentName.optional(),
    /** With `component`: hosts running this version; `none` for hosts without the component. */
    version: z.union([Version, z.literal("none")]).optional(),
    online: z.enum(["true", "false"]).optional(),
    /** Cursor: the last host id of the previous page. */
    after: HostId.optional(),
    limit: z.coerce.number().int().min(1).max(1000).default(100),
  })
  .refine((q) => q.version === undefined || q.component !== undefined, { message: "version needs component", path: ["version"] });

const HOST_SELECT = `
  SELECT h.host_id, h.os, h.arch, h.platform, h.labels, h.cluster, h.registered_at,
    (SELECT jsonb_object_agg(c.component, c.version) FROM fleet_components c WHERE c.host_id = h.host_id) AS components
  FROM fleet_hosts h`;

export function fleetRoutes(app: App, deps: { db: Db; presence: Presence | null; now?: () => Date }): void {
  const { db, presence } = deps;
  const now = deps.now ?? (() => new Date());

  const view = (r: HostRow, at: Date): HostView => {
    const seen = presence?.lastSeen(r.host_id);
    return {
      hostId: r.host_id,
      os: r.os,
      arch: r.arch,
      platform: r.platform,
      labels: r.labels,
      cluster: r.cluster,
      components: r.components ?? {},
      registeredAt: r.registered_at.toISOString(),
      lastSeenAt: seen?.toISOString() ?? null,
      online: presence?.isOnline(r.host_id, at) ?? false,
    };
  };

  app.get("/v1/hosts", { schema: { querystring: HostQuery } }, async (req): Promise<HostList> => {
    const q = req.query;
    const where: string[] = [];
    const params: unknown[] = [];
    const param = (v: unknown) => `$${params.push(v)}`;
    for (const l of q.label ?? []) {
      const eq = l.indexOf("=");
      where.push(`h.labels @> ${param(JSON.stringify({ [l.slice(0, eq)]: l.slice(eq + 1) }))}::jsonb`);
    }
    if (q.cluster !== undefined) where.push(`h.cluster = ${param(q.cluster)}`);
    if (q.platform !== undefined) where.push(`h.platform = ${param(q.platform)}`);
    if (q.component !== undefined) {
      const c = param(q.component);
      if (q.version === "none")
        where.push(`NOT EXISTS (SELECT 1 FROM fleet_components c WHERE c.host_id = h.host_id AND c.component = ${c} AND c.version IS NOT NULL)`);
      else if (q.version !== undefined)
        where.push(`EXISTS (SELECT 1 FROM fleet_components c WHERE c.host_id = h.host_id AND c.component = ${c} AND c.version = ${param(q.version)})`);
      else where.push(`EXISTS (SELECT 1 FROM fleet_components c WHERE c.host_id = h.host_id AND c.component = ${c})`);
    }
    const at = now();
    if (q.online !== undefined) {
      const online = param(presence?.onlineHosts(at) ?? []);
      where.push(q.online === "true" ? `h.host_id = ANY(${online}::text[])` : `NOT (h.host_id = ANY(${online}::text[]))`);
    }
    if (q.after !== undefined) where.push(`h.host_id > ${param(q.after)}`);
    const sql = `${HOST_SELECT} ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY h.host_id LIMIT ${param(q.limit + 1)}`;
    const rows = (await db.query<HostRow>(sql, params)).rows;
    const page = rows.slice(0, q.limit);
    return { hosts: page.map((r) => view(r, at)), next: rows.length > q.limit ? (page.at(-1)?.host_id ?? null) : null };
  });

  app.get("/v1/hosts/:hostId", { schema: { params: z.object({ hostId: HostId }) } }, async (req): Promise<HostView> => {
    const r = await db.query<HostRow>(`${HOST_SELECT} WHERE h.host_id = $1`, [req.params.hostId]);
    const row = r.rows[0];
    if (!row) throw new HttpError(404, "not_found", `host ${req.params.hostId} has never reported`);
    return view(row, now());
  });

  app.get(
    "/v1/fleet/versions",
    { schema: { querystring: z.object({ component: ComponentName.optional() }) } },
    async (req): Promise<FleetVersions> => {
      const { component } = req.query;
      const r = await db.query<{ component: string; version: string | null; hosts: number }>(
        `SELECT component, version, count(*)::int AS hosts FROM fleet_components
         ${component !== undefined ? "WHERE component = $1" : ""}
         GROUP BY component, version ORDER BY component, hosts DESC, version NULLS LAST`,
        component !== undefined ? [component] : [],
      );
      const by = new Map<string, FleetVersions["components"][number]>();
      for (const row of r.rows) {
        const entry = by.get(row.component) ?? { component: row.component, total: 0, versions: [] };
        entry.total += row.hosts;
        entry.versions.push({ version: row.version, hosts: row.hosts });
        by.set(row.component, entry);
      }
      if (component !== undefined && by.size === 0) throw new HttpError(404, "not_found", `no host has reported component ${component}`);
      return { components: [...by.values()] };
    },
  );
}
