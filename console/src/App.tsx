// Routing between the login page and the console pages, and the console's frame (navigation, the
// signed-in admin, live status, toasts).
import type { ComponentChildren } from "preact";
import { useEffect } from "preact/hooks";
import { live, startEvents, stopEvents } from "./events";
import { startSampling, stopSampling } from "./metrics";
import { navigate, query, usePath } from "./router";
import { checkSession, logout, session } from "./session";
import { useStore } from "./store";
import { toasts } from "./toasts";
import { Link } from "./components/ui";
import { Login } from "./pages/Login";
import { Dashboard } from "./pages/Dashboard";
import { Vms } from "./pages/Vms";
import { VmPage } from "./pages/VmPage";
import { Snapshots } from "./pages/Snapshots";
import { Images } from "./pages/Images";
import { ApiKeys } from "./pages/ApiKeys";
import { Webhooks } from "./pages/Webhooks";
import { Activity } from "./pages/Activity";

const NAV: [string, string][] = [
  ["/console/", "Dashboard"],
  ["/console/vms", "VMs"],
  ["/console/snapshots", "Snapshots"],
  ["/console/images", "Images"],
  ["/console/api-keys", "API keys"],
  ["/console/webhooks", "Webhooks"],
  ["/console/activity", "Activity"],
];

function page(path: string): ComponentChildren {
  const p = path.split("?")[0].replace(/\/+$/, "") || "/";
  if (p === "/console") return <Dashboard />;
  if (p === "/console/vms") return <Vms />;
  const vm = /^\/console\/vms\/([0-9a-fA-F-]{36})$/.exec(p);
  // Keyed: another VM is a fresh page (tabs, outputs and subscriptions start over).
  if (vm) return <VmPage key={vm[1].toLowerCase()} id={vm[1].toLowerCase()} />;
  if (p === "/console/snapshots") return <Snapshots />;
  if (p === "/console/images") return <Images />;
  if (p === "/console/api-keys") return <ApiKeys />;
  if (p === "/console/webhooks") return <Webhooks />;
  if (p === "/console/activity") return <Activity />;
  return (
    <div class="card">
      <h1>Page not found</h1>
      <p>
        Nothing lives at this address. <Link href="/console/">Back to the dashboard</Link>
      </p>
    </div>
  );
}

/** Where to go after signing in: a console path from `?next=`, else the dashboard. */
function nextPath(): string {
  const n = query("next");
  return n && n.startsWith("/console") ? n : "/console/";
}

function Toasts() {
  const list = useStore(toasts);
  return (
    <div class="toasts" aria-live="polite" data-testid="toasts">
      {list.map((t) => (
        <div class={`toast ${t.kind}`} key={t.id}>
          {t.text}
        </div>
      ))}
    </div>
  );
}

function Shell(props: { path: string; email: string }) {
  const state = useStore(live);
  const current = props.path.split("?")[0];
  useEffect(() => {
    startEvents();
    startSampling();
    return () => {
      stopEvents();
      stopSampling();
    };
  }, []);
  return (
    <div class="shell">
      <nav class="side">
        <div class="brand">run-dat-sheesh</div>
        {NAV.map(([href, label]) => {
          const active = href === "/console/" ? current === "/console/" || current === "/console" : current.startsWith(href);
          return (
            <Link href={href} class={active ? "active" : undefined} testid={`nav-${label.toLowerCase().replace(" ", "-")}`}>
              {label}
            </Link>
          );
        })}
        {/* Served by the manager outside the app: plain links, a full page load. */}
        <div class="side-ext">
          <a href="/docs/" data-testid="nav-docs">Docs</a>
          <a href="/swagger" data-testid="nav-swagger">API (Swagger)</a>
        </div>
        <div class="side-foot">
          <span class={`live ${state}`} data-testid="live-state" title="Live activity stream">
            {state === "live" ? "● live" : state === "connecting" ? "○ connecting" : "○ no live updates"}
          </span>
          <span class="small muted" data-testid="whoami">{props.email}</span>
          <button onClick={() => void logout()} data-testid="logout">
            Log out
          </button>
        </div>
      </nav>
      <main class="content">{page(props.path)}</main>
    </div>
  );
}

export function App() {
  const path = usePath();
  const s = useStore(session);
  const onLogin = path.startsWith("/login");
  useEffect(() => {
    if (s === undefined) void checkSession();
  }, [s]);
  useEffect(() => {
    if (s === undefined) return;
    const signedIn = s !== null && s !== "unavailable";
    if (onLogin) {
      if (signedIn) navigate(nextPath(), true);
    } else if (!path.startsWith("/console")) {
      // `/`, `/index.html`, and unknown addresses the server answered with the app.
      navigate(signedIn ? "/console/" : "/login/", true);
    } else if (!signedIn) {
      navigate(`/login/?next=${encodeURIComponent(path)}`, true);
    }
  }, [s, path]);
  return (
    <>
      {onLogin ? (
        <Login unavailable={s === "unavailable"} />
      ) : s && s !== "unavailable" && path.startsWith("/console") ? (
        <Shell path={path} email={s.email} />
      ) : (
        <p class="loading">Loading…</p>
      )}
      <Toasts />
    </>
  );
}
