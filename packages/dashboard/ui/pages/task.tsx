import { useEffect, useState } from "preact/hooks";
import { Link } from "wouter-preact";
import { TaskView } from "@molt/contracts/views";
import { get } from "../api.js";
import { Card, ErrorLine, Head, StateBadge } from "../components.js";
import { duration, time } from "../format.js";
import { follow } from "../live.js";

/** One task: its steps as a timeline with durations, its error, and live changes from its deployment's stream. */
export function TaskPage(props: { id: string }) {
  const [task, setTask] = useState<TaskView | null>(null);
  const [error, setError] = useState<Error | null>(null);

  useEffect(() => {
    setTask(null);
    get(`/v1/tasks/${encodeURIComponent(props.id)}`, TaskView).then(setTask, setError);
  }, [props.id]);

  const deploymentId = task?.deploymentId;
  useEffect(() => {
    if (!deploymentId) return undefined;
    return follow(`/v1/deployments/${encodeURIComponent(deploymentId)}/events`, {
      onMessage(event, data) {
        if (event !== "task") return;
        const t = TaskView.parse(data);
        if (t.taskId === props.id) setTask(t);
      },
      onError: setError,
    });
  }, [deploymentId, props.id]);

  if (!task) return <Card title={`Task ${props.id}`}>{error ? <ErrorLine error={error} /> : <p>Loading…</p>}</Card>;
  const start = Math.min(...task.steps.map((s) => (s.startedAt ? Date.parse(s.startedAt) : Infinity)));
  const end = Math.max(...task.steps.map((s) => Date.parse(s.endedAt ?? s.startedAt ?? task.updatedAt)));
  const span = Math.max(1, end - start);
  return (
    <div data-task-id={task.taskId} data-state={task.state} data-step={task.currentStep ?? ""}>
      <Card title={`Task ${task.taskId}`}>
        <dl class="facts">
          <dt>Host</dt>
          <dd>
            <Link href={`/hosts/${encodeURIComponent(task.hostId)}`}>{task.hostId}</Link>
          </dd>
          <dt>Deployment</dt>
          <dd>
            <Link href={`/deployments/${encodeURIComponent(task.deploymentId)}`}>{task.deploymentId}</Link> (attempt {task.attempt})
          </dd>
          <dt>Change</dt>
          <dd>
            {task.component} {task.fromVersion ?? "none"} → {task.version}
          </dd>
          <dt>State</dt>
          <dd>
            <StateBadge state={task.state} /> {task.currentStep ? `at ${task.currentStep}` : ""}
          </dd>
          <dt>Allocated</dt>
          <dd>{time(task.allocatedAt)}</dd>
          <dt>Finished</dt>
          <dd>{time(task.finishedAt)}</dd>
        </dl>
        {task.error ? (
          <p class="error" data-testid="task-error">
            {task.error}
          </p>
        ) : null}
      </Card>
      <Card title="Steps">
        <table class="list steps" data-testid="steps">
          <Head columns={["#", "Step", "State", "Started", "Duration", ["Timeline", "wide"], "Detail"]} />
          <tbody>
            {task.steps.map((s) => {
              const from = s.startedAt ? Date.parse(s.startedAt) - start : 0;
              const len = s.durationMs ?? (s.startedAt ? Date.parse(task.updatedAt) - Date.parse(s.startedAt) : 0);
              return (
                <tr key={s.seq} data-step={s.step} data-state={s.state} data-duration-ms={s.durationMs ?? ""}>
                  <td>{s.seq}</td>
                  <td>{s.step}</td>
                  <td>
                    <StateBadge state={s.state} />
                  </td>
                  <td>{s.startedAt ? new Date(s.startedAt).toLocaleTimeString() : "–"}</td>
                  <td>{duration(s.durationMs)}</td>
                  <td class="wide">
                    <div class="gantt">
                      <div class={`gantt-bar gantt-${s.state}`} style={{ left: `${(from * 100) / span}%`, width: `${Math.max(0.5, (len * 100) / span)}%` }} />
                    </div>
                  </td>
                  <td class="reason">{s.error ?? s.detail ?? ""}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </Card>
    </div>
  );
}
