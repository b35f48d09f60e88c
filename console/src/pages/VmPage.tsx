import { useState } from "preact/hooks";
import { post } from "../api";
import { useActivity } from "../events";
import { short, time } from "../format";
import { navigate, usePoll } from "../router";
import { toast } from "../toasts";
import type { Snapshot, Vm } from "../types";
import { Deadline, Link, LoadError, MetaChips, PageHead, StateBadge, useAction, useGet } from "../components/ui";
import { VmActions } from "./Vms";
import { ExecBox, RunBox } from "./VmRun";
import { FilesBox } from "./VmFiles";
import { TerminalBox } from "./VmTerminal";
import { ExecLogs, VmLogs } from "./VmLogs";

const TABS = ["Exec", "Run code", "Files", "Terminal", "Logs", "Exec log"] as const;

/** Extends the deadline to now + n seconds (`POST /v1/vms/:id/timeout`), or clears it. */
function Lifetime(props: { vm: Vm; onDone: () => void }) {
  const [secs, setSecs] = useState("3600");
  const [busy, run] = useAction();
  const set = (timeoutSec: number | null) =>
    void run(async () => {
      await post<Vm>(`/v1/vms/${props.vm.id}/timeout`, { timeoutSec });
      toast(timeoutSec === null ? "Deadline cleared" : `Deadline set to ${timeoutSec} s from now`, "ok");
    }).then(props.onDone);
  const n = Number(secs);
  const valid = secs.trim() !== "" && Number.isInteger(n) && n > 0;
  return (
    <form
      class="lifetime"
      data-testid="vm-lifetime"
      onSubmit={(e) => {
        e.preventDefault();
        if (valid) set(n);
      }}
    >
      <input
        type="number"
        min={1}
        name="timeoutSec"
        aria-label="Seconds from now"
        value={secs}
        onInput={(e) => setSecs(e.currentTarget.value)}
        data-testid="vm-extend-seconds"
      />
      <button type="submit" disabled={busy || !valid} data-testid="vm-extend">
        Extend
      </button>
      {props.vm.expiresAt ? (
        <button type="button" disabled={busy} onClick={() => set(null)} data-testid="vm-clear-deadline">
          Clear
        </button>
      ) : null}
    </form>
  );
}

function Details(props: { vm: Vm; onChanged: () => void }) {
  const { vm } = props;
  const rows: [string, string][] = [
    ["Id", vm.id],
    ["Address", vm.guestIp],
    ["Shape", `${vm.cpu} vCPU · ${vm.memMb} MiB · ${vm.diskSizeMb} MiB disk`],
    ["Image", vm.imageId],
    ["Provisioned", vm.provisionMode ?? "–"],
    ["Restored from", vm.sourceSnapshotId ?? "–"],
    ["Outbound internet", vm.outboundInternet ? "yes" : "no"],
    ["Allowed IPs", vm.allowIps.join(", ") || "–"],
    ["Peers", vm.peerLinks.map((p) => `${p.alias} → ${short(p.vmId)} (${p.sourceMode})`).join(", ") || "–"],
    ["Created", time(vm.createdAt)],
  ];
  return (
    <dl class="details card">
      {rows.map(([k, v]) => (
        <div key={k}>
          <dt>{k}</dt>
          <dd class={k === "Id" || k === "Address" ? "mono" : undefined}>{v}</dd>
        </div>
      ))}
      <div>
        <dt>Deadline</dt>
        <dd data-testid="vm-expires">
          <Deadline expiresAt={vm.expiresAt} action={vm.timeoutAction} testid="vm-deadline" />
          {vm.expiresAt ? <div class="small muted">{time(vm.expiresAt)}</div> : null}
          {vm.state === "RUNNING" || vm.state === "STOPPED" || vm.state === "PAUSED" ? <Lifetime vm={vm} onDone={props.onChanged} /> : null}
        </dd>
      </div>
      <div>
        <dt>Metadata</dt>
        <dd data-testid="vm-metadata">
          <MetaChips metadata={vm.metadata} />
        </dd>
      </div>
      {vm.lastError ? (
        <div>
          <dt>Last error</dt>
          <dd class="error">{vm.lastError}</dd>
        </div>
      ) : null}
    </dl>
  );
}

export function VmPage(props: { id: string }) {
  const vm = useGet<Vm>(`/v1/vms/${props.id}`);
  const [tab, setTab] = useState<(typeof TABS)[number]>("Exec");
  const [snapBusy, runSnap] = useAction();
  const [lastSnap, setLastSnap] = useState<Snapshot | null>(null);
  usePoll(() => void vm.reload(), 5000);
  useActivity(["vm"], (e) => {
    if (e.entityId === props.id) void vm.reload();
  });
  const v = vm.data;
  const running = v?.state === "RUNNING";
  const snapshot = () =>
    void runSnap(async () => {
      const s = await post<Snapshot>(`/v1/vms/${props.id}/snapshots`);
      setLastSnap(s);
    });
  return (
    <div data-testid="page-vm">
      <PageHead title={`VM ${short(props.id)}`}>
        {v ? <StateBadge state={v.state} /> : null}
        {v ? (
          <>
            <button disabled={!running || snapBusy} onClick={snapshot} data-testid="vm-snapshot">
              {snapBusy ? "Snapshotting…" : "Snapshot"}
            </button>
            <VmActions vm={v} onDone={() => void vm.reload()} onDestroyed={() => navigate("/console/vms")} />
          </>
        ) : null}
      </PageHead>
      <LoadError error={vm.error} what="This VM" />
      {lastSnap ? (
        <p class="notice" data-testid="vm-snapshot-done">
          Snapshot <span class="mono">{lastSnap.id}</span> created.{" "}
          <Link href="/console/snapshots">Snapshots</Link>
        </p>
      ) : null}
      {v ? <Details vm={v} onChanged={() => void vm.reload()} /> : null}
      <div class="tabs" role="tablist">
        {TABS.map((t) => (
          <button
            role="tab"
            class={t === tab ? "active" : undefined}
            aria-selected={t === tab}
            onClick={() => setTab(t)}
            data-testid={`tab-${t.toLowerCase().replace(" ", "-")}`}
          >
            {t}
          </button>
        ))}
      </div>
      <div class="tab-body">
        {!running && (tab === "Exec" || tab === "Run code" || tab === "Files" || tab === "Terminal") ? (
          <p class="notice" data-testid="vm-not-running">
            {v?.state === "PAUSED" ? "The VM is PAUSED: resume it for this." : "The VM must be RUNNING for this."}
          </p>
        ) : null}
        {tab === "Exec" ? <ExecBox id={props.id} disabled={!running} /> : null}
        {tab === "Run code" ? <RunBox id={props.id} disabled={!running} /> : null}
        {tab === "Files" ? <FilesBox id={props.id} disabled={!running} /> : null}
        {tab === "Terminal" ? <TerminalBox id={props.id} disabled={!running} /> : null}
        {tab === "Logs" ? <VmLogs id={props.id} /> : null}
        {tab === "Exec log" ? <ExecLogs id={props.id} /> : null}
      </div>
    </div>
  );
}
