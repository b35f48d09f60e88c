// The SDK's types, taken from the manager's OpenAPI document (src/generated/openapi.ts) wherever it
// describes them, so that a change of the API shows up here as a type error. Answers are the
// manager's JSON as is: fields added by later releases are kept.
import type { components } from "./generated/openapi.js";

type Schemas = components["schemas"];

export type VM = Schemas["VmView"];
export type VmState = Schemas["VmStateName"];
export type TimeoutAction = Schemas["TimeoutActionName"];
export type Snapshot = Schemas["SnapshotView"];
export type Image = Schemas["ImageView"];
export type Logs = Schemas["LogTailView"];
/** A VM's link to a provider VM (docs/peers.md), as `VM.peerLinks` lists it. */
export type PeerLink = Schemas["PeerLink"];
/** One link of `peerLinks` on create: `sourceMode` defaults to `hidden`. */
export type PeerLinkOptions = Schemas["PeerLinkBody"];
/** `hidden`: proxies only; `mounted`: also a copy of the provider's sources under `source/`. */
export type SourceMode = Schemas["SourceModeName"];

/** What `exec` answers, also when the command failed: check `exitCode` or `ok`. */
export type ExecResult = Schemas["ExecResultView"] & {
  /** exitCode 0 and not timed out. */
  readonly ok: boolean;
};

/** What `runTs` and `runJs` answer: the exec fields plus the script's `result` and `error`. */
export type RunResult = Schemas["RunResultView"] & { readonly ok: boolean };

/** One entry of the exec log (docs/reference/api.md §3.6); the document types them as any JSON. */
export interface ExecLogEntry {
  id: string;
  timestamp: string;
  type: "exec" | "run-ts" | "run-js";
  input: Record<string, unknown>;
  result: Record<string, unknown> | null;
  durationMs: number | null;
}

export type ExecLogPage = Omit<Schemas["ExecLogPage"], "entries"> & { entries: ExecLogEntry[] };

type CreateBody = Schemas["CreateVmBody"];

/** `POST /v1/vms` fields; `cpu` defaults to 1 and `memMb` to 256. */
export type CreateOptions = Partial<
  Pick<
    CreateBody,
    "cpu" | "memMb" | "imageId" | "diskSizeMb" | "allowIps" | "outboundInternet" | "timeoutSec" | "timeoutAction" | "metadata"
  >
> & {
  /** Links to RUNNING provider VMs whose functions the VM may call (docs/peers.md); at most 16. */
  peerLinks?: PeerLinkOptions[];
  /** Secrets for the VM's programs as `KEY=value` (needs VM_SECRET_KEY); write-only. */
  secretEnv?: string[];
  /** A user snapshot to restore (`userOverlaySnapshotId`). */
  snapshotId?: string;
};

export interface ListFilter {
  state?: VmState | readonly VmState[];
  /** Exact matches, all of them. */
  metadata?: Record<string, string>;
}

export type SnapshotScope = "user" | "internal" | "all";

export type LogType = "vmm.log" | "console.log" | "vmm.stderr.log";

/** Gets a chunk of a command's output as text (whole characters) as it arrives; a returned promise
 * is awaited before the next chunk is read. */
export type OutputCallback = (text: string) => unknown;

/** Either callback makes exec, runTs and runJs stream (`Accept: application/x-ndjson`): the output
 * reaches them as it is written, and the call still answers the whole result once it finished. */
export interface OutputCallbacks {
  onStdout?: OutputCallback;
  onStderr?: OutputCallback;
}

export interface ExecOptions extends OutputCallbacks {
  /** Under /workspace; default /workspace. */
  cwd?: string;
  env?: Record<string, string>;
  timeoutMs?: number;
}

interface RunOptions extends OutputCallbacks {
  /** A script file in the sandbox, instead of `code`. */
  path?: string;
  args?: string[];
  /** Passed as KEY=value entries. */
  env?: Record<string, string>;
  timeoutMs?: number;
}

export interface RunTsOptions extends RunOptions {
  denoFlags?: string[];
}

export interface RunJsOptions extends RunOptions {
  nodeFlags?: string[];
}
