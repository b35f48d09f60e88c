#!/usr/bin/env node
// Marks each dist/**/*.js with `// @ts-self-types="./x.d.ts"`, the directive by which Deno finds a
// JavaScript module's declarations: without it, Deno type-checks an import of dist/index.js with the
// .d.ts imports resolving to untyped .js files. Node and bundlers read package.json's "types" instead
// and ignore the comment. Run by `npm run build` after tsc.
import { readFile, readdir, writeFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { basename, join } from "node:path";
import { fileURLToPath } from "node:url";

const dist = fileURLToPath(new URL("../dist", import.meta.url));
for (const rel of await readdir(dist, { recursive: true })) {
  if (!rel.endsWith(".js")) continue;
  const file = join(dist, rel);
  const dts = file.replace(/\.js$/, ".d.ts");
  const js = await readFile(file, "utf8");
  if (!existsSync(dts) || js.startsWith("// @ts-self-types")) continue;
  await writeFile(file, `// @ts-self-types="./${basename(dts)}"\n${js}`);
}
