import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import { TASK_STATES } from "@molt/contracts";
import type { Db } from "@molt/db";
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
  const steps = new Histogram({
    name: "molt_task_step_duration_seconds",
    help: "Upgrade step durations as hosts reported them",
    labelNames: ["step", "outcome"] as const,
    buckets: [0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900],
    registers: [registry],
  });
  const finished = new Counter({
    name: "molt_tasks_finished_total",
    help: "Tasks that reached an end, by outcome",
    labelNames: ["outcome"] as const,
    registers: [registry],
  });
  runner.onApplied((c) => {
    for (const e of c.commit.events) {
      switch (e.type) {
        case "TaskStepSucceeded":
          steps.observe({ step: e.data.step, outcome: "succeeded" }, e.data.durationMs / 1000);
          break;
        case "TaskStepFailed":
          steps.observe({ step: e.data.step, outcome: "failed" }, e.data.durationMs / 1000);
          break;
        case "TaskSucceeded":
          finished.inc({ outcome: "succeeded" });
          break;
        case "TaskFailed":
          finished.inc({ outcome: "failed" });
          break;
        case "TaskRejected":
          finished.inc({ outcome: "rejected" });
          break;
        case "TaskTimedOut":
          finished.inc({ outcome: "timed-out" });
          break;
        case "TaskCancelled":
          finished.inc({ outcome: "cancelled" });
          break;
        default:
          break;
      }
    }
  });
}
