// What needs no manager: version tie, error mapping, retry policy, archives, disposal, streamed
// exec and runs (a fake fetch).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { join } from "node:path";
import { test } from "node:test";
import * as rds from "../src/index.js";
import { type TarEntry, gunzip, gzip, singleFile, tar, untar } from "../src/archive.js";
import { extract, fileBody, uploadArchive } from "../src/local.js";
import { REPO, SDK } from "./manager.js";
import { tempDir } from "./env.js";

type Handler = (req: Request) => Response | Promise<Response>;

function mock(handler: Handler, options: rds.ClientOptions = {}): rds.Client {
  const f: typeof fetch = async (input, init) => handler(new Request(input, init));
  return new rds.Client({ url: "http://rds.test", apiKey: "k", fetch: f, ...options });
}

const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });

const ghost = (c: rds.Client, id = "00000000-0000-4000-8000-000000000000") =>
  new rds.Sandbox(c, { id, state: "RUNNING" } as rds.VM);

test("the version follows the manager's", () => {
  const cargo = readFileSync(join(REPO, "Cargo.toml"), "utf8").match(/^version = "([^"]+)"/m)?.[1];
  assert.ok(cargo);
  const pkg = JSON.parse(readFileSync(join(SDK, "package.json"), "utf8")) as { version: string };
  const lock = JSON.parse(readFileSync(join(SDK, "package-lock.json"), "utf8")) as { version: string };
  assert.equal(pkg.version, cargo);
  assert.equal(lock.version, cargo);
  assert.equal(rds.VERSION, cargo);
});

test("the package's exports map reaches the same module as src", async () => {
  const published = await import("run-dat-sheesh");
  assert.deepEqual(Object.keys(published).sort(), Object.keys(rds).sort());
});

test("statuses map to error classes", async () => {
  const table: [number, new (...args: never[]) => rds.RdsError][] = [
    [400, rds.ValidationError], [401, rds.AuthenticationError], [403, rds.ForbiddenError], [404, rds.NotFoundError],
    [409, rds.ConflictError], [413, rds.ValidationError], [415, rds.ValidationError], [429, rds.RateLimitError],
    [500, rds.ServerError], [507, rds.ServerError], [405, rds.RdsError],
  ];
  for (const [status, cls] of table) {
    const c = mock(() => json(status, { message: "m!" }, { "retry-after": "7" }), { maxRetries: 0 });
    const e = await c.images.list().then(() => assert.fail("no error"), (e: unknown) => e);
    assert.ok(e instanceof rds.RdsError && e.constructor === cls, `${status} → ${String(e)}`);
    assert.equal(e.status, status);
    assert.equal(e.message, "m!");
    assert.equal(e.name, cls.name);
    if (e instanceof rds.RateLimitError) assert.equal(e.retryAfter, 7);
  }
  const text = mock(() => new Response("plain failure", { status: 502 }), { maxRetries: 0 });
  await assert.rejects(text.images.list(), { name: "ServerError", status: 502, message: "plain failure" });
});

test("the key and the user agent are sent", async () => {
  const seen: Request[] = [];
  await mock((r) => (seen.push(r), json(200, []))).images.list();
  assert.equal(seen[0]?.headers.get("x-api-key"), "k");
  assert.match(seen[0]?.headers.get("user-agent") ?? "", /^run-dat-sheesh-typescript\//);
});

test("idempotent calls are retried, bounded, and POSTs never", async () => {
  const calls: string[] = [];
  const c = mock((r) => (calls.push(r.method), json(503, { message: "busy" })), { maxRetries: 2 });
  await assert.rejects(c.snapshots.list(), rds.ServerError);
  assert.deepEqual(calls, ["GET", "GET", "GET"]);
  calls.length = 0;
  await assert.rejects(c.images.create("n", "d"), rds.ServerError);
  assert.deepEqual(calls, ["POST"]);
  calls.length = 0;
  await assert.rejects(ghost(c).destroy(), rds.ServerError);
  assert.deepEqual(calls, ["DELETE", "DELETE", "DELETE"]);
});

test("a GET recovers after a connection error; none left is an APIConnectionError", async () => {
  let n = 0;
  const flaky = mock(() => {
    if (++n === 1) throw new TypeError("fetch failed", { cause: new Error("connect ECONNREFUSED") });
    return json(200, []);
  });
  assert.deepEqual(await flaky.snapshots.list(), []);
  assert.equal(n, 2);
  const down = mock(() => Promise.reject(new TypeError("fetch failed")), { maxRetries: 0 });
  const e = await down.images.list().catch((e: unknown) => e);
  assert.ok(e instanceof rds.APIConnectionError);
  assert.equal(e.status, undefined);
  assert.match(e.message, /GET \/v1\/images: TypeError: fetch failed/);
});

test("a call without an answer in time is an APIConnectionError, and not retried", async () => {
  let n = 0;
  const slow = mock(
    (r) =>
      new Promise<Response>((_, fail) => {
        n++;
        // The client's timer is unref'd, like a real fetch's; a socket would keep the loop alive.
        const alive = setTimeout(() => fail(new Error("never aborted")), 5000);
        r.signal.addEventListener("abort", () => (clearTimeout(alive), fail(r.signal.reason)));
      }),
    { timeoutMs: 50 },
  );
  await assert.rejects(slow.images.list(), { name: "APIConnectionError", message: /no answer within 50 ms/ });
  assert.equal(n, 1);
});

test("RDS_URL and RDS_API_KEY are the defaults", () => {
  const saved = { url: process.env.RDS_URL, key: process.env.RDS_API_KEY };
  try {
    process.env.RDS_URL = "http://example.invalid:9/";
    process.env.RDS_API_KEY = "from-env";
    const c = new rds.Client();
    assert.deepEqual([c.url, c.apiKey], ["http://example.invalid:9", "from-env"]);
    delete process.env.RDS_URL;
    assert.equal(new rds.Client({ apiKey: "x" }).url, rds.DEFAULT_URL);
  } finally {
    for (const [k, v] of [["RDS_URL", saved.url], ["RDS_API_KEY", saved.key]] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
});

test("requests: list filters, create defaults, run bodies", async () => {
  const seen: { method: string; url: URL; body: unknown }[] = [];
  const c = mock(async (r) => {
    const text = await r.text();
    seen.push({ method: r.method, url: new URL(r.url), body: text ? JSON.parse(text) : undefined });
    if (r.url.includes("/run-ts")) return json(200, { exitCode: 0, stdout: "", stderr: "", timedOut: false });
    return r.method === "POST" ? json(201, { id: "v", state: "RUNNING" }) : json(200, []);
  });
  await c.sandboxes.list({ state: ["RUNNING", "PAUSED"], metadata: { team: "a b" } });
  assert.equal(seen[0]?.url.search, "?state=RUNNING&state=PAUSED&metadata.team=a+b");
  await c.sandboxes.create({ metadata: { t: "x" }, snapshotId: "snap-1" });
  assert.deepEqual(seen[1]?.body, { cpu: 1, memMb: 256, metadata: { t: "x" }, userOverlaySnapshotId: "snap-1" });
  const sb = ghost(c);
  await assert.rejects(sb.runJs({} as { path: string }), TypeError);
  await assert.rejects(sb.runJs({ code: "1", path: "a.js" } as { path: string }), /exactly one of code and path/);
  const r = await sb.runTs("1", { env: { A: "b" }, denoFlags: ["--quiet"], timeoutMs: 5 });
  assert.equal(r.ok, true);
  assert.deepEqual(seen.at(-1)?.body, { code: "1", env: ["A=b"], denoFlags: ["--quiet"], timeoutMs: 5 });
});

test("await using destroys the sandbox when the block throws; dispose tolerates a gone VM", async () => {
  const calls: string[] = [];
  const c = mock((r) => (calls.push(`${r.method} ${new URL(r.url).pathname}`), new Response(null, { status: 404 })));
  await assert.rejects(async () => {
    await using sb = ghost(c, "11111111-1111-4111-8111-111111111111");
    assert.equal(sb.id, "11111111-1111-4111-8111-111111111111");
    throw new Error("body failed");
  }, /body failed/);
  assert.deepEqual(calls, ["DELETE /v1/vms/11111111-1111-4111-8111-111111111111"]);
  await ghost(c).dispose();
  await assert.rejects(ghost(c).destroy(), rds.NotFoundError);
});

const names = async (body: Uint8Array) =>
  Object.fromEntries(untar(await gunzip(body)).map((e) => [e.name, e.type === "file" ? new TextDecoder().decode(e.data) : e.type]));

test("upload archives: bytes, a file, a directory; links refused", async () => {
  const tmp = tempDir();
  let a = await uploadArchive("a/b.txt", new TextEncoder().encode("hi"));
  assert.equal(a.target, "/workspace/a");
  assert.deepEqual(await names(a.body), { "b.txt": "hi" });
  writeFileSync(join(tmp, "f.sh"), "echo");
  chmodSync(join(tmp, "f.sh"), 0o755);
  a = await uploadArchive("/workspace/./run.sh", join(tmp, "f.sh"));
  assert.equal(a.target, "/workspace");
  assert.deepEqual(await names(a.body), { "run.sh": "echo" });
  assert.equal(untar(await gunzip(a.body))[0]?.mode, 0o755);
  mkdirSync(join(tmp, "d/sub"), { recursive: true });
  writeFileSync(join(tmp, "d/sub/x"), "x");
  a = await uploadArchive("proj", new URL(`file://${join(tmp, "d")}`));
  assert.equal(a.target, "/workspace/proj");
  assert.deepEqual(await names(a.body), { sub: "dir", "sub/x": "x" });
  symlinkSync("sub", join(tmp, "d/link"));
  await assert.rejects(uploadArchive("proj", join(tmp, "d")), /only regular files and directories/);
  await assert.rejects(uploadArchive("x", join(tmp, "nope")), /no such file or directory/);
});

test("archives agree with GNU tar both ways, long names included", async () => {
  const tmp = tempDir();
  const long = `${"d".repeat(120)}/${"f".repeat(120)}.txt`; // beyond ustar's name and prefix: pax
  const split = `${"p".repeat(90)}/${"n".repeat(90)}`; // fits ustar's prefix + name
  const entries: TarEntry[] = [
    { name: "dir", type: "dir", mode: 0o755, mtime: 1, data: new Uint8Array() },
    { name: "dir/a.txt", type: "file", mode: 0o644, mtime: 1, data: new TextEncoder().encode("a") },
    { name: long, type: "file", mode: 0o600, mtime: 1, data: new Uint8Array(1000).fill(65) },
    { name: split, type: "file", mode: 0o644, mtime: 1, data: new TextEncoder().encode("s") },
  ];
  writeFileSync(join(tmp, "ours.tar.gz"), await gzip(tar(entries)));
  const listed = execFileSync("tar", ["-tzf", join(tmp, "ours.tar.gz")], { encoding: "utf8" }).trim().split("\n");
  assert.deepEqual(listed, ["dir/", "dir/a.txt", long, split]);
  // What the agent sends: GNU format, with ././@LongLink entries for long names.
  mkdirSync(join(tmp, "src", "d".repeat(120)), { recursive: true });
  writeFileSync(join(tmp, "src", long), "long");
  execFileSync("tar", ["--format=gnu", "-czf", join(tmp, "gnu.tar.gz"), "-C", join(tmp, "src"), "."]);
  const read = untar(await gunzip(readFileSync(join(tmp, "gnu.tar.gz"))));
  assert.deepEqual(read.map((e) => [e.name, e.type]), [[".", "dir"], [`./${"d".repeat(120)}`, "dir"], [`./${long}`, "file"]]);
  assert.equal(new TextDecoder().decode(read[2]?.data), "long");
});

test("download takes a file, not a directory holding one", async () => {
  const file = (name: string): TarEntry => ({ name, type: "file", mode: 0o644, mtime: 0, data: new TextEncoder().encode("ok") });
  assert.equal(new TextDecoder().decode(singleFile([file("a.txt")], "/workspace/dir/a.txt")), "ok");
  assert.throws(() => singleFile([file("./a.txt")], "dir"), /not a single file/);
  assert.throws(() => singleFile([file("a.txt"), file("b.txt")], "a.txt"), /not a single file/);
});

test("extract refuses entries that escape, and skips links", async () => {
  const tmp = tempDir();
  const evil: TarEntry = { name: "../evil", type: "file", mode: 0o644, mtime: 0, data: new Uint8Array([1]) };
  // Our writer refuses nothing a sandbox could send, so build the hostile archive with it directly.
  await assert.rejects(extract(await gzip(tar([evil])), join(tmp, "out")), /escapes/);
  assert.ok(!existsSync(join(tmp, "evil")) && !existsSync(join(tmp, "out")));
  mkdirSync(join(tmp, "src"));
  writeFileSync(join(tmp, "src/x.sh"), "x");
  chmodSync(join(tmp, "src/x.sh"), 0o700);
  symlinkSync("/etc/passwd", join(tmp, "src/link"));
  execFileSync("tar", ["-czf", join(tmp, "a.tar.gz"), "-C", join(tmp, "src"), "."]);
  const out = await extract(readFileSync(join(tmp, "a.tar.gz")), join(tmp, "out"));
  assert.equal(readFileSync(join(out, "x.sh"), "utf8"), "x");
  assert.ok(!existsSync(join(out, "link")));
});

test("a streamed file body carries its length (the path for runtimes without fs.openAsBlob)", async () => {
  const tmp = tempDir();
  writeFileSync(join(tmp, "k"), new Uint8Array(300_000).fill(7));
  const got: { length?: string; size: number }[] = [];
  const server = createServer((req, res) => {
    let size = 0;
    req.on("data", (b: Buffer) => (size += b.length));
    req.on("end", () => {
      got.push({ length: req.headers["content-length"], size });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  try {
    const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    const c = new rds.Client({ url });
    for (const preferBlob of [true, false]) {
      const f = await fileBody(join(tmp, "k"), preferBlob);
      assert.equal(f.stream, !preferBlob);
      const headers: Record<string, string> = f.stream ? { "Content-Length": String(f.size) } : {};
      await c.send("PUT", "/x", { body: f.body, headers });
    }
  } finally {
    server.close();
  }
  assert.deepEqual(got, [{ length: "300000", size: 300_000 }, { length: "300000", size: 300_000 }]);
});

test("peers: links on create, sync and source mode requests, the links on the VM", async () => {
  const provider = "00000000-0000-4000-8000-0000000000aa";
  const links: rds.PeerLink[] = [{ alias: "math", vmId: provider, sourceMode: "mounted" }];
  const seen: { method: string; path: string; body: unknown }[] = [];
  const c = mock(async (r) => {
    const text = await r.text();
    const path = new URL(r.url).pathname;
    seen.push({ method: r.method, path, body: text ? JSON.parse(text) : undefined });
    if (r.method === "GET" || path === "/v1/vms") return json(200, { id: "v", state: "RUNNING", peerLinks: links });
    return new Response(null, { status: 204 });
  });
  const peerLinks: rds.PeerLinkOptions[] = [{ alias: "math", vmId: provider }, { alias: "src", vmId: provider, sourceMode: "mounted" }];
  const sb = await c.sandboxes.create({ peerLinks });
  assert.deepEqual(seen[0]?.body, { cpu: 1, memMb: 256, peerLinks });
  assert.deepEqual(sb.info.peerLinks, links);
  assert.equal(await sb.peersSync(), undefined);
  const vm = await sb.setPeerSourceMode("math", "mounted");
  assert.equal(vm.peerLinks[0]?.sourceMode, "mounted");
  assert.equal(sb.info, vm);
  assert.deepEqual(seen.slice(1), [
    { method: "POST", path: "/v1/vms/v/peers/sync", body: undefined },
    { method: "PATCH", path: "/v1/vms/v/peers/math", body: { sourceMode: "mounted" } },
    { method: "GET", path: "/v1/vms/v", body: undefined },
  ]);
  // 204 routes are POST/PATCH: a failure is not repeated.
  const calls: string[] = [];
  const busy = mock((r) => (calls.push(r.method), json(503, { message: "busy" })), { maxRetries: 2 });
  await assert.rejects(ghost(busy).peersSync(), rds.ServerError);
  await assert.rejects(ghost(busy).setPeerSourceMode("a/b", "hidden"), rds.ServerError);
  assert.deepEqual(calls, ["POST", "PATCH"]);
});

// --- streamed exec, runTs and runJs ---------------------------------------------------------------

const EXIT = { type: "exit", exitCode: 3, stdoutTruncated: false, stderrTruncated: true, timedOut: false, durationMs: 12 };
const ev = (e: object) => `${JSON.stringify(e)}\n`;
const sleep = (ms: number) => new Promise((ok) => setTimeout(ok, ms));

/** A streamed answer whose chunks are made one read at a time (`sent N` in `log` when made); `cancelled`
 * is set when the reader gives up. */
function ndjson(chunks: (string | Uint8Array)[], log: string[] = [], cancelled = { value: false }): Response {
  let i = 0;
  const body = new ReadableStream<Uint8Array>(
    {
      pull(ctrl) {
        const c = chunks[i++];
        if (c === undefined) return ctrl.close();
        log.push(`sent ${i}`);
        ctrl.enqueue(typeof c === "string" ? new TextEncoder().encode(c) : c);
      },
      cancel() {
        cancelled.value = true;
      },
    },
    { highWaterMark: 0 },
  );
  return new Response(body, { headers: { "content-type": "application/x-ndjson" } });
}

test("exec with callbacks streams: output as it arrives, the same result at the end", async () => {
  const log: string[] = [];
  const seen: { accept: string | null; path: string; body: unknown }[] = [];
  const e = new TextEncoder().encode("é");
  const c = mock(async (r) => {
    seen.push({ accept: r.headers.get("accept"), path: new URL(r.url).pathname, body: JSON.parse(await r.text()) });
    return ndjson(
      [
        `${ev({ type: "stdout", data: "a\n" })}{"type":"std`, // a line cut between two chunks
        `err","data":"b\\n"}\n{"type":"stdout","data":"`,
        new Uint8Array([e[0]!]), // and a character
        new Uint8Array([e[1]!, ...new TextEncoder().encode(`"}\n${ev({ type: "progress", pct: 5 })}`)]), // a later release's line
        JSON.stringify(EXIT), // the last line without its newline
      ],
      log,
    );
  });
  const r = await ghost(c).exec("x", {
    timeoutMs: 5,
    onStdout: (t) => log.push(`out ${t}`),
    // An async callback is awaited before the next chunk is read.
    onStderr: async (t) => {
      await sleep(20);
      log.push(`err ${t}`);
    },
  });
  assert.deepEqual(log, ["sent 1", "out a\n", "sent 2", "err b\n", "sent 3", "sent 4", "out é", "sent 5"]);
  assert.deepEqual(
    [r.exitCode, r.stdout, r.stderr, r.stdoutTruncated, r.stderrTruncated, r.durationMs, r.ok],
    [3, "a\né", "b\n", false, true, 12, false],
  );
  assert.equal((r as { type?: string }).type, undefined);
  assert.deepEqual(seen, [{ accept: "application/x-ndjson", path: `/v1/vms/${ghost(c).id}/exec`, body: { cmd: "x", timeoutMs: 5 } }]);
});

test("without callbacks exec stays buffered", async () => {
  const accept: (string | null)[] = [];
  const c = mock((r) => (accept.push(r.headers.get("accept")), json(200, { exitCode: 0, stdout: "x", stderr: "", timedOut: false })));
  assert.equal((await ghost(c).exec("x")).stdout, "x");
  assert.notEqual(accept[0], "application/x-ndjson");
});

test("runTs and runJs stream and keep their result", async () => {
  const paths: string[] = [];
  const c = mock((r) => {
    paths.push(new URL(r.url).pathname.split("/").at(-1) ?? "");
    return ndjson([ev({ type: "stdout", data: "hi\n" }), ev({ ...EXIT, exitCode: 0, result: { n: 42 } })]);
  });
  const got: string[] = [];
  const js = await ghost(c).runJs("console.log('hi')", { onStdout: (t) => got.push(t) });
  const ts = await ghost(c).runTs({ path: "m.ts", onStderr: (t) => got.push(t) }); // stdout is still collected
  assert.deepEqual(got, ["hi\n"]);
  assert.deepEqual(paths, ["run-js", "run-ts"]);
  for (const r of [js, ts]) assert.deepEqual([r.ok, r.stdout, r.result], [true, "hi\n", { n: 42 }]);
});

test("a streamed error line throws a ServerError; a cut stream an APIConnectionError", async () => {
  const got: string[] = [];
  const failing = mock(() => ndjson([ev({ type: "stdout", data: "partial" }), ev({ type: "error", message: "Agent stream ended early" })]));
  await assert.rejects(ghost(failing).exec("x", { onStdout: (t) => got.push(t) }), (e: unknown) => {
    assert.ok(e instanceof rds.ServerError);
    assert.equal(e.message, "Agent stream ended early");
    assert.equal(e.status, undefined);
    return true;
  });
  assert.deepEqual(got, ["partial"]);
  const cut = mock(() => ndjson([ev({ type: "stdout", data: "x" })]));
  await assert.rejects(ghost(cut).exec("x", { onStdout: () => {} }), { name: "APIConnectionError", message: /ended before/ });
  const broken = mock(() => {
    const body = new ReadableStream<Uint8Array>({ pull: (ctrl) => ctrl.error(new Error("connection reset")) });
    return new Response(body, { headers: { "content-type": "application/x-ndjson" } });
  });
  await assert.rejects(ghost(broken).exec("x", { onStdout: () => {} }), { name: "APIConnectionError", message: /connection reset/ });
});

test("a refusal before the start is an ordinary error; a throwing callback ends the call", async () => {
  const c = mock(() => json(409, { message: "VM must be RUNNING" }));
  await assert.rejects(ghost(c).exec("x", { onStdout: () => {} }), { name: "ConflictError", status: 409, message: "VM must be RUNNING" });
  const cancelled = { value: false };
  const s = mock(() => ndjson([ev({ type: "stdout", data: "x" }), ev({ type: "stdout", data: "y" }), ev(EXIT)], [], cancelled));
  await assert.rejects(
    ghost(s).exec("x", {
      onStdout: () => {
        throw new RangeError("enough");
      },
    }),
    RangeError,
  );
  assert.ok(cancelled.value, "the stream was not cancelled");
});

test("a manager without streaming gives the output in one chunk", async () => {
  const c = mock(() => json(200, { exitCode: 1, stdout: "all\n", stderr: "", timedOut: false, durationMs: 3 }));
  const got: string[] = [];
  const r = await ghost(c).exec("x", { onStdout: (t) => got.push(t), onStderr: (t) => got.push(t) });
  assert.deepEqual(got, ["all\n"]);
  assert.deepEqual([r.exitCode, r.stdout, r.ok], [1, "all\n", false]);
});
