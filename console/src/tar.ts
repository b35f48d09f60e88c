// Just enough tar (POSIX ustar) and gzip for `files/upload` and `files/download`
// (docs/reference/api.md §3.9): the browser's CompressionStream does the gzip, these functions the
// 512-byte blocks.

const BLOCK = 512;
const enc = new TextEncoder();

function field(h: Uint8Array, at: number, len: number, text: string): void {
  const b = enc.encode(text);
  if (b.length > len) throw new Error(`tar field too long: ${text}`);
  h.set(b, at);
}

function octal(n: number, len: number): string {
  return n.toString(8).padStart(len - 1, "0") + "\0";
}

function header(name: string, size: number, mtime: number): Uint8Array<ArrayBuffer> {
  if (enc.encode(name).length > 100) throw new Error(`File name too long for upload: ${name}`);
  const h = new Uint8Array(BLOCK);
  field(h, 0, 100, name);
  field(h, 100, 8, "0000644\0");
  field(h, 108, 8, "0001750\0");
  field(h, 116, 8, "0001750\0");
  field(h, 124, 12, octal(size, 12));
  field(h, 136, 12, octal(Math.floor(mtime / 1000), 12));
  field(h, 148, 8, "        "); // checksum is computed with this field as spaces
  h[156] = "0".charCodeAt(0);
  field(h, 257, 6, "ustar\0");
  field(h, 263, 2, "00");
  const sum = h.reduce((a, b) => a + b, 0);
  field(h, 148, 8, sum.toString(8).padStart(6, "0") + "\0 ");
  return h;
}

/** A tar archive of regular files at the archive's top level. */
export async function tar(files: File[]): Promise<Blob> {
  const parts: BlobPart[] = [];
  for (const f of files) {
    parts.push(header(f.name, f.size, f.lastModified), f);
    const pad = (BLOCK - (f.size % BLOCK)) % BLOCK;
    if (pad) parts.push(new Uint8Array(pad));
  }
  parts.push(new Uint8Array(2 * BLOCK));
  return new Blob(parts);
}

export async function gzip(data: Blob): Promise<Blob> {
  return new Response(data.stream().pipeThrough(new CompressionStream("gzip"))).blob();
}

export async function gunzip(data: Blob): Promise<Uint8Array> {
  const out = await new Response(data.stream().pipeThrough(new DecompressionStream("gzip"))).arrayBuffer();
  return new Uint8Array(out);
}

export interface TarEntry {
  name: string;
  size: number;
  kind: "file" | "dir" | "other";
  data: Uint8Array;
}

const dec = new TextDecoder();

function text(b: Uint8Array, at: number, len: number): string {
  const s = b.subarray(at, at + len);
  const end = s.indexOf(0);
  return dec.decode(end < 0 ? s : s.subarray(0, end));
}

/** The entries of a tar archive (ustar and GNU long names). */
export function untar(b: Uint8Array): TarEntry[] {
  const out: TarEntry[] = [];
  let longName: string | null = null;
  let at = 0;
  while (at + BLOCK <= b.length && b[at] !== 0) {
    const base = text(b, at, 100);
    const size = parseInt(text(b, at + 124, 12).trim() || "0", 8);
    const type = String.fromCharCode(b[at + 156] || 48);
    const prefix = text(b, at + 345, 155);
    const data = b.subarray(at + BLOCK, at + BLOCK + size);
    at += BLOCK + Math.ceil(size / BLOCK) * BLOCK;
    if (type === "L") {
      longName = dec.decode(data).replace(/\0+$/, "");
    } else if (type !== "x" && type !== "g") {
      const name = longName ?? (prefix ? `${prefix}/${base}` : base);
      longName = null;
      out.push({ name, size, kind: type === "0" ? "file" : type === "5" ? "dir" : "other", data });
    }
  }
  return out;
}
