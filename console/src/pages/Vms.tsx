import { useState } from "preact/hooks";
import { del, post } from "../api";
import { useActivity } from "../events";
import { ago, short } from "../format";
import { navigate, usePoll } from "../router";
import type { Vm } from "../types";
import { ConfirmButton, Head, Link, LoadError, PageHead, StateBadge, useAction, useGet } from "../components/ui";
import { VmCreate } from "./VmCreate";

/** Start / stop / destroy buttons for one VM, as its state allows. */
export function VmActions(props: { vm: Vm; onDone: () => void; onDestroyed?: () => void }) {
  const [busy, run] = useAction();
  const { vm } = props;
  const act = (f: () => Promise<unknown>) => void run(f).then(props.onDone);
  return (
    <span class="row">
      {vm.state === "STOPPED" ? (
        <button disabled={busy} onClick={() => act(() => post(`/v1/vms/${vm.id}/start`))} data-testid="vm-start">
          Start
        </button>
      ) : null}
      {vm.state === "RUNNING" ? (
        <button disabled={busy} onClick={() => act(() => post(`/v1/vms/${vm.id}/stop`))} data-testid="vm-stop">
          Stop
        </button>
      ) : null}
      <ConfirmButton
        label="Destroy"
        disabled={busy}
        testid="vm-destroy"
        onConfirm={() =>
          void run(() => del(`/v1/vms/${vm.id}`)).then((ok) => (ok && props.onDestroyed ? props.onDestroyed() : props.onDone()))
        }
      />
    </span>
  );
}

export function Vms() {
  const vms = useGet<Vm[]>("/v1/vms");
  const [creating, setCreating] = useState(false);
  usePoll(() => void vms.reload(), 5000);
  useActivity(["vm"], () => void vms.reload());
  const list = vms.data ?? [];
  return (
    <div data-testid="page-vms">
      <PageHead title="VMs">
        <button class="primary" onClick={() => setCreating(!creating)} data-testid="vm-new">
          {creating ? "Close" : "New VM"}
        </button>
      </PageHead>
      {creating ? <VmCreate vms={list} onCreated={(vm) => navigate(`/console/vms/${vm.id}`)} /> : null}
      <LoadError error={vms.error} what="VMs" />
      <table class="list" data-testid="vm-table">
        <Head cols={["VM", "State", "Shape", "Address", "Provisioned", "Created", ""]} />
        <tbody>
          {list.map((vm) => (
            <tr key={vm.id} data-vm-id={vm.id}>
              <td>
                <Link href={`/console/vms/${vm.id}`} class="mono">
                  {short(vm.id)}
                </Link>
                {vm.lastError ? <div class="error small">{vm.lastError}</div> : null}
              </td>
              <td>
                <StateBadge state={vm.state} />
              </td>
              <td>
                {vm.cpu} vCPU · {vm.memMb} MiB · {vm.diskSizeMb} MiB disk
              </td>
              <td class="mono">{vm.guestIp}</td>
              <td>{vm.provisionMode ?? "–"}</td>
              <td title={vm.createdAt}>{ago(vm.createdAt)}</td>
              <td>
                <VmActions vm={vm} onDone={() => void vms.reload()} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {!vms.loading && list.length === 0 ? <p class="muted">No VMs yet.</p> : null}
    </div>
  );
}
