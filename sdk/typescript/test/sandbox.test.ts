// The client against a real manager and guest: one shared sandbox, a VM restored from its snapshot
// in an `await using` block that throws, and one made by Sandbox.create and disposed by hand.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { ConflictError, NotFoundError, Sandbox, ValidationError, type VM } from "../src/index.js";
import { api, client, e2e, key, tempDir, url } from "./env.js";

const text = (b: Uint8Array) => new TextDecoder().decode(b);
const bytes = (s: string) => new TextEncoder().encode(s);

describe("a shared sandbox", { skip: e2e }, () => {
  const c = client();
  let sb: Sandbox;
  let tmp: string;

  before(async () => {
    sb = await c.sandboxes.create({ cpu: 1, memMb: 256, metadata: { suite: "sdk-ts" } });
    tmp = tempDir();
  });
  after(async () => {
    await sb?.destroy({ missingOk: true });
  });

  test("create, get, list, refresh", async () => {
    assert.equal(sb.state, "RUNNING");
    assert.deepEqual(sb.info.metadata, { suite: "sdk-ts" });
    const got = await c.sandboxes.get(sb.id);
    assert.equal(got.id, sb.id);
    assert.equal(got.info.guestIp, sb.info.guestIp);
    assert.deepEqual((await c.sandboxes.list({ metadata: { suite: "sdk-ts" } })).map((s) => s.id), [sb.id]);
    assert.deepEqual(await c.sandboxes.list({ metadata: { suite: "other" } }), []);
    assert.ok((await c.sandboxes.list({ state: ["RUNNING", "PAUSED"] })).some((s) => s.id === sb.id));
    assert.deepEqual(await c.sandboxes.list({ state: "STOPPED" }), []);
    assert.equal((await sb.refresh()).state, "RUNNING");
  });

  test("exec", async () => {
    const r = await sb.exec("echo $GREETING; pwd; echo oops >&2; exit 3", { env: { GREETING: "hi" } });
    assert.deepEqual([r.exitCode, r.stdout, r.stderr, r.ok, r.timedOut], [3, "hi\n/workspace\n", "oops\n", false, false]);
    assert.ok((await sb.exec("mkdir -p sub")).ok);
    assert.equal((await sb.exec("pwd", { cwd: "sub" })).stdout, "/workspace/sub\n");
    const slow = await sb.exec("sleep 5", { timeoutMs: 300 });
    assert.ok(slow.timedOut && slow.exitCode === -1);
    await assert.rejects(sb.exec("true", { env: { "1bad": "x" } }), (e: unknown) => {
      assert.ok(e instanceof ValidationError);
      assert.equal(e.status, 400);
      assert.match(e.message, /1bad/);
      return true;
    });
  });

  test("exec and runTs stream their output", async () => {
    const got: [string, string, number][] = [];
    const r = await sb.exec("echo a; sleep 0.2; echo b >&2; exit 3", {
      onStdout: (t) => got.push(["out", t, performance.now()]),
      onStderr: (t) => got.push(["err", t, performance.now()]),
    });
    assert.deepEqual(got.map(([k, t]) => [k, t]), [["out", "a\n"], ["err", "b\n"]]);
    // Each came as it was written, not both at the end.
    assert.ok(got[1]![2] - got[0]![2] >= 100, JSON.stringify(got));
    assert.deepEqual([r.exitCode, r.stdout, r.stderr, r.ok, r.timedOut], [3, "a\n", "b\n", false, false]);
    const chunks: string[] = [];
    const ts = await sb.runTs("console.log('ts out'); result.set({n: 6 * 7})", { onStdout: (t) => chunks.push(t) });
    assert.equal(ts.exitCode, 0, ts.stderr);
    assert.deepEqual([chunks.join(""), ts.stdout, ts.result], ["ts out\n", "ts out\n", { n: 42 }]);
    await assert.rejects(sb.exec("true", { env: { "1bad": "x" }, onStdout: () => {} }), ValidationError);
  });

  test("files: bytes, a local file, a local directory", async () => {
    await sb.files.upload("notes/a.txt", bytes("alpha\n"));
    assert.equal(text(await sb.files.download("notes/a.txt")), "alpha\n");
    assert.equal((await sb.exec("cat /workspace/notes/a.txt")).stdout, "alpha\n");
    const tool = join(tmp, "tool.sh");
    writeFileSync(tool, "#!/bin/sh\necho tool ran\n");
    chmodSync(tool, 0o755);
    await sb.files.upload("/workspace/bin/tool", tool);
    assert.equal((await sb.exec("./bin/tool")).stdout, "tool ran\n");
    mkdirSync(join(tmp, "proj/src"), { recursive: true });
    writeFileSync(join(tmp, "proj/src/main.txt"), "main");
    writeFileSync(join(tmp, "proj/README"), "readme");
    await sb.files.upload("proj", join(tmp, "proj"));
    const out = await sb.files.downloadTo("proj", join(tmp, "back"));
    assert.equal(readFileSync(join(out, "src/main.txt"), "utf8"), "main");
    assert.equal(readFileSync(join(out, "README"), "utf8"), "readme");
    const archive = await sb.files.downloadArchive("proj/README");
    assert.deepEqual([...archive.subarray(0, 2)], [0x1f, 0x8b]);
    await assert.rejects(sb.files.download("proj"), /not a single file/);
  });

  test("runTs and runJs", async () => {
    const js = await sb.runJs("console.log(process.env.WHO); result.set({n: 6 * 7})", { env: { WHO: "node" } });
    assert.equal(js.exitCode, 0, js.stderr);
    assert.equal(js.stdout, "node\n");
    assert.deepEqual(js.result, { n: 42 });
    await sb.files.upload("mod.ts", bytes("console.log(Deno.args.join(','))\n"));
    const ts = await sb.runTs({ path: "mod.ts", args: ["a", "b"] });
    assert.equal(ts.exitCode, 0, ts.stderr);
    assert.equal(ts.stdout, "a,b\n");
  });

  test("logs and exec logs", async () => {
    const consoleLog = await sb.logs({ type: "console.log", tail: 5 });
    assert.equal(consoleLog.type, "console.log");
    assert.ok(consoleLog.lines.length > 0 && consoleLog.lines.length <= 5);
    const page = await sb.execLogs({ limit: 2, type: "exec" });
    assert.equal(page.entries.length, 2);
    assert.ok(page.hasMore);
    assert.ok(page.entries.every((e) => e.type === "exec" && e.result !== null));
    const next = await sb.execLogs({ limit: 1, type: "exec", before: page.entries[1]?.id });
    assert.equal(next.entries.length, 1);
  });

  test("timeout and metadata", async () => {
    let vm = await sb.setTimeout(600, "pause");
    assert.ok(vm.expiresAt && vm.timeoutAction === "pause");
    vm = await sb.setTimeout(null, "destroy");
    assert.ok(vm.expiresAt === null && vm.timeoutAction === "destroy");
    vm = await sb.setMetadata({ owner: "ts", suite: null });
    assert.deepEqual(vm.metadata, { owner: "ts" });
    assert.deepEqual((await sb.setMetadata({ suite: "sdk-ts", owner: null })).metadata, { suite: "sdk-ts" });
  });

  test("pause, resume, and 409 while paused", async () => {
    assert.equal((await sb.pause()).state, "PAUSED");
    assert.equal(sb.state, "PAUSED");
    await assert.rejects(sb.exec("true"), (e: unknown) => {
      assert.ok(e instanceof ConflictError);
      assert.equal(e.status, 409);
      assert.match(e.message, /RUNNING/);
      return true;
    });
    assert.equal((await sb.resume()).state, "RUNNING");
    assert.equal((await sb.exec("cat notes/a.txt")).stdout, "alpha\n");
  });

  test("stop and start", async () => {
    assert.equal((await sb.stop()).state, "STOPPED");
    await assert.rejects(sb.files.download("notes/a.txt"), ConflictError);
    assert.equal((await sb.start()).state, "RUNNING");
    assert.equal((await sb.exec("cat notes/a.txt")).stdout, "alpha\n");
  });

  test("snapshot, and restore in an `await using` block that throws", async () => {
    await sb.files.upload("marker", bytes("from the snapshot"));
    const snap = await sb.snapshot();
    assert.ok(snap.id.startsWith("snap-"));
    assert.equal(snap.sourceVmId, sb.id);
    assert.equal((await c.snapshots.get(snap.id)).id, snap.id);
    assert.ok((await c.snapshots.list()).some((s) => s.id === snap.id));
    assert.ok(Array.isArray(await c.snapshots.list({ scope: "all" })));
    let restoredId: string | undefined;
    await assert.rejects(async () => {
      await using copy = await Sandbox.restore(snap.id, { client: c });
      restoredId = copy.id;
      assert.notEqual(copy.id, sb.id);
      assert.equal(copy.info.sourceSnapshotId, snap.id);
      assert.equal(copy.info.cpu, sb.info.cpu);
      assert.equal(text(await copy.files.download("marker")), "from the snapshot");
      throw new Error("body failed");
    }, /body failed/);
    assert.ok(restoredId);
    await assert.rejects(c.sandboxes.get(restoredId), NotFoundError);
    await c.snapshots.delete(snap.id);
    await assert.rejects(c.snapshots.get(snap.id), NotFoundError);
  });
});

test("Sandbox.create with url and key, disposed by hand in finally", { skip: e2e }, async () => {
  const sb = await Sandbox.create({ url, apiKey: key, metadata: { t: "dispose" }, timeoutSec: 600 });
  try {
    assert.equal((await sb.exec("echo up")).stdout, "up\n");
    assert.ok(sb.info.expiresAt);
  } finally {
    await sb.dispose();
  }
  await assert.rejects(client().sandboxes.get(sb.id), NotFoundError);
  assert.deepEqual(await client().sandboxes.list({ metadata: { t: "dispose" } }), []);
  await sb.dispose(); // a second time: already gone is no error
});

test("destroy of an unknown VM", { skip: api }, async () => {
  const ghost = new Sandbox(client(), { id: randomUUID(), state: "RUNNING" } as VM);
  await assert.rejects(ghost.destroy(), (e: unknown) => {
    assert.ok(e instanceof NotFoundError);
    assert.equal(e.status, 404);
    assert.ok(e.message.includes(ghost.id));
    return true;
  });
  await ghost.destroy({ missingOk: true });
});
