// Dashboard history: `/metrics` is sampled every 15 s while the console is open and an hour of samples
// is kept in sessionStorage (so a reload keeps them). VM count is the sum of `rds_vms{state}`; create
// latency is the mean of the creates that finished between two samples, from the
// `rds_vm_create_duration_seconds` histogram's `_sum` and `_count`.
import { request } from "./api";
import { store } from "./store";

export interface Sample {
  t: number;
  vms: number;
  createSum: number;
  createCount: number;
}

const KEY = "rds.metrics";
const HOUR = 3600_000;
const EVERY = 15_000;

function load(): Sample[] {
  try {
    const v = JSON.parse(sessionStorage.getItem(KEY) ?? "[]");
    return Array.isArray(v) ? v.filter((s: Sample) => s.t > Date.now() - HOUR) : [];
  } catch {
    return [];
  }
}

export const samples = store<Sample[]>(load());
export const metricsAvailable = store<boolean | undefined>(undefined);

export function parseMetrics(text: string, t = Date.now()): Sample {
  const s: Sample = { t, vms: 0, createSum: 0, createCount: 0 };
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const v = Number(m[3]);
    if (!Number.isFinite(v)) continue;
    if (m[1] === "rds_vms") s.vms += v;
    else if (m[1] === "rds_vm_create_duration_seconds_sum") s.createSum += v;
    else if (m[1] === "rds_vm_create_duration_seconds_count") s.createCount += v;
  }
  return s;
}

/** Mean create latency (seconds) between consecutive samples that saw creates finish. */
export function createLatency(all: Sample[]): { t: number; v: number }[] {
  const out = [];
  for (let i = 1; i < all.length; i++) {
    const dn = all[i].createCount - all[i - 1].createCount;
    const ds = all[i].createSum - all[i - 1].createSum;
    if (dn > 0 && ds >= 0) out.push({ t: all[i].t, v: ds / dn });
  }
  return out;
}

async function sample(): Promise<void> {
  try {
    // Quiet: a manager that refuses sessions on /metrics must not sign the admin out.
    const text = await (await request("GET", "/metrics", undefined, undefined, { quiet401: true })).text();
    const kept = samples.get().filter((s) => s.t > Date.now() - HOUR);
    const next = [...kept, parseMetrics(text)];
    samples.set(next);
    metricsAvailable.set(true);
    sessionStorage.setItem(KEY, JSON.stringify(next));
  } catch {
    metricsAvailable.set(false);
  }
}

let timer: ReturnType<typeof setInterval> | undefined;

export function startSampling(): void {
  stopSampling();
  void sample();
  timer = setInterval(sample, EVERY);
}

export function stopSampling(): void {
  clearInterval(timer);
}
