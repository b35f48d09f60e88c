// The suite's entry point (scripts/test-sdk-typescript.sh runs it inside a network namespace): starts
// one manager for every test file, checks the generated types against its /openapi.json, runs
// `node --test` over build/test/*.test.js, and stops the manager whatever happened. Without the
// namespace or the guest image the tests that need them skip, unless RDS_REQUIRE_E2E=1 (CI).
import { spawnSync } from "node:child_process";
import { mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Manager, SDK, Unavailable, startManager } from "./manager.js";
import { RUN_JS_LIMIT } from "./env.js";

const requireE2e = process.env.RDS_REQUIRE_E2E === "1";
const testEnv: Record<string, string> = {};
let manager: Manager | undefined;
let failed = false;

function missing(why: string): void {
  console.error(`[sdk-ts] ${why}: ${requireE2e ? "failing (RDS_REQUIRE_E2E=1)" : "those tests are skipped"}`);
  testEnv.RDS_TEST_SKIP = why;
  if (requireE2e) failed = true;
}

try {
  manager = await startManager({ RATE_LIMIT_RUN_JS: String(RUN_JS_LIMIT) });
  Object.assign(testEnv, { RDS_TEST_URL: manager.url, RDS_TEST_KEY: manager.key, RDS_TEST_GUESTS: manager.guests ? "1" : "0" });
  if (!manager.guests) missing("the guest image or the vhost helper is missing");
} catch (e) {
  if (!(e instanceof Unavailable)) throw e;
  missing(`${e.message} (the drift check needs it too)`);
}

try {
  if (manager) {
    // Kept under build/ so that the drift message can name a file to regenerate from.
    const doc = join(SDK, "build/openapi.json");
    mkdirSync(join(SDK, "build"), { recursive: true });
    writeFileSync(doc, await (await fetch(`${manager.url}/openapi.json`)).text());
    const drift = spawnSync(process.execPath, [join(SDK, "scripts/gen-types.mjs"), doc, "--check"], { stdio: "inherit" });
    if (drift.status !== 0) failed = true;
    else console.error("[sdk-ts] src/generated/openapi.ts matches the manager's /openapi.json");
  }
  const dir = join(SDK, "build/test");
  const files = readdirSync(dir).filter((f) => f.endsWith(".test.js")).sort().map((f) => join(dir, f));
  // Extra arguments (say --test-name-pattern=exec) go to node's test runner.
  const args = ["--test", "--test-concurrency=1", "--test-reporter=spec", ...process.argv.slice(2), ...files];
  const run = spawnSync(process.execPath, args, { stdio: "inherit", env: { ...process.env, ...testEnv } });
  if (run.status !== 0) failed = true;
} finally {
  await manager?.stop();
}
process.exit(failed ? 1 : 0);
