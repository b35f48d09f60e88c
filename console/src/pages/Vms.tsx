import { useEffect, useRef, useState } from "preact/hooks";
import { del, post } from "../api";
import { useActivity } from "../events";
import { ago, short } from "../format";
import { navigate, usePoll } from "../router";
import { VM_STATES, type Vm } from "../types";
import {
  ConfirmButton,
  Deadline,
  Head,
  Link,
  LoadError,
  MetaChips,
  PageHead,
  StateBadge,
  useAction,
  useGet,
} from "../components/ui";
import { VmCreate } from "./VmCreate";

/** Start / pause / resume / stop / destroy buttons for one VM, as its state allows. */
export function VmActions(props: { vm: Vm; onDone: () => void; onDestroyed?: () => void }) {
  const [busy, run] = useAction();
  const [doing, setDoing] = useState("");
  const { vm } = props;
  const act = (what: string, f: () => Promise<unknown>) => {
    setDoing(what);
    void run(f).then(() => {
      setDoing("");
      props.onDone();
    });
  };
  const button = (what: string, label: string, busyLabel: string) => (
    <button disabled={busy} onClick={() => act(what, () => post(`/v1/vms/${vm.id}/${what}`))} data-testid={`vm-${what}`}>
      {busy && doing === what ? busyLabel : label}
    </button>
  );
  return (
    <span class="row">
      {vm.state === "STOPPED" ? button("start", "Start", "Starting…") : null}
      {vm.state === "RUNNING" ? button("pause", "Pause", "Pausing…") : null}
      {vm.state === "PAUSED" ? button("resume", "Resume", "Resuming…") : null}
      {vm.state === "RUNNING" || vm.state === "PAUSED" ? button("stop", "Stop", "Stopping…") : null}
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

/** `key=value` from the filter box: the pair, null when blank, "invalid" without a `=` or a key. */
function metaFilter(text: string): [string, string] | null | "invalid" {
  const t = text.trim();
  if (t === "") return null;
  const eq = t.indexOf("=");
  if (eq <= 0) return "invalid";
  return [t.slice(0, eq).trim(), t.slice(eq + 1).trim()];
}

/** The list's API path: `GET /v1/vms` with the state and metadata filters as query parameters. */
function listPath(state: string, meta: [string, string] | null | "invalid"): string {
  const q = new URLSearchParams();
  if (state) q.set("state", state);
  if (meta && meta !== "invalid") q.set(`metadata.${meta[0]}`, meta[1]);
  const s = q.toString();
  return s ? `/v1/vms?${s}` : "/v1/vms";
}

export function Vms() {
  const [state, setState] = useState("");
  const [metaText, setMetaText] = useState("");
  // The metadata box filters 300 ms after the last keystroke, not on every one.
  const [metaApplied, setMetaApplied] = useState("");
  useEffect(() => {
    const t = setTimeout(() => setMetaApplied(metaText), 300);
    return () => clearTimeout(t);
  }, [metaText]);
  const meta = metaFilter(metaApplied);
  const vms = useGet<Vm[]>(listPath(state, meta));
  const [creating, setCreating] = useState(false);
  const reload = useRef(vms.reload);
  reload.current = vms.reload;
  usePoll(() => void reload.current(), 5000);
  useActivity(["vm"], () => void reload.current());
  const list = vms.data ?? [];
  const filtered = state !== "" || (meta !== null && meta !== "invalid");
  return (
    <div data-testid="page-vms">
      <PageHead title="VMs">
        <button class="primary" onClick={() => setCreating(!creating)} data-testid="vm-new">
          {creating ? "Close" : "New VM"}
        </button>
      </PageHead>
      {creating ? <VmCreate vms={list} onCreated={(vm) => navigate(`/console/vms/${vm.id}`)} /> : null}
      <div class="row filters" data-testid="vm-filters">
        <label>
          State
          <select name="state" value={state} onChange={(e) => setState(e.currentTarget.value)} data-testid="vm-filter-state">
            <option value="">any</option>
            {VM_STATES.map((s) => (
              <option value={s} key={s}>
                {s}
              </option>
            ))}
          </select>
        </label>
        <label>
          Metadata
          <input
            name="metadata"
            placeholder="key=value"
            value={metaText}
            onInput={(e) => setMetaText(e.currentTarget.value)}
            onChange={(e) => setMetaText(e.currentTarget.value)}
            data-testid="vm-filter-metadata"
          />
        </label>
        {meta === "invalid" ? <span class="error small">Filter by metadata as key=value</span> : null}
      </div>
      <LoadError error={vms.error} what="VMs" />
      <table class="list" data-testid="vm-table">
        <Head cols={["VM", "State", "Shape", "Address", "Deadline", "Metadata", "Created", ""]} />
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
                <div class="small muted">{vm.provisionMode ?? ""}</div>
              </td>
              <td class="mono">{vm.guestIp}</td>
              <td>
                <Deadline expiresAt={vm.expiresAt} action={vm.timeoutAction} testid="vm-deadline" />
              </td>
              <td>
                <MetaChips metadata={vm.metadata} />
              </td>
              <td title={vm.createdAt}>{ago(vm.createdAt)}</td>
              <td>
                <VmActions vm={vm} onDone={() => void reload.current()} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {!vms.loading && list.length === 0 ? (
        <p class="muted" data-testid="vm-list-empty">
          {filtered ? "No VMs match the filter." : "No VMs yet."}
        </p>
      ) : null}
    </div>
  );
}
