import { useEffect } from "preact/hooks";
import { get } from "../api";
import { feed } from "../events";
import { bytes, ago } from "../format";
import { createLatency, metricsAvailable, samples } from "../metrics";
import { usePoll } from "../router";
import { useStore } from "../store";
import type { Image, Overview, Readyz, Snapshot, Vm } from "../types";
import { Chart } from "../components/Chart";
import { Link, LoadError, markReady, PageHead, useLoad } from "../components/ui";

function Card(props: { label: string; value: string | number; testid: string }) {
  return (
    <div class="stat" data-testid={props.testid}>
      <div class="stat-value">{props.value}</div>
      <div class="stat-label">{props.label}</div>
    </div>
  );
}

function Usage(props: { label: string; used: number; capacity: number; text: string; testid: string }) {
  return (
    <div class="usage" data-testid={props.testid}>
      <div class="row between">
        <span>{props.label}</span>
        <span class="muted small">{props.text}</span>
      </div>
      <meter min={0} max={props.capacity || 1} value={props.used} high={(props.capacity || 1) * 0.85} />
    </div>
  );
}

function usages(o: Overview): [string, number, number, string][] {
  const cpu = o.cpu.usagePct === null ? "–" : `${Math.round(o.cpu.usagePct * 100)} %`;
  const of = (u: number, c: number) => `${bytes(u)} of ${bytes(c)}`;
  return [
    ["CPU", o.cpu.usagePct ?? 0, 1, `${cpu} busy · ${o.cpu.usedCores} of ${o.cpu.capacityCores} cores given to VMs`],
    ["Memory", o.memory.usedBytes, o.memory.capacityBytes, of(o.memory.usedBytes, o.memory.capacityBytes)],
    ["Storage", o.storage.usedBytes, o.storage.capacityBytes, of(o.storage.usedBytes, o.storage.capacityBytes)],
  ];
}

function OverviewCards() {
  const ov = useLoad(() => get<Overview>("/v1/admin/overview"));
  // Counts from the lists when the overview endpoint is not there.
  const lists = useLoad(async () => {
    const [vms, snaps, images] = await Promise.all([
      get<Vm[]>("/v1/vms"),
      get<Snapshot[]>("/v1/snapshots?scope=all"),
      get<Image[]>("/v1/images"),
    ]);
    return { vms, snaps, images };
  });
  usePoll(() => void Promise.all([ov.reload(), lists.reload()]), 10000);
  useEffect(() => {
    if (!ov.loading || !lists.loading) markReady();
  }, [ov.loading, lists.loading]);
  const o = ov.data;
  const l = lists.data;
  const running = l ? l.vms.filter((v) => v.state === "RUNNING").length : undefined;
  const paused = l ? l.vms.filter((v) => v.state === "PAUSED").length : undefined;
  return (
    <>
      <div class="stats">
        <Card label="Active VMs" value={o?.counts.activeVms ?? l?.vms.length ?? "–"} testid="stat-active-vms" />
        <Card label="Running" value={running ?? "–"} testid="stat-running" />
        <Card label="Paused" value={paused ?? "–"} testid="stat-paused" />
        <Card label="Warm VMs" value={o?.counts.warmVms ?? "–"} testid="stat-warm" />
        <Card
          label="Snapshots"
          value={o?.counts.snapshots ?? l?.snaps.filter((s) => !s.internal).length ?? "–"}
          testid="stat-snapshots"
        />
        <Card
          label="Templates"
          value={o?.counts.templates ?? l?.snaps.filter((s) => s.internal).length ?? "–"}
          testid="stat-templates"
        />
        <Card label="Images" value={l?.images.length ?? "–"} testid="stat-images" />
      </div>
      <section class="card">
        <h2>Host</h2>
        {o ? (
          <div class="usages">
            {usages(o).map(([label, used, capacity, text]) => (
              <Usage label={label} used={used} capacity={capacity} text={text} testid={`usage-${label.toLowerCase()}`} />
            ))}
          </div>
        ) : (
          <LoadError error={ov.error} what="Host usage (/v1/admin/overview)" />
        )}
      </section>
    </>
  );
}

function History() {
  const all = useStore(samples);
  const available = useStore(metricsAvailable);
  return (
    <section class="card">
      <h2>Last hour</h2>
      {available === false ? (
        <p class="notice" data-testid="not-available">Metrics not available to this session.</p>
      ) : null}
      <div class="charts">
        <Chart title="VMs" points={all.map((s) => ({ t: s.t, v: s.vms }))} kind="step" unit="VMs" testid="chart-vms" />
        <Chart title="Create latency (mean)" points={createLatency(all)} kind="dots" unit="s" testid="chart-latency" />
      </div>
      <p class="small muted">Sampled from /metrics every 15 s while the console is open.</p>
    </section>
  );
}

function Health() {
  const r = useLoad(async () => {
    // 503 still carries the report: read it whatever the status.
    const resp = await fetch("/readyz");
    return (await resp.json()) as Readyz;
  });
  const d = r.data;
  return (
    <section class="card" data-testid="readiness">
      <h2>Readiness</h2>
      {d ? (
        <>
          <p>
            <span class={`badge ${d.status === "ready" ? "ok" : "bad"}`}>{d.status}</span> {d.backend} ({d.accel})
          </p>
          <ul class="checks">
            {Object.entries(d.checks ?? {}).map(([k, v]) => (
              <li key={k}>
                <span class={v === "ok" ? "ok-text" : "error"}>{v === "ok" ? "✓" : "✗"}</span> {k}
                {v === "ok" ? null : <span class="small"> {v}</span>}
              </li>
            ))}
          </ul>
        </>
      ) : (
        <LoadError error={r.error} what="Readiness" />
      )}
    </section>
  );
}

function Recent() {
  const events = useStore(feed).slice(0, 8);
  return (
    <section class="card">
      <h2>
        Recent activity <Link href="/console/activity" class="small">all</Link>
      </h2>
      {events.length === 0 ? <p class="muted small">Nothing since the console opened.</p> : null}
      <ul class="events">
        {events.map((e) => (
          <li key={e.id}>
            <span class="muted small">{ago(e.createdAt)}</span> <code>{e.type}</code> {e.message}
          </li>
        ))}
      </ul>
    </section>
  );
}

export function Dashboard() {
  return (
    <div data-testid="page-dashboard">
      <PageHead title="Dashboard" />
      <OverviewCards />
      <div class="grid2">
        <History />
        <Health />
      </div>
      <Recent />
    </div>
  );
}
