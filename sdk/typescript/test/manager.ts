// Starts the real manager binary for the tests and the benchmark, in the caller's network namespace
// (scripts/test-sdk-typescript.sh runs both inside one of their own), and removes everything it made.
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, chmodSync, closeSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Client } from "../src/index.js";

export const SDK = resolve(fileURLToPath(import.meta.url), "../../..");
export const REPO = resolve(SDK, "../..");
const CACHE = process.env.RDS_CACHE_DIR ?? "/var/cache/run-dat-sheesh";
export const ADMIN_EMAIL = "a@b.c";
export const ADMIN_PASSWORD = "sdk-ts-pw-1";

/** A prerequisite is missing: the reason to skip with. */
export class Unavailable extends Error {}

export interface Manager {
  url: string;
  key: string;
  /** Whether guests can boot (the image and the vhost helper were found). */
  guests: boolean;
  stop(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.on("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => ok(port));
    });
  });
}

function pidsWith(marker: string): number[] {
  const pids: number[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d) || Number(d) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${d}/cmdline`).includes(marker)) pids.push(Number(d));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

const exited = (p: ChildProcess) => p.exitCode !== null || p.signalCode !== null;

function waitExit(p: ChildProcess, ms: number): Promise<boolean> {
  if (exited(p)) return Promise.resolve(true);
  return new Promise((ok) => {
    const t = setTimeout(() => ok(false), ms);
    p.once("exit", () => {
      clearTimeout(t);
      ok(true);
    });
  });
}

/** Starts a manager. Without the guest image it still starts (for /openapi.json), with `guests` false. */
export async function startManager(extraEnv: Record<string, string> = {}): Promise<Manager> {
  if (process.env.RDS_SDK_NETNS !== "1") {
    throw new Unavailable("needs a network namespace of its own: run scripts/test-sdk-typescript.sh");
  }
  const binary = process.env.RDS_MANAGER_BIN ?? join(REPO, "target/debug/run-dat-sheesh");
  const image = process.env.RDS_TEST_IMAGE_DIR ?? join(CACHE, "images/current");
  const vhost = process.env.VHOST_VSOCK_BIN ?? join(CACHE, "tools/vhost-device-vsock-0.3.0/bin/vhost-device-vsock");
  if (!existsSync(binary)) throw new Unavailable(`${binary} is missing (cargo build -p rds-manager)`);
  const missing = [join(image, "vmlinux"), join(image, "rootfs.ext4"), vhost].filter((p) => !existsSync(p));
  const work = mkdtempSync(join(tmpdir(), "rds-sdk-ts-"));
  chmodSync(work, 0o711);
  const port = await freePort();
  const key = "sdk-ts-" + randomBytes(12).toString("hex");
  const env: Record<string, string | undefined> = {
    ...process.env,
    API_KEY: key,
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    PORT: String(port),
    STORAGE_ROOT: join(work, "s"),
    SQLITE_PATH: join(work, "m.db"),
    VSOCK_HEALTH_TIMEOUT_MS: "120000",
    MAX_VMS: "4",
    RATE_LIMIT_EXEC: "0",
    RATE_LIMIT_VM_CREATE: "0",
    RUST_LOG: "warn",
    ...extraEnv,
  };
  if (!missing.length) {
    Object.assign(env, { KERNEL_PATH: join(image, "vmlinux"), BASE_ROOTFS_PATH: join(image, "rootfs.ext4"), VHOST_VSOCK_BIN: vhost });
    if (existsSync(join(image, "initrd"))) env.INITRD_PATH = join(image, "initrd");
  } else {
    // The manager insists on an executable helper even when no guest can boot; it still serves the API.
    env.VHOST_VSOCK_BIN = "/bin/true";
  }
  const logPath = join(work, "manager.log");
  const log = openSync(logPath, "w");
  const proc = spawn(binary, [], { env, stdio: ["ignore", log, log] });
  const url = `http://127.0.0.1:${port}`;

  async function stop(): Promise<void> {
    try {
      const c = new Client({ url, apiKey: key, maxRetries: 0 });
      for (const sb of await c.sandboxes.list()) await sb.destroy({ missingOk: true });
    } catch (e) {
      console.error(`cleanup: ${String(e)}`); // the manager may be gone; the kills below still clean up
    }
    proc.kill("SIGTERM");
    if (!(await waitExit(proc, 30_000))) {
      proc.kill("SIGKILL");
      await waitExit(proc, 5_000);
    }
    // Guests and helpers the manager started carry the work directory in their command lines.
    for (const pid of pidsWith(work)) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    closeSync(log);
    rmSync(work, { recursive: true, force: true });
  }

  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      if ((await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1000) })).ok) break;
    } catch {
      // not listening yet
    }
    if (exited(proc) || Date.now() > deadline) {
      const tail = readFileSync(logPath, "utf8").slice(-4000);
      await stop();
      throw new Error(`manager did not start:\n${tail}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  if (missing.length) console.error(`[sdk-ts] no guests: missing ${missing.join(", ")}`);
  return { url, key, guests: !missing.length, stop };
}
