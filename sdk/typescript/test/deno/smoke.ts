// Run by test/deno.test.ts under Deno: the built package (dist/) against the suite's manager. The
// client finds the manager through RDS_URL and RDS_API_KEY; `await using` is Deno's own.
import { Client, NotFoundError, Sandbox } from "../../dist/index.js";

let id = "";
{
  await using sb = await Sandbox.create({ metadata: { t: "deno" } });
  id = sb.id;
  const r = await sb.exec("echo hello from $(uname -s)");
  const local = await Deno.makeTempFile();
  await Deno.writeTextFile(local, "from a local file");
  await sb.files.upload("d/local.txt", local); // node:fs through Deno's Node compatibility
  await sb.files.upload("d/bytes.txt", new TextEncoder().encode("from bytes"));
  const back = await Promise.all(["d/local.txt", "d/bytes.txt"].map(async (p) => new TextDecoder().decode(await sb.files.download(p))));
  console.log(JSON.stringify({ exitCode: r.exitCode, stdout: r.stdout, back }));
}
const gone = await new Client().sandboxes.get(id).then(() => false, (e) => e instanceof NotFoundError);
console.log(JSON.stringify({ destroyed: gone }));
