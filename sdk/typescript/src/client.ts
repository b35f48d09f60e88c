import { APIConnectionError, type RdsError, describe, errorFor } from "./errors.js";
import { type Source, bytesOf, fileBody, isBytes } from "./local.js";
import { Sandbox } from "./sandbox.js";
import type { CreateOptions, Image, ListFilter, Snapshot, SnapshotScope, VM } from "./types.js";
import { VERSION } from "./version.js";

export const DEFAULT_URL = "http://127.0.0.1:3000";
// Only idempotent calls are retried, and only for failures that say nothing was done or that a
// proxy/agent hiccup may clear: a repeated POST could create a second VM or run a command twice.
const RETRY_METHODS = new Set(["GET", "DELETE"]);
const RETRY_STATUSES = new Set([502, 503, 504]);

export interface ClientOptions {
  /** Default: env RDS_URL, else http://127.0.0.1:3000. */
  url?: string;
  /** Default: env RDS_API_KEY. */
  apiKey?: string;
  /** Per call; calls that take long by nature (a boot, a command with timeoutMs) wait longer. */
  timeoutMs?: number;
  /** Retries of GET and DELETE on connection failures and 502/503/504. Default 2. */
  maxRetries?: number;
  /** The fetch to use (a proxy agent, a test double). Default: the global fetch. */
  fetch?: typeof fetch;
}

export type Query = ReadonlyArray<readonly [string, string]> | Record<string, string | number | undefined>;

export interface RequestOptions {
  query?: Query;
  /** Sent as JSON. */
  json?: unknown;
  /** Sent as is (bytes, a Blob, a stream). */
  body?: BodyInit;
  headers?: Record<string, string>;
  /** Raises the client's timeout for this call. */
  timeoutMs?: number;
}

/** Reads an env var in Node or Deno, without making Deno prompt for a permission. */
export function env(name: string): string | undefined {
  const g = globalThis as {
    Deno?: { env: { get(k: string): string | undefined }; permissions?: { querySync?(d: object): { state: string } } };
    process?: { env?: Record<string, string | undefined> };
  };
  try {
    if (g.Deno) {
      const state = g.Deno.permissions?.querySync?.({ name: "env", variable: name }).state ?? "granted";
      return state === "granted" ? g.Deno.env.get(name) : undefined;
    }
    return g.process?.env?.[name];
  } catch {
    return undefined;
  }
}

function queryString(q: Query | undefined): string {
  if (!q) return "";
  const pairs = Array.isArray(q) ? (q as ReadonlyArray<readonly [string, string]>) : Object.entries(q);
  const p = new URLSearchParams();
  for (const [k, v] of pairs) if (v !== undefined) p.append(k, String(v));
  const s = p.toString();
  return s ? `?${s}` : "";
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const backoff = (attempt: number) => Math.min(250 * 2 ** attempt, 2000);

async function errorFrom(resp: Response): Promise<RdsError> {
  let message = resp.statusText || "HTTP error";
  let requestId = resp.headers.get("x-request-id") ?? undefined;
  const text = await resp.text().catch(() => "");
  try {
    const body = JSON.parse(text) as { message?: unknown; requestId?: unknown };
    if (typeof body.message === "string") message = body.message;
    if (typeof body.requestId === "string") requestId = body.requestId;
  } catch {
    if (text) message = text.slice(0, 2048);
  }
  return errorFor(resp.status, message, requestId, resp.headers.get("retry-after"));
}

/** Talks to one manager. Holds no connection of its own (fetch pools them), so it needs no closing. */
export class Client {
  readonly url: string;
  readonly apiKey: string | undefined;
  readonly timeoutMs: number;
  readonly maxRetries: number;
  readonly sandboxes: Sandboxes;
  readonly images: Images;
  readonly snapshots: Snapshots;
  readonly #fetch: typeof fetch;
  readonly #headers: Record<string, string>;

  constructor(options: ClientOptions = {}) {
    this.url = (options.url || env("RDS_URL") || DEFAULT_URL).replace(/\/+$/, "");
    this.apiKey = options.apiKey ?? env("RDS_API_KEY");
    this.timeoutMs = options.timeoutMs ?? 60_000;
    this.maxRetries = options.maxRetries ?? 2;
    this.#fetch = options.fetch ?? ((input, init) => fetch(input, init));
    this.#headers = { "User-Agent": `run-dat-sheesh-typescript/${VERSION}` };
    if (this.apiKey) this.#headers["X-API-Key"] = this.apiKey;
    this.sandboxes = new Sandboxes(this);
    this.images = new Images(this);
    this.snapshots = new Snapshots(this);
  }

  /** Any route, with the client's key, timeouts, retries and error mapping: a failure throws an
   * RdsError subclass, a success answers the Response with its body unread. */
  async request(method: string, path: string, options: RequestOptions = {}): Promise<Response> {
    method = method.toUpperCase();
    const url = this.url + path + queryString(options.query);
    const headers: Record<string, string> = { ...this.#headers };
    let body = options.body;
    if (options.json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(options.json);
    }
    Object.assign(headers, options.headers);
    const timeoutMs = Math.max(this.timeoutMs, options.timeoutMs ?? 0);
    const retry = RETRY_METHODS.has(method);
    for (let attempt = 0; ; attempt++) {
      let resp: Response;
      try {
        const init: RequestInit & { duplex?: "half" } = { method, headers, signal: AbortSignal.timeout(timeoutMs) };
        if (body !== undefined) init.body = body;
        // A stream body needs half duplex in Node's fetch (and is never retried: it is consumed).
        if (body instanceof ReadableStream) init.duplex = "half";
        resp = await this.#fetch(url, init);
      } catch (e) {
        const timedOut = e instanceof Error && (e.name === "TimeoutError" || e.name === "AbortError");
        if (!timedOut && retry && attempt < this.maxRetries) {
          await sleep(backoff(attempt));
          continue;
        }
        const why = timedOut ? `no answer within ${timeoutMs} ms` : describe(e);
        throw new APIConnectionError(`${method} ${path}: ${why}`, undefined, undefined, { cause: e });
      }
      if (RETRY_STATUSES.has(resp.status) && retry && attempt < this.maxRetries) {
        await resp.body?.cancel();
        await sleep(backoff(attempt));
        continue;
      }
      if (resp.status >= 400) throw await errorFrom(resp);
      return resp;
    }
  }

  /** `request`, answering the parsed JSON body. */
  async json<T>(method: string, path: string, options?: RequestOptions): Promise<T> {
    return (await (await this.request(method, path, options)).json()) as T;
  }

  /** `request` for routes that answer 204: the body is drained. */
  async send(method: string, path: string, options?: RequestOptions): Promise<void> {
    await (await this.request(method, path, options)).body?.cancel();
  }
}

export class Sandboxes {
  constructor(private readonly client: Client) {}

  /** Creates a VM and answers once it is RUNNING. `snapshotId` restores a user snapshot. */
  async create(options: CreateOptions = {}): Promise<Sandbox> {
    const { cpu = 1, memMb = 256, snapshotId, ...rest } = options;
    const json = { cpu, memMb, ...rest, userOverlaySnapshotId: snapshotId };
    // The answer comes once the guest is RUNNING: a cold boot under emulation takes a while.
    return new Sandbox(this.client, await this.client.json<VM>("POST", "/v1/vms", { json, timeoutMs: 300_000 }));
  }

  /** VMs, newest first; a VM is listed when it is in one of `state` and has every `metadata` pair. */
  async list(filter: ListFilter = {}): Promise<Sandbox[]> {
    const query: [string, string][] = [];
    const states = filter.state === undefined ? [] : Array.isArray(filter.state) ? filter.state : [filter.state];
    for (const s of states) query.push(["state", s]);
    for (const [k, v] of Object.entries(filter.metadata ?? {})) query.push([`metadata.${k}`, v]);
    const vms = await this.client.json<VM[]>("GET", "/v1/vms", { query });
    return vms.map((vm) => new Sandbox(this.client, vm));
  }

  async get(id: string): Promise<Sandbox> {
    return new Sandbox(this.client, await this.client.json<VM>("GET", `/v1/vms/${encodeURIComponent(id)}`));
  }
}

const PART_TYPES = {
  kernel: "application/octet-stream",
  rootfs: "application/octet-stream",
  initrd: "application/octet-stream",
  bundle: "application/zip",
} as const;

export class Images {
  constructor(private readonly client: Client) {}

  list(): Promise<Image[]> {
    return this.client.json<Image[]>("GET", "/v1/images");
  }

  get(id: string): Promise<Image> {
    return this.client.json<Image>("GET", `/v1/images/${encodeURIComponent(id)}`);
  }

  create(name: string, description: string): Promise<Image> {
    return this.client.json<Image>("POST", "/v1/images", { json: { name, description } });
  }

  /** An ELF vmlinux or bzImage, as bytes or a local path (streamed from disk). Answers the image. */
  uploadKernel(id: string, source: Source): Promise<Image> {
    return this.#put(id, "kernel", source);
  }

  /** An ext4 image, as bytes or a local path (streamed). */
  uploadRootfs(id: string, source: Source): Promise<Image> {
    return this.#put(id, "rootfs", source);
  }

  /** A newc cpio (plain or compressed), as bytes or a local path (streamed). */
  uploadInitrd(id: string, source: Source): Promise<Image> {
    return this.#put(id, "initrd", source);
  }

  /** A zip with vmlinux, initrd and/or rootfs.ext4, as bytes or a local path (streamed). */
  uploadBundle(id: string, source: Source): Promise<Image> {
    return this.#put(id, "bundle", source);
  }

  async deleteInitrd(id: string): Promise<void> {
    await this.client.send("DELETE", `/v1/images/${encodeURIComponent(id)}/initrd`);
  }

  async setDefault(id: string): Promise<void> {
    await this.client.send("POST", `/v1/images/${encodeURIComponent(id)}/set-default`);
  }

  async delete(id: string): Promise<void> {
    await this.client.send("DELETE", `/v1/images/${encodeURIComponent(id)}`);
  }

  async #put(id: string, part: keyof typeof PART_TYPES, source: Source): Promise<Image> {
    const headers: Record<string, string> = { "Content-Type": PART_TYPES[part] };
    let body: BodyInit;
    if (isBytes(source)) {
      body = bytesOf(source) as Uint8Array<ArrayBuffer>; // a SharedArrayBuffer view is the caller's bug
    } else {
      const file = await fileBody(source);
      body = file.body;
      if (file.stream) headers["Content-Length"] = String(file.size);
    }
    await this.client.send("PUT", `/v1/images/${encodeURIComponent(id)}/${part}`, { body, headers, timeoutMs: 600_000 });
    return this.get(id);
  }
}

export class Snapshots {
  constructor(private readonly client: Client) {}

  /** `user` (the default), `internal` (templates) or `all`; newest first. */
  list(options: { scope?: SnapshotScope } = {}): Promise<Snapshot[]> {
    return this.client.json<Snapshot[]>("GET", "/v1/snapshots", { query: { scope: options.scope } });
  }

  get(id: string): Promise<Snapshot> {
    return this.client.json<Snapshot>("GET", `/v1/snapshots/${encodeURIComponent(id)}`);
  }

  async delete(id: string): Promise<void> {
    await this.client.send("DELETE", `/v1/snapshots/${encodeURIComponent(id)}`);
  }
}
