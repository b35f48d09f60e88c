// What test/run.ts hands the test files: the one manager they share, started before them.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client } from "../src/index.js";

export const url = process.env.RDS_TEST_URL ?? "";
export const key = process.env.RDS_TEST_KEY ?? "";
/** Low enough that a test reaches it in a few calls (counted per VM id, so the shared sandbox's own
 * run-js calls stay well under it). test/run.ts starts the manager with it. */
export const RUN_JS_LIMIT = 4;

/** `skip` for tests that need the manager with guests: false, or why not. */
export const e2e: false | string = url && process.env.RDS_TEST_GUESTS === "1" ? false : process.env.RDS_TEST_SKIP || "no manager with guests";
/** The same for tests that need a manager only. */
export const api: false | string = url ? false : process.env.RDS_TEST_SKIP || "no manager";

const dirs: string[] = [];
// Each test file runs in a process of its own: its temporary directories go when it ends.
process.on("exit", () => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

export function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), "rds-ts-"));
  dirs.push(d);
  return d;
}

export function client(): Client {
  return new Client({ url, apiKey: key });
}
