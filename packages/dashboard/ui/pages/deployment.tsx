import { useEffect, useMemo, useState } from "preact/hooks";
import { Link } from "wouter-preact";
import { DeploymentView, TASK_STATES, TaskView, type DeploymentSummary, type Me } from "@molt/contracts/views";
import { command } from "../api.js";
import { Card, ErrorLine, Filter, Head, ProgressBar, StateBadge } from "../components.js";
import { failedCount, finished, progressPercent, TERMINAL, time, type Counts } from "../format.js";
import { follow } from "../live.js";

const Progress = DeploymentView.pick({ deployment: true, counts: true });

/** Tasks shown in the table; counts and failures always cover every task. */
const TABLE_LIMIT = 500;

export function DeploymentPage(props: { id: string; me: Me }) {
  const { id } = props;
  const [summary, setSummary] = useState<{ deployment: DeploymentSummary; counts: Counts } | null>(null);
  const [tasks, setTasks] = useState<ReadonlyMap<string, TaskView>>(new Map());
  const [error, setError] = useState<Error | null>(null);

  useEffect(() => {
    setSummary(null);
    setTasks(new Map());
    // The stream starts with a snapshot of every task and the progress, then sends changes.
    return follow(`/v1/deployments/${encodeURIComponent(id)}/events`, {
      onMessage(event, data) {
        if (event === "progress") setSummary(Progress.parse(data));
        else if (event === "task") {
          const t = TaskView.parse(data);
          setTasks((prev) => new Map(prev).set(t.taskId, t));
        }
      },
      onError: setError,
    });
  }, [id]);

  if (!summary) return <Card title={`Deployment ${id}`}>{error ? <ErrorLine error={error} /> : <p>Loading…</p>}</Card>;
  const { deployment: d, counts } = summary;
  const percent = progressPercent(d, counts);
  const bad = failedCount(counts);
  return (
    <div data-deployment-id={d.id} data-state={d.state} data-progress={percent} data-total={d.hostsTotal} data-finished={finished(counts)} data-failed={bad}>
      <Card title={`Deployment ${d.id}`}>
        <dl class="facts">
          <dt>Component</dt>
          <dd>
            {d.component} → {d.version}
          </dd>
          <dt>State</dt>
          <dd>
            <StateBadge state={d.state} />
            {d.reason ? <span class="reason"> {d.reason}</span> : null}
          </dd>
          <dt>Requested</dt>
          <dd>
            by {d.requestedBy} at {time(d.createdAt)}
          </dd>
          <dt>Finished</dt>
          <dd>{time(d.completedAt)}</dd>
          {d.braked ? (
            <>
              <dt>Brake</dt>
              <dd data-testid="brake">
                {d.braked.failed} failed of {d.braked.finished} finished (threshold {Math.round(d.braked.threshold * 100)} %)
              </dd>
            </>
          ) : null}
          {d.awaitingApproval !== null ? (
            <>
              <dt>Approval</dt>
              <dd>batch {d.awaitingApproval} waits for approval</dd>
            </>
          ) : null}
        </dl>
        <ProgressBar percent={percent} failed={d.hostsTotal ? Math.floor((bad * 100) / d.hostsTotal) : 0} label={`${percent} % (${finished(counts)} of ${d.hostsTotal})`} />
        <Counts counts={counts} />
        <Actions d={d} me={props.me} />
      </Card>
      <Card title="Batches">
        <Batches d={d} />
      </Card>
      <Card title="Failures by step and reason">
        <Failures tasks={tasks} />
      </Card>
      <Card title="Tasks">
        <Tasks tasks={tasks} />
      </Card>
      {d.skipped.length > 0 ? (
        <Card title={`Skipped (${d.skipped.length})`}>
          <ul class="skipped">
            {d.skipped.slice(0, 200).map((s) => (
              <li key={s.hostId} data-host-id={s.hostId}>
                <Link href={`/hosts/${encodeURIComponent(s.hostId)}`}>{s.hostId}</Link>: {s.reason}
              </li>
            ))}
          </ul>
        </Card>
      ) : null}
    </div>
  );
}

function Counts(props: { counts: Counts }) {
  const entries = Object.entries(props.counts).filter(([, n]) => n > 0);
  return (
    <ul class="counts" data-testid="counts">
      {entries.map(([state, n]) => (
        <li key={state} data-count-state={state} data-count={n}>
          <StateBadge state={state} /> {n}
        </li>
      ))}
    </ul>
  );
}

/** One bar per batch (the plan's and each retry's): its hosts finished of its size, failures in red. */
function Batches(props: { d: DeploymentSummary }) {
  const { total, started, completed, items } = props.d.batches;
  return (
    <ol class="batches" data-batches-total={total} data-batches-started={started} data-batches-completed={completed}>
      {items.map((b) => {
        const o = b.outcomes;
        const failed = o.failed + o.rejected + o["timed-out"];
        const percent = b.size === 0 ? 100 : Math.round((100 * b.finished) / b.size);
        return (
          <li
            key={b.index}
            class={`batch batch-${b.state}`}
            data-batch={b.index}
            data-batch-kind={b.kind}
            data-batch-state={b.state}
            data-batch-size={b.size}
            data-batch-assigned={b.assigned}
            data-batch-finished={b.finished}
            data-batch-succeeded={o.succeeded}
            data-batch-failed={failed}
            data-batch-busy={o.busy}
            data-batch-skipped={o.skipped}
            data-batch-cancelled={o.cancelled}
          >
            <span class="batch-name">
              {b.kind === "batch" ? `batch ${b.index}` : `${b.kind} ${b.index}`} · {b.state}
            </span>
            <ProgressBar percent={percent} failed={b.size === 0 ? 0 : Math.round((100 * failed) / b.size)} label={`${b.finished}/${b.size}`} />
          </li>
        );
      })}
    </ol>
  );
}

/** Failed, rejected and timed-out tasks grouped by the step they stopped at and their error. */
function Failures(props: { tasks: ReadonlyMap<string, TaskView> }) {
  const groups = useMemo(() => {
    const by = new Map<string, { step: string; reason: string; hosts: string[] }>();
    for (const t of props.tasks.values()) {
      if (t.state !== "failed" && t.state !== "rejected" && t.state !== "timed-out") continue;
      const step = t.currentStep ?? t.state;
      const reason = t.error ?? t.state;
      const key = `${step}\u0000${reason}`;
      const g = by.get(key) ?? { step, reason, hosts: [] };
      g.hosts.push(t.hostId);
      by.set(key, g);
    }
    return [...by.values()].sort((a, b) => b.hosts.length - a.hosts.length);
  }, [props.tasks]);
  if (groups.length === 0) return <p class="empty">No failures.</p>;
  return (
    <table class="list" data-testid="failures">
      <Head columns={["Step", "Reason", "Hosts"]} />
      <tbody>
        {groups.map((g) => (
          <tr key={`${g.step}/${g.reason}`} data-failure-step={g.step} data-failure-count={g.hosts.length}>
            <td>{g.step}</td>
            <td class="reason">{g.reason}</td>
            <td>
              {g.hosts.length}: {g.hosts.slice(0, 5).join(", ")}
              {g.hosts.length > 5 ? " …" : ""}
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function Tasks(props: { tasks: ReadonlyMap<string, TaskView> }) {
  const [state, setState] = useState("");
  const rows = [...props.tasks.values()].filter((t) => !state || t.state === state).sort((a, b) => a.hostId.localeCompare(b.hostId) || a.attempt - b.attempt);
  return (
    <>
      <Filter label="State" value={state} options={TASK_STATES} onChange={setState} />
      <table class="list" data-testid="tasks">
        <Head columns={["Host", "Attempt", "State", "Step", "From", "Error"]} />
        <tbody>
          {rows.slice(0, TABLE_LIMIT).map((t) => (
            <tr key={t.taskId} data-task-id={t.taskId} data-host-id={t.hostId} data-state={t.state}>
              <td>
                <Link href={`/hosts/${encodeURIComponent(t.hostId)}`}>{t.hostId}</Link>
              </td>
              <td>
                <Link href={`/tasks/${encodeURIComponent(t.taskId)}`}>#{t.attempt}</Link>
              </td>
              <td>
                <StateBadge state={t.state} />
              </td>
              <td>{t.currentStep ?? "–"}</td>
              <td>{t.fromVersion ?? "none"}</td>
              <td class="reason">{t.error ?? ""}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {rows.length > TABLE_LIMIT ? <p class="empty">{rows.length - TABLE_LIMIT} more not shown; filter by state.</p> : null}
    </>
  );
}

const ACTIONS = ["approve", "pause", "resume", "cancel", "retry", "rollback"] as const;
type Action = (typeof ACTIONS)[number];

/** Which commands make sense in a state; the server still decides (a 409 names the state). */
function offered(d: DeploymentSummary, action: Action): boolean {
  const done = TERMINAL.has(d.state);
  switch (action) {
    case "approve":
      return d.awaitingApproval !== null && !done;
    case "pause":
      return d.state === "running" || d.state === "planned";
    case "resume":
      return d.state === "paused";
    case "cancel":
      return !done;
    case "retry":
      return d.state === "failed" || d.state === "completed";
    case "rollback":
      return done;
  }
}

/** Operator actions, shown only to roles allowed to write. */
function Actions(props: { d: DeploymentSummary; me: Me }) {
  const [busy, setBusy] = useState<Action | null>(null);
  const [result, setResult] = useState<string | null>(null);
  const [error, setError] = useState<Error | null>(null);
  if (props.me.role === "viewer") return null;
  const run = (action: Action) => {
    if ((action === "cancel" || action === "rollback") && !confirm(`${action} deployment ${props.d.id}?`)) return;
    setBusy(action);
    setError(null);
    command(`/v1/deployments/${encodeURIComponent(props.d.id)}/${action}`)
      .then(() => setResult(`${action} accepted`))
      .catch((err: Error) => setError(err))
      .finally(() => setBusy(null));
  };
  return (
    <div class="actions" data-testid="actions">
      {ACTIONS.filter((a) => offered(props.d, a)).map((a) => (
        <button key={a} type="button" data-action={a} disabled={busy !== null} onClick={() => run(a)}>
          {a}
        </button>
      ))}
      {result ? <span class="result">{result}</span> : null}
      <ErrorLine error={error} />
    </div>
  );
}
