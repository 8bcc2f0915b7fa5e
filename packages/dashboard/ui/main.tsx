import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { Link, Route, Router, Switch } from "wouter-preact";
import { useHashLocation } from "wouter-preact/use-hash-location";
import { Me } from "@molt/contracts/views";
import { ApiError, get, setToken, token } from "./api.js";
import { Card, ErrorLine } from "./components.js";
import { DeploymentPage } from "./pages/deployment.js";
import { DeploymentsPage } from "./pages/deployments.js";
import { FleetPage } from "./pages/fleet.js";
import { HostPage } from "./pages/host.js";
import { TaskPage } from "./pages/task.js";

/** The token is asked once and kept in this browser; `GET /v1/me` says whose it is and its role. */
function App() {
  const [me, setMe] = useState<Me | null>(null);
  const [error, setError] = useState<Error | null>(null);
  const [checked, setChecked] = useState(false);

  const check = () => {
    if (!token()) {
      setChecked(true);
      return;
    }
    get("/v1/me", Me)
      .then((m) => (setMe(m), setError(null)))
      .catch((err: Error) => {
        if (err instanceof ApiError && err.status === 401) setToken(null);
        setError(err);
      })
      .finally(() => setChecked(true));
  };
  useEffect(check, []);

  if (!checked) return null;
  if (!me) return <Login error={error} onToken={(t) => (setToken(t), check())} />;
  return (
    <Router hook={useHashLocation}>
      <header class="top">
        <strong>Molt</strong>
        <nav>
          <Link href="/">Deployments</Link>
          <Link href="/fleet">Fleet</Link>
        </nav>
        <span class="who" data-actor={me.actor} data-role={me.role}>
          {me.actor} ({me.role}){" "}
          <button type="button" onClick={() => (setToken(null), setMe(null))}>
            sign out
          </button>
        </span>
      </header>
      <main>
        <Switch>
          <Route path="/">
            <DeploymentsPage />
          </Route>
          <Route path="/deployments/:id">{(p) => <DeploymentPage id={decodeURIComponent(p.id)} me={me} />}</Route>
          <Route path="/tasks/:id">{(p) => <TaskPage id={decodeURIComponent(p.id)} />}</Route>
          <Route path="/hosts/:id">{(p) => <HostPage id={decodeURIComponent(p.id)} />}</Route>
          <Route path="/fleet">
            <FleetPage />
          </Route>
          <Route>
            <Card title="Not found">
              <p>
                No such page. <Link href="/">Deployments</Link>
              </p>
            </Card>
          </Route>
        </Switch>
      </main>
    </Router>
  );
}

function Login(props: { error: Error | null; onToken: (t: string) => void }) {
  const [value, setValue] = useState("");
  return (
    <main class="login">
      <Card title="Molt: sign in">
        <form
          onSubmit={(e) => {
            e.preventDefault();
            props.onToken(value.trim());
          }}
        >
          <label>
            API token <input name="token" type="password" autocomplete="off" value={value} onInput={(e) => setValue((e.target as HTMLInputElement).value)} />
          </label>
          <button type="submit">Sign in</button>
        </form>
        <ErrorLine error={props.error} />
      </Card>
    </main>
  );
}

render(<App />, document.getElementById("app")!);
