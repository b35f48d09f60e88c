// The files routes take and give tar.gz. A small ustar writer and reader plus the platform's
// (Compression|Decompression)Stream keep the SDK free of dependencies and of node: imports, so this
// works wherever fetch does.

export interface TarEntry {
  /** Relative path; directories have no trailing slash. */
  name: string;
  type: "file" | "dir" | "symlink" | "hardlink" | "other";
  mode: number;
  /** Seconds since the epoch. */
  mtime: number;
  data: Uint8Array;
}

export const WORKSPACE = "/workspace";
const BLOCK = 512;
const enc = new TextEncoder();
const dec = new TextDecoder();

/** posixpath.normpath: collapses `//`, `.` and `..` (not above the root). */
export function normPosix(path: string): string {
  const abs = path.startsWith("/");
  const out: string[] = [];
  for (const part of path.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === ".." && out.length && out[out.length - 1] !== "..") out.pop();
    else if (part !== ".." || !abs) out.push(part);
  }
  const joined = out.join("/");
  return abs ? "/" + joined : joined || ".";
}

/** A sandbox path as the agent sees it: relative paths are under /workspace. */
export function remoteAbs(path: string): string {
  return normPosix(path.startsWith("/") ? path : `${WORKSPACE}/${path}`);
}

export function basename(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

export function dirname(path: string): string {
  const i = path.lastIndexOf("/");
  return i <= 0 ? (i === 0 ? "/" : ".") : path.slice(0, i);
}

// --- writing -------------------------------------------------------------------------------------

function put(h: Uint8Array, offset: number, len: number, value: string): void {
  const b = enc.encode(value);
  if (b.length > len) throw new RangeError(`tar header field too long: ${value}`);
  h.set(b, offset);
}

function octal(h: Uint8Array, offset: number, len: number, n: number): void {
  put(h, offset, len, n.toString(8).padStart(len - 1, "0") + "\0");
}

function header(name: string, type: string, mode: number, size: number, mtime: number, prefix = ""): Uint8Array {
  const h = new Uint8Array(BLOCK);
  put(h, 0, 100, name);
  octal(h, 100, 8, mode & 0o7777);
  octal(h, 108, 8, 0);
  octal(h, 116, 8, 0);
  octal(h, 124, 12, size);
  octal(h, 136, 12, Math.max(0, Math.floor(mtime)));
  h.fill(0x20, 148, 156); // the checksum counts its own field as spaces
  put(h, 156, 1, type);
  put(h, 257, 8, "ustar\x0000");
  put(h, 345, 155, prefix);
  let sum = 0;
  for (const b of h) sum += b;
  put(h, 148, 8, sum.toString(8).padStart(6, "0") + "\0 ");
  return h;
}

function padded(data: Uint8Array): Uint8Array[] {
  const rest = data.length % BLOCK;
  return rest ? [data, new Uint8Array(BLOCK - rest)] : [data];
}

/** A pax record `"<len> key=value\n"`, where len counts the whole record, its own digits included. */
function paxRecord(key: string, value: string): Uint8Array {
  const body = enc.encode(` ${key}=${value}\n`).length;
  let len = body + 1;
  while (String(len).length + body !== len) len = String(len).length + body;
  return enc.encode(`${len} ${key}=${value}\n`);
}

/** Fits `path` into ustar's name (100 bytes) and prefix (155 bytes) fields, or answers null. */
function split(path: string): [string, string] | null {
  if (enc.encode(path).length <= 100) return [path, ""];
  for (let i = path.indexOf("/"); i > 0; i = path.indexOf("/", i + 1)) {
    const prefix = path.slice(0, i), name = path.slice(i + 1);
    if (enc.encode(prefix).length <= 155 && enc.encode(name).length <= 100 && name) return [name, prefix];
  }
  return null;
}

/** An uncompressed ustar archive of files and directories; longer names get a pax header. */
export function tar(entries: readonly TarEntry[]): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const e of entries) {
    if (e.type !== "file" && e.type !== "dir") throw new TypeError(`cannot archive a ${e.type}: ${e.name}`);
    const path = e.type === "dir" ? `${e.name}/` : e.name;
    const size = e.type === "file" ? e.data.length : 0;
    let fit = split(path);
    if (!fit) {
      const pax = paxRecord("path", path);
      parts.push(header(`PaxHeader/${basename(e.name)}`.slice(0, 99), "x", 0o644, pax.length, e.mtime), ...padded(pax));
      fit = [basename(e.name).slice(0, 99), ""];
    }
    parts.push(header(fit[0], e.type === "dir" ? "5" : "0", e.mode, size, e.mtime, fit[1]));
    if (size) parts.push(...padded(e.data));
  }
  parts.push(new Uint8Array(2 * BLOCK));
  return concat(parts);
}

// --- reading -------------------------------------------------------------------------------------

function cstr(b: Uint8Array, offset: number, len: number): string {
  const field = b.subarray(offset, offset + len);
  const end = field.indexOf(0);
  return dec.decode(end < 0 ? field : field.subarray(0, end));
}

function number(b: Uint8Array, offset: number, len: number): number {
  if ((b[offset] ?? 0) & 0x80) {
    // GNU base-256, for values that do not fit in octal
    let n = (b[offset] ?? 0) & 0x7f;
    for (let i = 1; i < len; i++) n = n * 256 + (b[offset + i] ?? 0);
    return n;
  }
  const s = cstr(b, offset, len).trim();
  return s ? parseInt(s, 8) : 0;
}

function paxPath(data: Uint8Array): string | undefined {
  let path: string | undefined;
  for (let i = 0; i < data.length; ) {
    const space = data.indexOf(0x20, i);
    const len = parseInt(dec.decode(data.subarray(i, space)), 10);
    if (space < 0 || !(len > 0)) break;
    const record = dec.decode(data.subarray(space + 1, i + len - 1));
    const eq = record.indexOf("=");
    if (record.slice(0, eq) === "path") path = record.slice(eq + 1);
    i += len;
  }
  return path;
}

const TYPES: Record<string, TarEntry["type"]> = { "0": "file", "\0": "file", "7": "file", "5": "dir", "2": "symlink", "1": "hardlink" };

/** The entries of a ustar, pax or GNU archive (what the agent sends: GNU with long-name entries). */
export function untar(archive: Uint8Array): TarEntry[] {
  const out: TarEntry[] = [];
  let longName: string | undefined;
  for (let off = 0; off + BLOCK <= archive.length; ) {
    const h = archive.subarray(off, off + BLOCK);
    if (h.every((b) => b === 0)) break;
    const size = number(h, 124, 12);
    const type = String.fromCharCode(h[156] ?? 0);
    const data = archive.subarray(off + BLOCK, off + BLOCK + size);
    if (data.length < size) throw new Error("truncated tar archive");
    off += BLOCK + Math.ceil(size / BLOCK) * BLOCK;
    if (type === "L") {
      longName = cstr(data, 0, data.length);
      continue;
    }
    if (type === "x") {
      longName = paxPath(data) ?? longName;
      continue;
    }
    if (type === "g" || type === "K") continue;
    let name = cstr(h, 0, 100);
    const prefix = cstr(h, 257, 6) === "ustar" && h[262] === 0 ? cstr(h, 345, 155) : "";
    if (prefix) name = `${prefix}/${name}`;
    name = longName ?? name;
    longName = undefined;
    if (name.length > 1 && name.endsWith("/")) name = name.replace(/\/+$/, "");
    out.push({ name, type: TYPES[type] ?? "other", mode: number(h, 100, 8), mtime: number(h, 136, 12), data });
  }
  return out;
}

/** The one file a download of `path` gives: a file comes under its base name, while a directory's
 * contents come as ./entries, so a directory holding one file is not mistaken for it. */
export function singleFile(entries: readonly TarEntry[], path: string): Uint8Array {
  const members = entries.filter((e) => e.name !== "." && e.name !== "./");
  const m = members[0];
  if (members.length !== 1 || !m || m.type !== "file" || m.name !== basename(normPosix(path))) {
    throw new Error(`${path} is not a single file; use downloadTo() or downloadArchive()`);
  }
  return m.data;
}

// --- gzip ----------------------------------------------------------------------------------------

async function through(data: Uint8Array, stream: GenericTransformStream): Promise<Uint8Array> {
  const body = new Blob([data as Uint8Array<ArrayBuffer>]).stream().pipeThrough(stream);
  return new Uint8Array(await new Response(body).arrayBuffer());
}

export function gzip(data: Uint8Array): Promise<Uint8Array> {
  return through(data, new CompressionStream("gzip"));
}

export function gunzip(data: Uint8Array): Promise<Uint8Array> {
  return through(data, new DecompressionStream("gzip"));
}

export function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}
