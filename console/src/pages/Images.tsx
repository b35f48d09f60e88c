// Images (docs/reference/api.md §5): create, upload parts with a progress bar, set default, delete.
import { useState } from "preact/hooks";
import { del, post, putWithProgress } from "../api";
import { useActivity } from "../events";
import { bytes, time } from "../format";
import type { Image } from "../types";
import { ConfirmButton, ErrorLine, Field, LoadError, PageHead, useAction, useGet, useSubmit } from "../components/ui";

const PARTS = [
  ["kernel", "Kernel (vmlinux or bzImage)"],
  ["rootfs", "Root filesystem (ext4)"],
  ["initrd", "Initrd (cpio)"],
  ["bundle", "Bundle (zip of vmlinux, rootfs.ext4, initrd)"],
] as const;

function UploadPart(props: { image: Image; onDone: () => void }) {
  const [part, setPart] = useState<(typeof PARTS)[number][0]>("kernel");
  const [file, setFile] = useState<File | null>(null);
  const [progress, setProgress] = useState<[number, number] | null>(null);
  const { busy, error, run } = useSubmit();
  const submit = async (e: Event) => {
    e.preventDefault();
    if (!file) return;
    setProgress([0, file.size]);
    await run(async () => {
      await putWithProgress(`/v1/images/${props.image.id}/${part}`, file, (a, b) => setProgress([a, b]));
      props.onDone();
    });
    setProgress(null);
  };
  return (
    <form class="row upload-part" onSubmit={submit} data-testid="image-upload-form">
      <select value={part} onChange={(e) => setPart(e.currentTarget.value as typeof part)} data-testid="image-part">
        {PARTS.map(([p, label]) => (
          <option value={p} key={p}>
            {label}
          </option>
        ))}
      </select>
      <input type="file" data-testid="image-file" onChange={(e) => setFile(e.currentTarget.files?.[0] ?? null)} />
      <button type="submit" disabled={!file || busy} data-testid="image-upload">
        Upload
      </button>
      {progress ? (
        <span class="row">
          <progress max={progress[1] || 1} value={progress[0]} data-testid="image-progress" />
          <span class="small muted">
            {bytes(progress[0])} / {bytes(progress[1])}
          </span>
        </span>
      ) : null}
      <ErrorLine text={error} />
    </form>
  );
}

function parts(i: Image): string {
  const have = [i.hasKernel && `kernel${i.kernelFormat ? ` (${i.kernelFormat})` : ""}`, i.hasRootfs && `rootfs ${bytes(i.baseRootfsBytes)}`, i.hasInitrd && "initrd"];
  return have.filter(Boolean).join(" · ") || "no files yet";
}

function CreateImage(props: { onCreated: () => void }) {
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const { busy, error, run } = useSubmit();
  const submit = async (e: Event) => {
    e.preventDefault();
    await run(async () => {
      await post("/v1/images", { name, description });
      setName("");
      setDescription("");
      props.onCreated();
    });
  };
  return (
    <form class="card form" onSubmit={submit} data-testid="image-create-form">
      <h2>New image</h2>
      <div class="fields">
        <Field label="Name" name="name" required maxLength={200} value={name} onInput={setName} />
        <Field label="Description" name="description" required maxLength={2000} value={description} onInput={setDescription} />
      </div>
      <ErrorLine text={error} />
      <button class="primary" type="submit" disabled={busy} data-testid="image-create-submit">
        Create image
      </button>
    </form>
  );
}

export function Images() {
  const images = useGet<Image[]>("/v1/images");
  const [creating, setCreating] = useState(false);
  const [busy, run] = useAction();
  useActivity(["image", "snapshot"], () => void images.reload());
  const act = (f: () => Promise<unknown>) => void run(f).then(() => images.reload());
  return (
    <div data-testid="page-images">
      <PageHead title="Images">
        <button class="primary" onClick={() => setCreating(!creating)} data-testid="image-new">
          {creating ? "Close" : "New image"}
        </button>
      </PageHead>
      {creating ? <CreateImage onCreated={() => void images.reload()} /> : null}
      <LoadError error={images.error} what="Images" />
      {(images.data ?? []).map((i) => (
        <section class="card image" key={i.id} data-image-id={i.id} data-testid="image-card">
          <div class="row between">
            <h3>
              {i.name} {i.isDefault ? <span class="badge ok">default</span> : null}
              {i.builtIn ? <span class="badge">built-in</span> : null}
            </h3>
            <span class="row">
              {!i.isDefault ? (
                <button disabled={busy || !i.hasKernel || !i.hasRootfs} onClick={() => act(() => post(`/v1/images/${i.id}/set-default`))} data-testid="image-set-default">
                  Set default
                </button>
              ) : null}
              {i.hasInitrd && !i.builtIn ? (
                <ConfirmButton label="Remove initrd" disabled={busy} onConfirm={() => act(() => del(`/v1/images/${i.id}/initrd`))} />
              ) : null}
              <ConfirmButton label="Delete" disabled={busy} testid="image-delete" onConfirm={() => act(() => del(`/v1/images/${i.id}`))} />
            </span>
          </div>
          <p class="muted">{i.description}</p>
          <p class="small">
            <span class="mono">{i.id}</span> · {parts(i)} · created {time(i.createdAt)}
            {i.seedStatus ? ` · template ${i.seedStatus}` : ""}
          </p>
          {i.seedError ? <p class="error small">{i.seedError}</p> : null}
          {!i.builtIn ? <UploadPart image={i} onDone={() => void images.reload()} /> : null}
        </section>
      ))}
    </div>
  );
}
