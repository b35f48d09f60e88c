// Response shapes of the manager API (docs/reference/api.md §3–§5, docs/reference/api-admin.md).

export type VmState = "CREATED" | "STARTING" | "RUNNING" | "STOPPING" | "STOPPED" | "PAUSED" | "ERROR";

/** The states `GET /v1/vms?state=` filters by, in lifecycle order. */
export const VM_STATES: VmState[] = ["CREATED", "STARTING", "RUNNING", "PAUSED", "STOPPING", "STOPPED", "ERROR"];

export type TimeoutAction = "destroy" | "pause";

export interface PeerLink {
  alias: string;
  vmId: string;
  sourceMode: "hidden" | "mounted";
}

export interface Vm {
  id: string;
  state: VmState;
  cpu: number;
  memMb: number;
  diskSizeMb: number;
  guestIp: string;
  outboundInternet: boolean;
  allowIps: string[];
  imageId: string;
  provisionMode: "boot" | "snapshot" | null;
  sourceSnapshotId: string | null;
  peerLinks: PeerLink[];
  createdAt: string;
  lastError: string | null;
  /** The deadline (RFC 3339), or null when the VM has none. */
  expiresAt: string | null;
  /** What happens at `expiresAt`. */
  timeoutAction: TimeoutAction;
  /** The client's string labels ({} when none): user text, always rendered as text. */
  metadata: Record<string, string>;
}

export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
  timedOut: boolean;
  durationMs: number;
  result?: unknown;
  error?: unknown;
}

export interface LogTail {
  type: string;
  lines: string[];
  truncated: boolean;
  updatedAt: string | null;
}

export interface ExecLogEntry {
  id: string;
  timestamp: string;
  type: "exec" | "run-ts" | "run-js";
  input: { cmd?: string; cwd?: string; code?: string; path?: string; args?: string[] };
  result: ExecResult;
  durationMs: number;
}

export interface Snapshot {
  id: string;
  kind: "user_overlay" | "template";
  createdAt: string;
  cpu: number;
  memMb: number;
  diskSizeMb: number;
  imageId: string;
  sourceVmId: string | null;
  hasMemory: boolean;
  internal: boolean;
  sizeBytes: number;
  backend: string;
}

export interface Image {
  id: string;
  name: string;
  description: string;
  createdAt: string;
  builtIn: boolean;
  isDefault: boolean;
  hasKernel: boolean;
  hasRootfs: boolean;
  hasInitrd: boolean;
  kernelFormat: string | null;
  baseRootfsBytes: number | null;
  seedStatus: string | null;
  seedError: string | null;
}

export interface ApiKey {
  id: string;
  name: string;
  prefix: string;
  createdAt: string;
  expiresAt: string | null;
  revokedAt: string | null;
  lastUsedAt: string | null;
  apiKey?: string;
}

export interface Webhook {
  id: string;
  name: string;
  url: string;
  enabled: boolean;
  eventTypes: string[];
  createdAt: string;
  updatedAt: string;
  secret?: string;
}

export interface Delivery {
  id: string;
  eventId: string;
  eventType: string;
  attempt: number;
  status: "pending" | "succeeded" | "failed";
  responseStatus: number | null;
  error: string | null;
  createdAt: string;
  nextAttemptAt: string | null;
  completedAt: string | null;
}

export interface ActivityEvent {
  id: string;
  createdAt: string;
  type: string;
  entityType: string;
  entityId: string | null;
  message: string;
  meta?: unknown;
  metaJson?: string | null;
}

export interface Overview {
  counts: { activeVms: number; warmVms: number; snapshots: number; templates: number };
  cpu: { usagePct: number | null; capacityCores: number; usedCores: number };
  memory: { usedBytes: number; capacityBytes: number };
  storage: { usedBytes: number; capacityBytes: number };
}

export interface Readyz {
  status: string;
  backend: string;
  accel: string;
  kvmProbe: string | null;
  checks: Record<string, string>;
}

export interface Session {
  email: string;
  csrfToken: string;
  expiresAt: string;
}

/** Activity types a webhook may subscribe to (docs/reference/api.md §7). */
export const EVENT_TYPES = [
  "vm.created", "vm.started", "vm.stopped", "vm.exited", "vm.error", "vm.deleted",
  "vm.paused", "vm.resumed", "vm.expired",
  "exec.command", "runTs.executed", "runJs.executed",
  "snapshot.created", "snapshot.deleted", "snapshot.seed_ready", "snapshot.seed_failed",
  "image.created", "image.kernel_uploaded", "image.rootfs_uploaded", "image.bundle_uploaded",
  "image.default_set", "image.deleted",
  "apikey.created", "apikey.revoked", "auth.login", "auth.login_failed",
  "webhook.created", "webhook.updated", "webhook.deleted",
];
