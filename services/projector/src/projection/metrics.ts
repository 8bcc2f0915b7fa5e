import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import { TASK_STATES } from "@molt/contracts";
import type { Db } from "@molt/db";
import { stepDurations, TASK_END_OUTCOME } from "@molt/runtime";
import type { Presence } from "../fleet/presence.js";
import type { ProjectionRunner } from "./runner.js";

/**
 * The projector's metrics. Gauges are read from the views at scrape time, so they are right after
 * a restart or a rebuild; the step histogram and the outcome counter grow as commits are applied
 * (from the checkpoint on after a restart: Prometheus reads a counter that starts again as a reset).
 */
export function projectorMetrics(registry: Registry, deps: { db: Db; runner: ProjectionRunner; presence: Presence | null }): void {
  const { db, runner } = deps;
  new Gauge({
    name: "molt_projection_lag_events",
    help: "Events in MOLT_EVENTS not yet in the views",
    registers: [registry],
    async collect() {
      this.set((await runner.status()).lag);
    },
  });
  /** When the newest commit in the views was decided (its last event's occurredAt), as epoch ms. */
  let newestApplied: number | null = null;
  new Gauge({
    name: "molt_projection_lag_seconds",
    help: "While events wait: seconds since the newest commit in the views was decided (0 when caught up)",
    registers: [registry],
    async collect() {
      const { lag } = await runner.status();
      this.set(lag > 0 && newestApplied !== null ? Math.max(0, (Date.now() - newestApplied) / 1000) : 0);
    },
  });
  const delay = new Histogram({
    name: "molt_projection_delay_seconds",
    help: "From a commit's decision (occurredAt) to its being visible in the views",
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [registry],
  });
  new Gauge({
    name: "molt_projection_dead_letters",
    help: "Commits the projector gave up on (kept in dead_letters)",
    registers: [registry],
    async collect() {
      this.set((await runner.status()).deadLetters);
    },
  });
  new Gauge({
    name: "molt_tasks",
    help: "Tasks by state, each host's latest attempt per deployment",
    labelNames: ["state"] as const,
    registers: [registry],
    async collect() {
      const r = await db.query<{ state: string; n: number }>(
        `SELECT state, count(*)::int AS n FROM (
           SELECT DISTINCT ON (deployment_id, host_id) state FROM tasks ORDER BY deployment_id, host_id, attempt DESC
         ) latest GROUP BY state`,
      );
      const by = new Map(r.rows.map((row) => [row.state, row.n]));
      for (const state of TASK_STATES) this.set({ state }, by.get(state) ?? 0);
    },
  });
  new Gauge({
    name: "molt_deployments",
    help: "Deployments by state",
    labelNames: ["state"] as const,
    registers: [registry],
    async collect() {
      const r = await db.query<{ state: string; n: number }>("SELECT state, count(*)::int AS n FROM deployments GROUP BY state");
      this.reset();
      for (const row of r.rows) this.set({ state: row.state }, row.n);
    },
  });
  new Gauge({
    name: "molt_hosts",
    help: "Hosts that have reported, by presence",
    labelNames: ["online"] as const,
    registers: [registry],
    async collect() {
      const r = await db.query<{ n: number }>("SELECT count(*)::int AS n FROM fleet_hosts");
      const total = r.rows[0]?.n ?? 0;
      const online = deps.presence?.onlineHosts(new Date()).length ?? 0;
      this.set({ online: "true" }, online);
      this.set({ online: "false" }, Math.max(0, total - online));
    },
  });
  const steps = stepDurations(registry, "molt_task_step_duration_seconds", "Upgrade step durations as hosts reported them");
  const finished = new Counter({
    name: "molt_tasks_finished_total",
    help: "Tasks that reached an end, by outcome",
    labelNames: ["outcome"] as const,
    registers: [registry],
  });
  runner.onApplied((c) => {
    const decided = Date.parse(c.commit.events.at(-1)!.metadata.occurredAt);
    newestApplied = decided;
    delay.observe(Math.max(0, Date.now() - decided) / 1000);
    for (const e of c.commit.events) {
      switch (e.type) {
        case "TaskStepSucceeded":
          steps.observe({ step: e.data.step, outcome: "succeeded" }, e.data.durationMs / 1000);
          break;
        case "TaskStepFailed":
          steps.observe({ step: e.data.step, outcome: "failed" }, e.data.durationMs / 1000);
          break;
        default: {
          const outcome = TASK_END_OUTCOME[e.type];
          if (outcome !== undefined) finished.inc({ outcome });
          break;
        }
      }
    }
  });
}
