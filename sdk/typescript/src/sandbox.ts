import "./polyfill.js";
import { gunzip, singleFile, untar } from "./archive.js";
import { Client, type ClientOptions } from "./client.js";
import { NotFoundError } from "./errors.js";
import { type LocalPath, type Source, extract, uploadArchive } from "./local.js";
import { NDJSON, readStream } from "./stream.js";
import type {
  CreateOptions,
  ExecLogPage,
  ExecOptions,
  ExecResult,
  LogType,
  Logs,
  OutputCallbacks,
  RunJsOptions,
  RunResult,
  RunTsOptions,
  Snapshot,
  SourceMode,
  TimeoutAction,
  VM,
  VmState,
} from "./types.js";

/** Where `Sandbox.create` and `Sandbox.restore` get their client: a given one, or one made from
 * these options (and RDS_URL / RDS_API_KEY). */
export type ClientChoice = ClientOptions & { client?: Client };

function split(options: CreateOptions & ClientChoice): [Client, CreateOptions] {
  const { client, url, apiKey, timeoutMs, maxRetries, fetch, ...create } = options;
  return [client ?? new Client({ url, apiKey, timeoutMs, maxRetries, fetch }), create];
}

function withOk<T extends { exitCode: number; timedOut: boolean }>(r: T): T & { readonly ok: boolean } {
  return { ...r, ok: r.exitCode === 0 && !r.timedOut };
}

// A command may take its own timeoutMs (default 30 s in the agent): wait that long and a minute more.
const runTimeout = (timeoutMs?: number) => (timeoutMs ?? 30_000) + 60_000;

/** One VM. `await using sb = await Sandbox.create()` destroys it when the block ends, also when the
 * block throws; `dispose()` does the same by hand. */
export class Sandbox implements AsyncDisposable {
  readonly client: Client;
  /** The VM as last answered by the manager; `refresh()` fetches it again. */
  info: VM;
  readonly files: Files;

  constructor(client: Client, info: VM) {
    this.client = client;
    this.info = info;
    this.files = new Files(this);
  }

  /** `new Client(options).sandboxes.create(options)`, or with `options.client`. */
  static create(options: CreateOptions & ClientChoice = {}): Promise<Sandbox> {
    const [client, create] = split(options);
    return client.sandboxes.create(create);
  }

  /** A new VM from a user snapshot; `cpu` and `memMb` default to the snapshot's. */
  static async restore(snapshotId: string, options: CreateOptions & ClientChoice = {}): Promise<Sandbox> {
    const [client, create] = split(options);
    if (create.cpu === undefined || create.memMb === undefined) {
      const snap = await client.snapshots.get(snapshotId);
      create.cpu ??= snap.cpu || 1;
      create.memMb ??= snap.memMb || 256;
    }
    return client.sandboxes.create({ ...create, snapshotId });
  }

  get id(): string {
    return this.info.id;
  }

  get state(): VmState {
    return this.info.state;
  }

  toString(): string {
    return `Sandbox(id=${this.id}, state=${this.state})`;
  }

  /** `/v1/vms/<id><suffix>` */
  path(suffix = ""): string {
    return `/v1/vms/${encodeURIComponent(this.id)}${suffix}`;
  }

  async #set(method: string, suffix: string, json?: unknown, timeoutMs?: number): Promise<VM> {
    this.info = await this.client.json<VM>(method, this.path(suffix), { json, timeoutMs });
    return this.info;
  }

  refresh(): Promise<VM> {
    return this.#set("GET", "");
  }

  /** Runs `cmd` under bash -lc as uid 1000; answers once it finished. With `onStdout` or `onStderr`
   * the call streams: they get the output as it arrives, and the answer is the same. */
  async exec(cmd: string, options: ExecOptions = {}): Promise<ExecResult> {
    const { cwd, env, timeoutMs, onStdout, onStderr } = options;
    const json = { cmd, cwd, env, timeoutMs };
    return withOk(await this.#call<ExecResult>("/exec", json, timeoutMs, { onStdout, onStderr }));
  }

  /** A command route, buffered, or streamed when a callback is given. */
  async #call<T>(suffix: string, json: object, timeoutMs: number | undefined, callbacks: OutputCallbacks): Promise<T> {
    const path = this.path(suffix);
    const options = { json, timeoutMs: runTimeout(timeoutMs) };
    if (!callbacks.onStdout && !callbacks.onStderr) return this.client.json<T>("POST", path, options);
    const resp = await this.client.request("POST", path, { ...options, headers: { Accept: NDJSON } });
    return readStream<T>(resp, callbacks, `POST ${path}`);
  }

  /** Deno runs `code` (or the file `options.path`) in the sandbox. */
  runTs(code: string, options?: Omit<RunTsOptions, "path">): Promise<RunResult>;
  runTs(options: RunTsOptions & { path: string }): Promise<RunResult>;
  runTs(code: string | RunTsOptions, options: RunTsOptions = {}): Promise<RunResult> {
    const o = typeof code === "string" ? { ...options, code } : code;
    return this.#run("run-ts", o, { denoFlags: o.denoFlags });
  }

  /** Node runs `code` (or the file `options.path`) in the sandbox. */
  runJs(code: string, options?: Omit<RunJsOptions, "path">): Promise<RunResult>;
  runJs(options: RunJsOptions & { path: string }): Promise<RunResult>;
  runJs(code: string | RunJsOptions, options: RunJsOptions = {}): Promise<RunResult> {
    const o = typeof code === "string" ? { ...options, code } : code;
    return this.#run("run-js", o, { nodeFlags: o.nodeFlags });
  }

  async #run(kind: string, o: (RunTsOptions | RunJsOptions) & { code?: string }, flags: object): Promise<RunResult> {
    if ((o.code === undefined) === (o.path === undefined)) throw new TypeError("pass exactly one of code and path");
    const json = {
      code: o.code,
      path: o.path,
      args: o.args,
      // run-ts/run-js take env as KEY=value strings, unlike exec.
      env: o.env && Object.entries(o.env).map(([k, v]) => `${k}=${v}`),
      ...flags,
      timeoutMs: o.timeoutMs,
    };
    const callbacks = { onStdout: o.onStdout, onStderr: o.onStderr };
    return withOk(await this.#call<RunResult>(`/${kind}`, json, o.timeoutMs, callbacks));
  }

  /** The tail of a VMM or console log. */
  logs(options: { type?: LogType; tail?: number } = {}): Promise<Logs> {
    return this.client.json<Logs>("GET", this.path("/logs"), { query: options });
  }

  /** The exec log, newest first; `before` is an entry id, for the next page. */
  execLogs(options: { limit?: number; type?: "all" | "exec" | "run-ts" | "run-js"; before?: string } = {}): Promise<ExecLogPage> {
    return this.client.json<ExecLogPage>("GET", this.path("/exec-logs"), { query: options });
  }

  /** Boots a STOPPED VM; answers once it is RUNNING. */
  async start(): Promise<VM> {
    await this.client.send("POST", this.path("/start"), { timeoutMs: 300_000 });
    return this.refresh();
  }

  async stop(): Promise<VM> {
    await this.client.send("POST", this.path("/stop"), { timeoutMs: 120_000 });
    return this.refresh();
  }

  /** Saves memory and device state to disk and ends the VMM; `resume()` continues. */
  pause(): Promise<VM> {
    return this.#set("POST", "/pause", undefined, 300_000);
  }

  resume(): Promise<VM> {
    return this.#set("POST", "/resume", undefined, 300_000);
  }

  /** Deadline now + `seconds` (null clears it); `action` replaces what happens then. */
  setTimeout(seconds: number | null, action?: TimeoutAction): Promise<VM> {
    return this.#set("POST", "/timeout", { timeoutSec: seconds, timeoutAction: action });
  }

  /** Merges: a string sets a key, null removes it, other keys stay. */
  setMetadata(metadata: Record<string, string | null>): Promise<VM> {
    return this.#set("PATCH", "", { metadata });
  }

  /** Rebuilds `/workspace/peers` from the linked providers as they are now; the VM must be RUNNING.
   * Each provider's workspace is downloaded and checked, so it may take a while. */
  async peersSync(): Promise<void> {
    await this.client.send("POST", this.path("/peers/sync"), { timeoutMs: 300_000 });
  }

  /** Changes the link `alias` to `hidden` or `mounted` and rebuilds `/workspace/peers` with it;
   * answers the VM with the link updated. */
  async setPeerSourceMode(alias: string, mode: SourceMode): Promise<VM> {
    const json = { sourceMode: mode };
    await this.client.send("PATCH", this.path(`/peers/${encodeURIComponent(alias)}`), { json, timeoutMs: 300_000 });
    return this.refresh();
  }

  /** A user snapshot of the VM's disk (and memory where the backend can); the VM stays RUNNING. */
  snapshot(): Promise<Snapshot> {
    return this.client.json<Snapshot>("POST", this.path("/snapshots"), { timeoutMs: 300_000 });
  }

  async destroy(options: { missingOk?: boolean } = {}): Promise<void> {
    try {
      await this.client.send("DELETE", this.path(), { timeoutMs: 120_000 });
    } catch (e) {
      if (!(options.missingOk && e instanceof NotFoundError)) throw e;
    }
  }

  /** Destroys the VM; one already gone is no error. */
  dispose(): Promise<void> {
    return this.destroy({ missingOk: true });
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }
}

/** Files in the sandbox; a relative sandbox path is under /workspace. */
export class Files {
  constructor(private readonly sandbox: Sandbox) {}

  /** Bytes or a local file → the file `dest`; a local directory (path or file: URL) → its contents
   * merged into the directory `dest`. Sent as one tar.gz of at most 10 MiB. */
  async upload(dest: string, source: Source): Promise<void> {
    const { target, body } = await uploadArchive(dest, source);
    await this.sandbox.client.send("POST", this.sandbox.path("/files/upload"), {
      query: { dest: target },
      body: body as Uint8Array<ArrayBuffer>, // what gzip() makes; TS 5.7+ wants it said for BodyInit
      headers: { "Content-Type": "application/gzip" },
      timeoutMs: 120_000,
    });
  }

  /** The tar.gz the manager answers: a directory's contents, or a file under its own name. */
  async downloadArchive(path: string): Promise<Uint8Array> {
    const resp = await this.sandbox.client.request("GET", this.sandbox.path("/files/download"), {
      query: { path },
      timeoutMs: 300_000,
    });
    return new Uint8Array(await resp.arrayBuffer());
  }

  /** The content of the file at `path` (an Error for a directory: use downloadTo). */
  async download(path: string): Promise<Uint8Array> {
    return singleFile(untar(await gunzip(await this.downloadArchive(path))), path);
  }

  /** Extracts `path` (a file, or a directory's contents) into `localDir`; links are skipped.
   * Answers the absolute local directory. */
  async downloadTo(path: string, localDir: LocalPath): Promise<string> {
    return extract(await this.downloadArchive(path), localDir);
  }
}
