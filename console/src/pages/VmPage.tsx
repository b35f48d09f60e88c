import { useState } from "preact/hooks";
import { post } from "../api";
import { useActivity } from "../events";
import { short, time } from "../format";
import { navigate, usePoll } from "../router";
import type { Snapshot, Vm } from "../types";
import { Link, LoadError, PageHead, StateBadge, useAction, useGet } from "../components/ui";
import { VmActions } from "./Vms";
import { ExecBox, RunBox } from "./VmRun";
import { FilesBox } from "./VmFiles";
import { ExecLogs, VmLogs } from "./VmLogs";

const TABS = ["Exec", "Run code", "Files", "Logs", "Exec log"] as const;

function Details(props: { vm: Vm }) {
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
      {v ? <Details vm={v} /> : null}
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
        {!running && (tab === "Exec" || tab === "Run code" || tab === "Files") ? (
          <p class="notice">The VM must be RUNNING for this.</p>
        ) : null}
        {tab === "Exec" ? <ExecBox id={props.id} disabled={!running} /> : null}
        {tab === "Run code" ? <RunBox id={props.id} disabled={!running} /> : null}
        {tab === "Files" ? <FilesBox id={props.id} disabled={!running} /> : null}
        {tab === "Logs" ? <VmLogs id={props.id} /> : null}
        {tab === "Exec log" ? <ExecLogs id={props.id} /> : null}
      </div>
    </div>
  );
}
