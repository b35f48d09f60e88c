// SDK overhead per call: `exec true` through Sandbox.exec beside the same request sent with a bare
// fetch, on one VM, interleaved so that both see the same guest; then both against a local HTTP
// server with a canned answer, which leaves the client-side cost alone. Compiled to build/bench.js; run:
//
//   scripts/test-sdk-typescript.sh --bench         # starts a manager in a namespace of its own
//   RDS_URL=... RDS_API_KEY=... node build/bench.js   # against a running manager
import { createServer } from "node:http";
import { Client, Sandbox, type VM } from "./src/index.js";
import { startManager } from "./test/manager.js";

const N = Number(process.env.RDS_BENCH_CALLS ?? "30");

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

function pct(v: number[], p: number): number {
  const s = [...v].sort((a, b) => a - b);
  return s[Math.round((s.length - 1) * p)] ?? NaN;
}

const median = (v: number[]) => pct(v, 0.5);

function report(label: string, v: number[], unit = "ms", scale = 1): void {
  const f = (x: number) => (x * scale).toFixed(scale === 1 ? 2 : 0).padStart(7);
  console.log(`${label.padEnd(18)} p50 ${f(pct(v, 0.5))} ${unit}  p90 ${f(pct(v, 0.9))} ${unit}  (n=${v.length})`);
}

/** Both against a local HTTP server with a canned answer: the client-side cost alone. */
async function benchLocal(): Promise<void> {
  const body = '{"exitCode":0,"stdout":"","stderr":"","stdoutTruncated":false,"stderrTruncated":false,"timedOut":false,"durationMs":1}';
  const server = createServer((req, res) => {
    req.resume().on("end", () => res.writeHead(200, { "content-type": "application/json" }).end(body));
  });
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  const vm = { id: "00000000-0000-4000-8000-000000000000", state: "RUNNING" } as VM;
  const sb = new Sandbox(new Client({ url, apiKey: "k" }), vm);
  const raw = () => rawExec(url, "k", vm.id);
  const sdk = () => sb.exec("true");
  const [rawUs, sdkUs] = await interleave(raw, sdk, 2000, 200);
  server.close();
  report("local: raw fetch", rawUs, "µs", 1000);
  report("local: SDK exec", sdkUs, "µs", 1000);
  console.log(`local: overhead    p50 ${((median(sdkUs) - median(rawUs)) * 1000).toFixed(0)} µs`);
}

async function rawExec(url: string, key: string, id: string): Promise<void> {
  const r = await fetch(`${url}/v1/vms/${id}/exec`, {
    method: "POST",
    headers: { "X-API-Key": key, "Content-Type": "application/json" },
    body: JSON.stringify({ cmd: "true" }),
  });
  if (!r.ok || ((await r.json()) as { exitCode: number }).exitCode !== 0) throw new Error(`raw exec failed: ${r.status}`);
}

async function interleave(a: () => Promise<unknown>, b: () => Promise<unknown>, n: number, warm: number): Promise<[number[], number[]]> {
  for (let i = 0; i < warm; i++) { // warm both connections, the JIT and the guest's exec path
    await a();
    await b();
  }
  // Alternating which goes first keeps a cost that falls on the second call of a pair (the guest
  // still writing the first one's exec log, say) from being charged to one side.
  const ta: number[] = [], tb: number[] = [];
  for (let i = 0; i < n; i++) {
    if (i % 2) {
      tb.push(await timed(b));
      ta.push(await timed(a));
    } else {
      ta.push(await timed(a));
      tb.push(await timed(b));
    }
  }
  return [ta, tb];
}

async function benchManager(url: string, key: string): Promise<void> {
  const client = new Client({ url, apiKey: key });
  await using sb = await client.sandboxes.create({ cpu: 1, memMb: 256 });
  const sdk = async () => {
    if ((await sb.exec("true")).exitCode !== 0) throw new Error("sdk exec failed");
  };
  const [raw, viaSdk] = await interleave(() => rawExec(url, key, sb.id), sdk, N, 5);
  report("raw fetch", raw);
  report("SDK Sandbox.exec", viaSdk);
  const paired = median(viaSdk.map((s, i) => s - (raw[i] ?? 0)));
  console.log(`SDK overhead       p50 ${(median(viaSdk) - median(raw)).toFixed(2)} ms  (median of paired differences ${paired.toFixed(2)} ms)`);
}

await benchLocal();
const url = process.env.RDS_URL, key = process.env.RDS_API_KEY;
if (url && key) {
  await benchManager(url, key);
} else {
  const m = await startManager();
  try {
    if (!m.guests) throw new Error("the guest image or vhost helper is missing");
    await benchManager(m.url, m.key);
  } finally {
    await m.stop();
  }
}
