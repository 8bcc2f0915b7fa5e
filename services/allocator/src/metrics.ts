import type { StoredCommit } from "@molt/event-store";
import { TASK_END_OUTCOME } from "@molt/runtime";
import { Counter, Gauge, type Registry } from "prom-client";

/**
 * The allocator's metrics, counted from the commits this replica's engine has handled: tasks it
 * dispatched, tasks it saw end (by outcome), and the difference, its tasks in flight. With several
 * replicas each counts its share of the queue; sum them in a query.
 */
export function allocatorMetrics(registry: Registry) {
  const dispatched = new Counter({ name: "molt_allocator_tasks_dispatched_total", help: "Tasks this replica dispatched (desired state written)", registers: [registry] });
  const finished = new Counter({
    name: "molt_allocator_tasks_finished_total",
    help: "Task ends this replica handled, by outcome",
    labelNames: ["outcome"] as const,
    registers: [registry],
  });
  const inFlight = new Gauge({ name: "molt_allocator_tasks_in_flight", help: "Tasks dispatched and not yet ended, as this replica handled them", registers: [registry] });
  return {
    /** After the engine handled a commit (so a retried one counts once, when it went through). */
    handled(c: StoredCommit): void {
      for (const e of c.commit.events) {
        if (e.type === "TaskAllocated") {
          dispatched.inc();
          inFlight.inc();
          continue;
        }
        const outcome = TASK_END_OUTCOME[e.type];
        if (outcome === undefined) continue;
        finished.inc({ outcome });
        inFlight.dec();
      }
    },
  };
}
