// What touches the local disk. node: modules are imported on first use, so the rest of the SDK loads
// in any runtime with fetch; Node and Deno both provide them.
import { type TarEntry, basename, dirname, remoteAbs, tar, untar, gzip, gunzip } from "./archive.js";

/** A local file or directory: a path string or a file: URL. */
export type LocalPath = string | URL;
/** What `files.upload` and the image uploads take: bytes, or a local path. */
export type Source = Uint8Array | ArrayBuffer | LocalPath;

const fs = () => import("node:fs");
const pathMod = () => import("node:path");

export function isBytes(s: Source): s is Uint8Array | ArrayBuffer {
  return s instanceof Uint8Array || s instanceof ArrayBuffer;
}

export function bytesOf(s: Uint8Array | ArrayBuffer): Uint8Array {
  return s instanceof Uint8Array ? s : new Uint8Array(s);
}

/** bytes or a local file → the file `dest`; a local directory → its contents merged into the
 * directory `dest`. Answers the directory to extract into and the tar.gz. */
export async function uploadArchive(dest: string, source: Source): Promise<{ target: string; body: Uint8Array }> {
  const abs = remoteAbs(dest);
  const now = Date.now() / 1000;
  if (isBytes(source)) {
    const entry: TarEntry = { name: basename(abs), type: "file", mode: 0o644, mtime: now, data: bytesOf(source) };
    return { target: dirname(abs), body: await gzip(tar([entry])) };
  }
  const { promises: fsp } = await fs();
  const st = await fsp.stat(source).catch(() => undefined);
  if (st?.isDirectory()) return { target: abs, body: await gzip(tar(await walk(source))) };
  if (!st?.isFile()) throw new Error(`no such file or directory: ${String(source)}`);
  const entry: TarEntry = { name: basename(abs), type: "file", mode: st.mode, mtime: st.mtimeMs / 1000, data: await fsp.readFile(source) };
  return { target: dirname(abs), body: await gzip(tar([entry])) };
}

/** The tree under `root`, sorted, as archive entries. The agent refuses links and special files:
 * fail here with the local name instead. */
async function walk(root: LocalPath): Promise<TarEntry[]> {
  const { promises: fsp } = await fs();
  const { join } = await pathMod();
  const rootDir = root instanceof URL ? (await import("node:url")).fileURLToPath(root) : root;
  const out: TarEntry[] = [];
  async function visit(rel: string): Promise<void> {
    const names = (await fsp.readdir(join(rootDir, rel))).sort();
    for (const name of names) {
      const relName = rel ? `${rel}/${name}` : name;
      const local = join(rootDir, relName);
      const st = await fsp.lstat(local);
      if (st.isDirectory()) {
        out.push({ name: relName, type: "dir", mode: st.mode, mtime: st.mtimeMs / 1000, data: new Uint8Array() });
        await visit(relName);
      } else if (st.isFile()) {
        out.push({ name: relName, type: "file", mode: st.mode, mtime: st.mtimeMs / 1000, data: await fsp.readFile(local) });
      } else {
        throw new Error(`cannot upload ${local}: only regular files and directories are allowed`);
      }
    }
  }
  await visit("");
  return out;
}

/** Extracts a downloaded tar.gz into `localDir` (created when missing); links are skipped, and no
 * entry may land outside `localDir`, since archives come from a sandbox. Answers its absolute path. */
export async function extract(archive: Uint8Array, localDir: LocalPath): Promise<string> {
  const { promises: fsp } = await fs();
  const { resolve, sep } = await pathMod();
  const dir = localDir instanceof URL ? (await import("node:url")).fileURLToPath(localDir) : localDir;
  const root = resolve(dir);
  const entries = untar(await gunzip(archive));
  for (const e of entries) {
    const target = resolve(root, e.name);
    if (target !== root && !target.startsWith(root + sep)) throw new Error(`archive entry escapes ${root}: ${e.name}`);
  }
  await fsp.mkdir(root, { recursive: true });
  for (const e of entries) {
    const target = resolve(root, e.name);
    if (e.type === "dir") {
      await fsp.mkdir(target, { recursive: true });
    } else if (e.type === "file") {
      await fsp.mkdir(resolve(target, ".."), { recursive: true });
      await fsp.writeFile(target, e.data);
      await fsp.chmod(target, e.mode & 0o111 ? 0o755 : 0o644);
    }
  }
  return root;
}

/** A request body that streams a local file, and its size. */
export async function fileBody(path: LocalPath, preferBlob = true): Promise<{ body: BodyInit; size: number; stream: boolean }> {
  const f = await fs();
  const size = (await f.promises.stat(path)).size;
  // A Blob backed by the file (Node ≥ 19.8) streams from disk and carries its length; elsewhere a
  // ReadableStream does, with the length sent as a header.
  if (preferBlob && typeof f.openAsBlob === "function") return { body: await f.openAsBlob(path), size, stream: false };
  const { Readable } = await import("node:stream");
  const body = Readable.toWeb(f.createReadStream(path)) as unknown as ReadableStream<Uint8Array>;
  return { body, size, stream: true };
}
