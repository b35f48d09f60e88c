// The create form: every field of `POST /v1/vms` (docs/reference/api.md §3.3). The server
// validates; its message is shown as it comes.
import { useState } from "preact/hooks";
import { get, post } from "../api";
import { intOrUndefined, lines, short } from "../format";
import type { Image, Snapshot, TimeoutAction, Vm } from "../types";
import { ErrorLine, Field, useLoad, useSubmit } from "../components/ui";

interface PeerRow {
  alias: string;
  vmId: string;
  sourceMode: "hidden" | "mounted";
}

interface MetaRow {
  key: string;
  value: string;
}

export function VmCreate(props: { vms: Vm[]; onCreated: (vm: Vm) => void; snapshotId?: string }) {
  const choices = useLoad(async () => {
    const [images, snaps] = await Promise.all([
      get<Image[]>("/v1/images"),
      get<Snapshot[]>("/v1/snapshots?scope=user"),
    ]);
    return { images, snaps };
  });
  const [cpu, setCpu] = useState("1");
  const [mem, setMem] = useState("512");
  const [disk, setDisk] = useState("");
  const [imageId, setImageId] = useState("");
  const [snapshotId, setSnapshotId] = useState(props.snapshotId ?? "");
  const [internet, setInternet] = useState(false);
  const [allowIps, setAllowIps] = useState("");
  const [secretEnv, setSecretEnv] = useState("");
  const [peers, setPeers] = useState<PeerRow[]>([]);
  const [lifetime, setLifetime] = useState("");
  const [action, setAction] = useState<TimeoutAction>("destroy");
  const [meta, setMeta] = useState<MetaRow[]>([]);
  const { busy, error, run } = useSubmit();

  const submit = async (e: Event) => {
    e.preventDefault();
    const body: Record<string, unknown> = {
      cpu: intOrUndefined(cpu),
      memMb: intOrUndefined(mem),
      diskSizeMb: intOrUndefined(disk),
      outboundInternet: internet,
      allowIps: lines(allowIps),
    };
    if (imageId) body.imageId = imageId;
    if (snapshotId) body.userOverlaySnapshotId = snapshotId;
    const secrets = secretEnv.split("\n").filter((l) => l.trim() !== "");
    if (secrets.length) body.secretEnv = secrets;
    if (peers.length) body.peerLinks = peers;
    // Blank: not sent (no deadline, or the manager's DEFAULT_VM_TIMEOUT_SEC); "destroy" is the default.
    const timeoutSec = intOrUndefined(lifetime);
    if (timeoutSec !== undefined) body.timeoutSec = timeoutSec;
    if (action !== "destroy") body.timeoutAction = action;
    // Rows with neither key nor value are skipped; the manager checks the rest (its message shows).
    const metadata: Record<string, string> = {};
    for (const r of meta) if (r.key.trim() !== "" || r.value !== "") metadata[r.key.trim()] = r.value;
    if (Object.keys(metadata).length) body.metadata = metadata;
    await run(async () => props.onCreated(await post<Vm>("/v1/vms", body)));
  };
  const setMetaRow = (i: number, p: Partial<MetaRow>) =>
    setMeta(meta.map((r, j) => (j === i ? { ...r, ...p } : r)));
  const setPeer = (i: number, p: Partial<PeerRow>) =>
    setPeers(peers.map((r, j) => (j === i ? { ...r, ...p } : r)));
  const images = choices.data?.images.filter((i) => i.hasKernel && i.hasRootfs) ?? [];
  return (
    <form class="card form" onSubmit={submit} data-testid="vm-create-form">
      <h2>New VM</h2>
      <div class="fields">
        <Field label="vCPUs" name="cpu" type="number" min={1} required value={cpu} onInput={setCpu} />
        <Field label="Memory (MiB)" name="memMb" type="number" min={128} required value={mem} onInput={setMem} />
        <Field label="Disk (MiB)" name="diskSizeMb" type="number" min={64} placeholder="default" value={disk} onInput={setDisk} />
        <label>
          Image
          <select name="imageId" value={imageId} onChange={(e) => setImageId(e.currentTarget.value)}>
            <option value="">{snapshotId ? "the snapshot's image" : "default image"}</option>
            {images.map((i) => (
              <option value={i.id} key={i.id}>
                {i.name}
                {i.isDefault ? " (default)" : ""}
              </option>
            ))}
          </select>
        </label>
        <label>
          Restore from snapshot
          <select name="userOverlaySnapshotId" value={snapshotId} onChange={(e) => setSnapshotId(e.currentTarget.value)}>
            <option value="">none (fresh disk)</option>
            {choices.data?.snaps.map((s) => (
              <option value={s.id} key={s.id}>
                {short(s.id)} · {s.cpu} vCPU / {s.memMb} MiB{s.sourceVmId ? ` · from ${short(s.sourceVmId)}` : ""}
              </option>
            ))}
          </select>
        </label>
        <label class="check">
          <input name="outboundInternet" type="checkbox" checked={internet} onChange={(e) => setInternet(e.currentTarget.checked)} />
          Outbound internet
        </label>
        <Field
          label="Lifetime (seconds)"
          name="timeoutSec"
          type="number"
          min={1}
          placeholder="no deadline"
          value={lifetime}
          onInput={setLifetime}
        />
        <label>
          At the deadline
          <select name="timeoutAction" value={action} onChange={(e) => setAction(e.currentTarget.value as TimeoutAction)}>
            <option value="destroy">destroy</option>
            <option value="pause">pause</option>
          </select>
        </label>
      </div>
      <div class="meta-rows" data-testid="vm-create-metadata">
        <div class="small muted">Metadata (key=value labels, filterable in the list)</div>
        {meta.map((r, i) => (
          <div class="row" key={i}>
            <input
              name="metaKey"
              placeholder="key"
              maxLength={64}
              value={r.key}
              onInput={(e) => setMetaRow(i, { key: e.currentTarget.value })}
              data-testid="vm-meta-key"
            />
            <input
              name="metaValue"
              placeholder="value"
              maxLength={512}
              value={r.value}
              onInput={(e) => setMetaRow(i, { value: e.currentTarget.value })}
              data-testid="vm-meta-value"
            />
            <button type="button" onClick={() => setMeta(meta.filter((_, j) => j !== i))} data-testid="vm-meta-remove">
              Remove
            </button>
          </div>
        ))}
        <button type="button" onClick={() => setMeta([...meta, { key: "", value: "" }])} data-testid="vm-meta-add">
          Add metadata
        </button>
      </div>
      <details>
        <summary>Network allowlist, secrets, peers</summary>
        <div class="fields">
          <Field label="Allowed IPs / CIDRs (one per line)" name="allowIps" rows={3} value={allowIps} onInput={setAllowIps} />
          <Field label="Secret env (KEY=value per line; never shown again)" name="secretEnv" rows={3} value={secretEnv} onInput={setSecretEnv} />
        </div>
        <div class="peers">
          <div class="small muted">Peer links</div>
          {peers.map((p, i) => (
            <div class="row" key={i}>
              <input placeholder="alias" value={p.alias} onInput={(e) => setPeer(i, { alias: e.currentTarget.value })} />
              <select value={p.vmId} onChange={(e) => setPeer(i, { vmId: e.currentTarget.value })}>
                <option value="">provider VM…</option>
                {props.vms.map((v) => (
                  <option value={v.id} key={v.id}>
                    {short(v.id)} ({v.state})
                  </option>
                ))}
              </select>
              <select
                value={p.sourceMode}
                onChange={(e) => setPeer(i, { sourceMode: e.currentTarget.value as PeerRow["sourceMode"] })}
              >
                <option value="hidden">hidden</option>
                <option value="mounted">mounted</option>
              </select>
              <button type="button" onClick={() => setPeers(peers.filter((_, j) => j !== i))}>
                Remove
              </button>
            </div>
          ))}
          <button type="button" onClick={() => setPeers([...peers, { alias: "", vmId: "", sourceMode: "hidden" }])}>
            Add peer link
          </button>
        </div>
      </details>
      <ErrorLine text={error} />
      <div class="row">
        <button class="primary" type="submit" disabled={busy} data-testid="vm-create-submit">
          {busy ? "Creating… (booting the guest)" : "Create VM"}
        </button>
      </div>
    </form>
  );
}
