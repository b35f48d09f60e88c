// Files in and out of /workspace (docs/reference/api.md §3.9): picked files are packed into a
// tar.gz in the browser; downloads are saved and their entries listed, small text files previewed
// (as text).
import { useState } from "preact/hooks";
import { request } from "../api";
import { bytes } from "../format";
import { toast } from "../toasts";
import { gunzip, gzip, tar, untar, type TarEntry } from "../tar";
import { ErrorLine, Field, useSubmit } from "../components/ui";

const PREVIEW_MAX = 64 * 1024;

function save(blob: Blob, name: string): void {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

function filenameOf(resp: Response, fallback: string): string {
  const m = /filename="([^"]+)"/.exec(resp.headers.get("Content-Disposition") ?? "");
  return m ? m[1] : fallback;
}

function preview(e: TarEntry): string | null {
  if (e.kind !== "file" || e.size > PREVIEW_MAX) return null;
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(e.data);
  } catch {
    return null;
  }
}

function Upload(props: { id: string; disabled: boolean }) {
  const [files, setFiles] = useState<File[]>([]);
  const [dest, setDest] = useState("/workspace");
  const { busy, error, run } = useSubmit();
  const [done, setDone] = useState<string | null>(null);
  const submit = async (e: Event) => {
    e.preventDefault();
    setDone(null);
    await run(async () => {
      const archive = await gzip(await tar(files));
      await request(
        "POST",
        `/v1/vms/${props.id}/files/upload?dest=${encodeURIComponent(dest)}`,
        archive,
        "application/gzip",
      );
      setDone(`Uploaded ${files.map((f) => f.name).join(", ")} to ${dest}`);
    });
  };
  return (
    <form class="card form" onSubmit={submit} data-testid="upload-form">
      <h3>Upload</h3>
      <div class="fields">
        <label>
          Files
          <input
            name="files"
            type="file"
            multiple
            data-testid="upload-input"
            onChange={(e) => setFiles(Array.from(e.currentTarget.files ?? []))}
          />
        </label>
        <Field label="Into directory" name="dest" value={dest} onInput={setDest} />
      </div>
      <div class="row">
        <button class="primary" type="submit" disabled={props.disabled || busy || files.length === 0} data-testid="upload-submit">
          {busy ? "Uploading…" : "Upload"}
        </button>
      </div>
      <ErrorLine text={error} />
      {done ? <p class="ok-text" data-testid="upload-done">{done}</p> : null}
    </form>
  );
}

function Download(props: { id: string; disabled: boolean }) {
  const [path, setPath] = useState("");
  const { busy, error, run } = useSubmit();
  const [got, setGot] = useState<{ name: string; size: number; entries: TarEntry[] } | null>(null);
  const submit = async (e: Event) => {
    e.preventDefault();
    setGot(null);
    await run(async () => {
      const resp = await request("GET", `/v1/vms/${props.id}/files/download?path=${encodeURIComponent(path)}`);
      const blob = await resp.blob();
      const name = filenameOf(resp, "download.tar.gz");
      save(blob, name);
      let entries: TarEntry[] = [];
      try {
        entries = untar(await gunzip(blob));
      } catch {
        toast("Saved, but the archive could not be listed", "error");
      }
      setGot({ name, size: blob.size, entries });
    });
  };
  return (
    <form class="card form" onSubmit={submit} data-testid="download-form">
      <h3>Download</h3>
      <Field label="File or directory (under /workspace)" name="path" placeholder="/workspace/out.txt" value={path} onInput={setPath} />
      <div class="row">
        <button class="primary" type="submit" disabled={props.disabled || busy || !path.trim()} data-testid="download-submit">
          {busy ? "Downloading…" : "Download .tar.gz"}
        </button>
      </div>
      <ErrorLine text={error} />
      {got ? (
        <div data-testid="download-result">
          <p class="small">
            Saved <span class="mono">{got.name}</span> ({bytes(got.size)}), {got.entries.length} entries:
          </p>
          <ul class="entries">
            {got.entries.map((en) => {
              const text = preview(en);
              return (
                <li key={en.name}>
                  <span class="mono" data-testid="download-entry">{en.name}</span>{" "}
                  <span class="muted small">
                    {en.kind} · {bytes(en.size)}
                  </span>
                  {text !== null ? <pre class="preview" data-testid="download-preview">{text}</pre> : null}
                </li>
              );
            })}
          </ul>
        </div>
      ) : null}
    </form>
  );
}

export function FilesBox(props: { id: string; disabled: boolean }) {
  return (
    <div class="grid2">
      <Upload {...props} />
      <Download {...props} />
    </div>
  );
}
