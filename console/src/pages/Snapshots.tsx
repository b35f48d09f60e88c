import { useState } from "preact/hooks";
import { del } from "../api";
import { useActivity } from "../events";
import { bytes, short, time } from "../format";
import { navigate } from "../router";
import type { Snapshot, Vm } from "../types";
import { ConfirmButton, Head, Link, LoadError, PageHead, useAction, useGet } from "../components/ui";
import { VmCreate } from "./VmCreate";

export function Snapshots() {
  const [scope, setScope] = useState("user");
  const snaps = useGet<Snapshot[]>(`/v1/snapshots?scope=${scope}`);
  const vms = useGet<Vm[]>("/v1/vms");
  const [restoring, setRestoring] = useState<string | null>(null);
  const [busy, run] = useAction();
  useActivity(["snapshot"], () => void snaps.reload());
  return (
    <div data-testid="page-snapshots">
      <PageHead title="Snapshots">
        <select value={scope} onChange={(e) => setScope(e.currentTarget.value)} data-testid="snapshot-scope">
          <option value="user">user snapshots</option>
          <option value="internal">templates</option>
          <option value="all">all</option>
        </select>
      </PageHead>
      {restoring ? (
        <VmCreate
          key={restoring}
          vms={vms.data ?? []}
          snapshotId={restoring}
          onCreated={(vm) => navigate(`/console/vms/${vm.id}`)}
        />
      ) : null}
      <LoadError error={snaps.error} what="Snapshots" />
      <table class="list" data-testid="snapshot-table">
        <Head cols={["Snapshot", "Kind", "From VM", "Shape", "Memory", "Size", "Created", ""]} />
        <tbody>
          {(snaps.data ?? []).map((s) => (
            <tr key={s.id} data-snapshot-id={s.id}>
              <td class="mono">{short(s.id)}</td>
              <td>{s.kind}</td>
              <td>{s.sourceVmId ? <Link href={`/console/vms/${s.sourceVmId}`} class="mono">{short(s.sourceVmId)}</Link> : "–"}</td>
              <td>
                {s.cpu} vCPU · {s.memMb} MiB · {s.diskSizeMb} MiB disk
              </td>
              <td>{s.hasMemory ? "yes" : "disk only"}</td>
              <td>{bytes(s.sizeBytes)}</td>
              <td>{time(s.createdAt)}</td>
              <td>
                <span class="row">
                  {s.kind === "user_overlay" ? (
                    <button onClick={() => setRestoring(restoring === s.id ? null : s.id)} data-testid="snapshot-restore">
                      {restoring === s.id ? "Cancel restore" : "Restore into new VM"}
                    </button>
                  ) : null}
                  <ConfirmButton
                    label="Delete"
                    disabled={busy}
                    testid="snapshot-delete"
                    onConfirm={() => void run(() => del(`/v1/snapshots/${s.id}`)).then(() => snaps.reload())}
                  />
                </span>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {!snaps.loading && (snaps.data ?? []).length === 0 ? <p class="muted">No snapshots.</p> : null}
    </div>
  );
}
