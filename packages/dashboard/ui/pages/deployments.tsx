import { useEffect, useState } from "preact/hooks";
import { Link } from "wouter-preact";
import { DeploymentList, DeploymentView } from "@molt/contracts/views";
import { get } from "../api.js";
import { Card, ErrorLine, Filter, Head, ProgressBar, StateBadge } from "../components.js";
import { failedCount, finished, progressPercent, TERMINAL, time, type Counts } from "../format.js";
import { follow } from "../live.js";

type Row = DeploymentList["deployments"][number];

const DEPLOYMENT_STATES = ["requested", "planned", "running", "paused", "completed", "failed", "cancelled"] as const;

/** At most this many running deployments are followed live; the rest refresh with the list. */
const LIVE_LIMIT = 20;

export function DeploymentsPage() {
  const [rows, setRows] = useState<Row[] | null>(null);
  const [error, setError] = useState<Error | null>(null);
  const [filter, setFilter] = useState("");

  useEffect(() => {
    let stopped = false;
    const load = () =>
      get(`/v1/deployments?limit=100${filter ? `&state=${encodeURIComponent(filter)}` : ""}`, DeploymentList)
        .then((l) => !stopped && (setRows(l.deployments), setError(null)))
        .catch((err: Error) => !stopped && setError(err));
    void load();
    // New deployments appear without a reload; running ones move by their own streams below.
    const timer = setInterval(() => void load(), 5000);
    return () => {
      stopped = true;
      clearInterval(timer);
    };
  }, [filter]);

  const active = (rows ?? []).filter((r) => !TERMINAL.has(r.deployment.state)).slice(0, LIVE_LIMIT).map((r) => r.deployment.id);
  const activeKey = active.join(",");
  useEffect(() => {
    const stops = (activeKey ? activeKey.split(",") : []).map((id) =>
      follow(`/v1/deployments/${encodeURIComponent(id)}/events`, {
        onMessage(event, data) {
          if (event !== "progress") return;
          const p = DeploymentView.pick({ deployment: true, counts: true }).parse(data);
          setRows((prev) => prev?.map((r) => (r.deployment.id === p.deployment.id ? p : r)) ?? prev);
        },
        onError: () => undefined,
      }),
    );
    return () => stops.forEach((stop) => stop());
  }, [activeKey]);

  return (
    <Card title="Deployments">
      <Filter label="State" value={filter} options={DEPLOYMENT_STATES} onChange={setFilter} />
      <ErrorLine error={error} />
      {rows === null ? (
        <p>Loading…</p>
      ) : rows.length === 0 ? (
        <p class="empty">No deployments yet.</p>
      ) : (
        <table class="list" data-testid="deployments">
          <Head columns={["Deployment", "Component", "Version", "State", ["Progress", "wide"], "Hosts", "Failed", "By", "Created"]} />
          <tbody>
            {rows.map(({ deployment: d, counts }) => (
              <DeploymentRow key={d.id} d={d} counts={counts} />
            ))}
          </tbody>
        </table>
      )}
    </Card>
  );
}

function DeploymentRow(props: { d: Row["deployment"]; counts: Counts }) {
  const { d, counts } = props;
  const percent = progressPercent(d, counts);
  const bad = failedCount(counts);
  return (
    <tr data-deployment-id={d.id} data-state={d.state} data-total={d.hostsTotal} data-finished={finished(counts)} data-failed={bad} data-progress={percent}>
      <td>
        <Link href={`/deployments/${encodeURIComponent(d.id)}`}>{d.id}</Link>
      </td>
      <td>{d.component}</td>
      <td>{d.version}</td>
      <td>
        <StateBadge state={d.state} />
      </td>
      <td class="wide">
        <ProgressBar percent={percent} failed={d.hostsTotal ? Math.floor((bad * 100) / d.hostsTotal) : 0} />
      </td>
      <td>{d.hostsTotal}</td>
      <td>{bad}</td>
      <td>{d.requestedBy}</td>
      <td>{time(d.createdAt)}</td>
    </tr>
  );
}
