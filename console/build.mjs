// Bundles the console into <out>: index.html, favicon.svg, assets/app-<hash>.js and
// assets/style-<hash>.css (content-hashed, so the manager can serve them as immutable), each with a
// gzip twin. Usage: node build.mjs <out-dir>
import * as esbuild from "esbuild";
import { copyFileSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { gzipSync } from "node:zlib";

const out = process.argv[2];
if (!out) throw new Error("usage: node build.mjs <out-dir>");
mkdirSync(join(out, "assets"), { recursive: true });

const result = await esbuild.build({
  entryPoints: { app: "src/main.tsx", style: "src/app.css" },
  outdir: join(out, "assets"),
  entryNames: "[name]-[hash]",
  bundle: true,
  minify: true,
  format: "iife",
  target: ["chrome110", "firefox115", "safari16.4"],
  jsx: "automatic",
  jsxImportSource: "preact",
  legalComments: "none",
  metafile: true,
  logLevel: "warning",
});

const outputs = Object.keys(result.metafile.outputs).map((p) => basename(p));
const js = outputs.find((f) => f.endsWith(".js"));
const css = outputs.find((f) => f.endsWith(".css"));
// No inline script or style: the page must run under `script-src 'self'; style-src 'self'`.
const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>run-dat-sheesh console</title>
<link rel="icon" href="/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/assets/${css}">
<script defer src="/assets/${js}"></script>
</head>
<body>
<div id="app"></div>
<noscript>The console needs JavaScript.</noscript>
</body>
</html>
`;
writeFileSync(join(out, "index.html"), html);
copyFileSync("public/favicon.svg", join(out, "favicon.svg"));

function gzipAll(dir) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) gzipAll(p);
    else if (!name.endsWith(".gz")) writeFileSync(`${p}.gz`, gzipSync(readFileSync(p), { level: 9 }));
  }
}
gzipAll(out);
