import { useEffect, useState } from "preact/hooks";
import { Link } from "wouter-preact";
import { FleetVersions, HostList } from "@molt/contracts/views";
import { get } from "../api.js";
import { BarChart, Card, ErrorLine, Head } from "../components.js";
import { time } from "../format.js";

/** The fleet: version distribution per component, and the hosts. Refreshed every few seconds. */
export function FleetPage() {
  const [versions, setVersions] = useState<FleetVersions | null>(null);
  const [hosts, setHosts] = useState<HostList | null>(null);
  const [error, setError] = useState<Error | null>(null);

  useEffect(() => {
    const load = () => {
      get("/v1/fleet/versions", FleetVersions).then(setVersions, setError);
      get("/v1/hosts?limit=200", HostList).then(setHosts, setError);
    };
    load();
    const timer = setInterval(load, 3000);
    return () => clearInterval(timer);
  }, []);

  return (
    <>
      <ErrorLine error={error} />
      {(versions?.components ?? []).map((c) => (
        <Card key={c.component} title={`${c.component}: versions on ${c.total} hosts`}>
          <div data-component={c.component} data-total={c.total}>
            <BarChart name={`${c.component} versions`} rows={c.versions.map((v) => ({ label: v.version ?? "not installed", value: v.hosts }))} />
          </div>
        </Card>
      ))}
      <Card title="Hosts">
        <table class="list" data-testid="hosts">
          <Head columns={["Host", "Cluster", "Platform", "Online", "Last seen", "Components"]} />
          <tbody>
            {(hosts?.hosts ?? []).map((h) => (
              <tr key={h.hostId} data-host-id={h.hostId} data-online={String(h.online)}>
                <td>
                  <Link href={`/hosts/${encodeURIComponent(h.hostId)}`}>{h.hostId}</Link>
                </td>
                <td>{h.cluster ?? "–"}</td>
                <td>{h.platform}</td>
                <td>{h.online ? "yes" : "no"}</td>
                <td>{time(h.lastSeenAt)}</td>
                <td>
                  {Object.entries(h.components)
                    .map(([c, v]) => `${c} ${v ?? "–"}`)
                    .join(", ")}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        {hosts?.next ? <p class="empty">Showing the first 200 hosts.</p> : null}
      </Card>
    </>
  );
}
