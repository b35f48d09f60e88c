// The built package under Deno (from the npm package `deno`, a devDependency): type-checked against
// dist/index.d.ts, then one VM made, used and disposed by test/deno/smoke.ts.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { SDK } from "./manager.js";
import { e2e, key, url } from "./env.js";

const deno = join(SDK, "node_modules/.bin/deno");

test("Deno: the built package type-checks, and a VM is made, used and disposed", { skip: e2e || (!existsSync(deno) && "no deno binary") }, () => {
  const r = spawnSync(
    deno,
    ["run", "--check", "--no-prompt", "--allow-net=127.0.0.1", "--allow-env=RDS_URL,RDS_API_KEY", "--allow-read", "--allow-write", join(SDK, "test/deno/smoke.ts")],
    { encoding: "utf8", env: { ...process.env, RDS_URL: url, RDS_API_KEY: key, NO_COLOR: "1" }, timeout: 180_000 },
  );
  assert.equal(r.status, 0, `deno failed:\n${r.stdout}\n${r.stderr}`);
  const [used, disposed] = r.stdout.trim().split("\n").map((l) => JSON.parse(l) as unknown);
  assert.deepEqual(used, { exitCode: 0, stdout: "hello from Linux\n", back: ["from a local file", "from bytes"] });
  assert.deepEqual(disposed, { destroyed: true });
});
