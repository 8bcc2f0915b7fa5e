import { useEffect, useMemo, useState } from "preact/hooks";
import { Link } from "wouter-preact";
import { HostView, TimelineEvent } from "@molt/contracts/views";
import { z } from "zod";
import { get } from "../api.js";
import { Card, ErrorLine, Head } from "../components.js";
import { time } from "../format.js";
import { follow } from "../live.js";

const Commit = z.object({ streamSeq: z.number(), events: z.array(TimelineEvent) });

/** Outcome of a task as its last event names it. */
const OUTCOMES: Record<string, string> = {
  TaskSucceeded: "succeeded",
  TaskFailed: "failed",
  TaskRejected: "rejected",
  TaskTimedOut: "timed-out",
  TaskCancelled: "cancelled",
};

interface TaskHistory {
  taskId: string;
  component: string | null;
  first: string;
  last: string;
  outcome: string;
  events: TimelineEvent[];
}

/** A host: what it is and runs, and its whole upgrade history replayed from its timeline, live. */
export function HostPage(props: { id: string }) {
  const [host, setHost] = useState<HostView | null>(null);
  const [events, setEvents] = useState<TimelineEvent[]>([]);
  const [error, setError] = useState<Error | null>(null);

  useEffect(() => {
    setHost(null);
    setEvents([]);
    get(`/v1/hosts/${encodeURIComponent(props.id)}`, HostView).then(setHost, setError);
    // The stream replays the host's timeline from the start, then follows it.
    return follow(`/v1/hosts/${encodeURIComponent(props.id)}/events`, {
      onMessage(event, data) {
        if (event !== "commit") return;
        const c = Commit.parse(data);
        setEvents((prev) => (prev.length > 0 && prev[prev.length - 1]!.streamSeq >= c.streamSeq ? prev : [...prev, ...c.events]));
      },
      onError: setError,
    });
  }, [props.id]);

  const history = useMemo(() => {
    const byTask = new Map<string, TaskHistory>();
    for (const e of events) {
      if (!e.taskId) continue;
      const h = byTask.get(e.taskId) ?? { taskId: e.taskId, component: e.component, first: e.occurredAt, last: e.occurredAt, outcome: "running", events: [] };
      h.events.push(e);
      h.last = e.occurredAt;
      h.outcome = OUTCOMES[e.type] ?? h.outcome;
      byTask.set(e.taskId, h);
    }
    return [...byTask.values()].reverse();
  }, [events]);

  return (
    <div data-host-id={props.id} data-history-count={history.length}>
      <Card title={`Host ${props.id}`}>
        <ErrorLine error={error} />
        {host ? (
          <dl class="facts">
            <dt>Platform</dt>
            <dd>{host.platform}</dd>
            <dt>Cluster</dt>
            <dd>{host.cluster ?? "–"}</dd>
            <dt>Labels</dt>
            <dd>
              {Object.entries(host.labels)
                .map(([k, v]) => `${k}=${v}`)
                .join(", ") || "–"}
            </dd>
            <dt>Online</dt>
            <dd data-online={String(host.online)}>
              {host.online ? "yes" : "no"} (last seen {time(host.lastSeenAt)})
            </dd>
            <dt>Components</dt>
            <dd>
              {Object.entries(host.components)
                .map(([c, v]) => `${c} ${v ?? "not installed"}`)
                .join(", ") || "–"}
            </dd>
          </dl>
        ) : null}
      </Card>
      <Card title="Upgrade history">
        {history.length === 0 ? (
          <p class="empty">No tasks yet.</p>
        ) : (
          <table class="list" data-testid="history">
            <Head columns={["Task", "Component", "Outcome", "Started", "Last event", "Steps"]} />
            <tbody>
              {history.map((h) => (
                <tr key={h.taskId} data-task-id={h.taskId} data-outcome={h.outcome}>
                  <td>
                    <Link href={`/tasks/${encodeURIComponent(h.taskId)}`}>{h.taskId}</Link>
                  </td>
                  <td>{h.component ?? "–"}</td>
                  <td>
                    <span class={`badge badge-${h.outcome}`}>{h.outcome}</span>
                  </td>
                  <td>{time(h.first)}</td>
                  <td>{time(h.last)}</td>
                  <td class="reason">
                    {h.events
                      .map((e) => e.step)
                      .filter((s): s is string => s !== null)
                      .filter((s, i, all) => all.indexOf(s) === i)
                      .join(" → ")}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Card>
    </div>
  );
}
