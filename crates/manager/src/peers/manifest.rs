//! The provider's manifest (`.rds-peer/manifest.json`): parsing with messages that name the
//! offending field, and the callability check run against the provider's real modules. Pure: file
//! existence comes from a callback and the module listing from a run the caller makes.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashSet;

/// A manifest larger than this is refused before parsing; the per-field caps alone would allow
/// gigabytes.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
const MAX_MODULES: usize = 64;
const MAX_EXPORTS: usize = 256;
const MAX_PARAMS: usize = 64;
const MAX_EXAMPLES: usize = 32;
const MAX_STRING: usize = 64 * 1024;
/// Module load errors are quoted in API messages: a stack trace must not swamp them.
const MAX_LOAD_ERROR_CHARS: usize = 500;
/// Extensions a provider module may have; the first three run under Deno.
pub const EXTENSIONS: [&str; 7] = [".ts", ".mts", ".tsx", ".js", ".mjs", ".cjs", ".jsx"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub sdk: Sdk,
    pub modules: Vec<Module>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sdk {
    pub name: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Module {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub exports: Vec<Export>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Export {
    pub name: String,
    pub description: String,
    pub params: Vec<Param>,
    pub returns: Returns,
    pub examples: Vec<Example>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Param {
    pub name: String,
    pub description: String,
    pub schema: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Returns {
    pub description: String,
    pub schema: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Example {
    pub description: String,
    pub code: String,
}

impl Manifest {
    /// The declared export `name` of the module at `module_path`.
    pub fn export(&self, module_path: &str, name: &str) -> Option<&Export> {
        self.modules
            .iter()
            .find(|m| m.path == module_path)?
            .exports
            .iter()
            .find(|e| e.name == name)
    }

    /// What consumers get as `peers/<alias>/manifest.json`: only the known fields, pretty.
    pub fn normalised_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("a manifest always serialises");
        out.push(b'\n');
        out
    }
}

/// The runner a provider module is called with: run-ts or run-js.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Deno,
    Node,
}

/// The extension of the last component of `path` (with its dot), if any.
pub fn extension(path: &str) -> Option<&str> {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.rfind('.').filter(|&i| i > 0).map(|i| &name[i..])
}

/// run-ts (Deno) for .ts .mts .tsx, else run-js (Node).
pub fn runtime_of(path: &str) -> Runtime {
    match extension(path) {
        Some(".ts" | ".mts" | ".tsx") => Runtime::Deno,
        _ => Runtime::Node,
    }
}

/// Parses and checks everything but callability. `exists(path)` says whether `path` (relative to
/// /workspace) is a regular file in the provider's workspace. The error is the `<what is wrong>`
/// part of the API message `Peer alias <a>: <what is wrong>`. Names, `sdk` texts, export
/// descriptions and example code must be non-empty; other descriptions may be empty strings.
pub fn parse(bytes: &[u8], exists: &dyn Fn(&str) -> bool) -> Result<Manifest, String> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(format!(
            "manifest is larger than {MAX_MANIFEST_BYTES} bytes"
        ));
    }
    let root: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("manifest is not valid JSON: {e}"))?;
    let root = Obj::new(&root, "", "manifest must be a JSON object".into())?;
    let sdk_value = root.required("sdk")?;
    let sdk = Obj::new(sdk_value, "sdk", "sdk must be an object".into())?;
    let sdk = Sdk {
        name: sdk.string("name", true)?,
        description: sdk.string("description", true)?,
    };
    let mut paths = HashSet::new();
    let modules = root
        .array("modules", MAX_MODULES, true)?
        .iter()
        .enumerate()
        .map(|(i, v)| parse_module(v, &format!("modules[{i}]"), &mut paths, exists))
        .collect::<Result<_, _>>()?;
    Ok(Manifest { sdk, modules })
}

fn parse_module(
    v: &Value,
    at: &str,
    paths: &mut HashSet<String>,
    exists: &dyn Fn(&str) -> bool,
) -> Result<Module, String> {
    let m = Obj::object(v, at)?;
    let path = m.string("path", true)?;
    if !relative_path(&path) {
        return Err(format!("{at}.path must be a relative path without .."));
    }
    match extension(&path) {
        Some(ext) if EXTENSIONS.contains(&ext) => {}
        ext => {
            let ext = ext.unwrap_or("none");
            return Err(format!("{at}.path has an unsupported extension ({ext})"));
        }
    }
    if !paths.insert(path.clone()) {
        return Err(format!("duplicate module {path}"));
    }
    if !exists(&path) {
        return Err(format!("module {path} not found"));
    }
    let description = m.optional_string("description")?;
    let mut names = HashSet::new();
    let exports = m
        .array("exports", MAX_EXPORTS, true)?
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let e = Obj::object(v, &format!("{at}.exports[{i}]"))?;
            let name = e.string("name", true)?;
            if !(name == "default" || super::valid_export_name(&name)) {
                return Err(format!("{}.name is not a JavaScript identifier", e.at));
            }
            if !names.insert(name.clone()) {
                return Err(format!("duplicate export {name} in {path}"));
            }
            parse_export(&e, name)
        })
        .collect::<Result<_, _>>()?;
    Ok(Module {
        path,
        description,
        exports,
    })
}

fn parse_export(e: &Obj, name: String) -> Result<Export, String> {
    let description = e.string("description", true)?;
    let params = e
        .array("params", MAX_PARAMS, false)?
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let p = Obj::object(v, &format!("{}.params[{i}]", e.at))?;
            Ok(Param {
                name: p.string("name", true)?,
                description: p.string("description", false)?,
                schema: p.required("schema")?.clone(),
            })
        })
        .collect::<Result<_, String>>()?;
    let r = Obj::object(e.required("returns")?, &format!("{}.returns", e.at))?;
    let returns = Returns {
        description: r.string("description", false)?,
        schema: r.required("schema")?.clone(),
    };
    let examples = e
        .array("examples", MAX_EXAMPLES, true)?
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let x = Obj::object(v, &format!("{}.examples[{i}]", e.at))?;
            Ok(Example {
                description: x.string("description", false)?,
                code: x.string("code", true)?,
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(Export {
        name,
        description,
        params,
        returns,
        examples,
    })
}

/// Relative, `/`-separated, with no `.`, `..` or empty component: the same path must not be
/// spelled two ways (duplicates) nor leave the workspace, in the provider or in the consumer's
/// `proxy/` tree.
fn relative_path(path: &str) -> bool {
    !path.contains(['\\', '\0'])
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// A JSON object and where it sits in the manifest, for messages such as `modules[0].path is
/// required`.
struct Obj<'a> {
    map: &'a Map<String, Value>,
    at: String,
}

impl<'a> Obj<'a> {
    fn new(v: &'a Value, at: &str, not_object: String) -> Result<Self, String> {
        let map = v.as_object().ok_or(not_object)?;
        Ok(Obj {
            map,
            at: at.to_string(),
        })
    }

    fn object(v: &'a Value, at: &str) -> Result<Self, String> {
        Self::new(v, at, format!("{at} must be an object"))
    }

    fn name(&self, key: &str) -> String {
        if self.at.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.at)
        }
    }

    fn required(&self, key: &str) -> Result<&'a Value, String> {
        (self.map.get(key)).ok_or_else(|| format!("{} is required", self.name(key)))
    }

    fn string(&self, key: &str, non_empty: bool) -> Result<String, String> {
        let s = self.required(key)?.as_str();
        let s = s.ok_or_else(|| format!("{} must be a string", self.name(key)))?;
        if non_empty && s.is_empty() {
            return Err(format!("{} must not be empty", self.name(key)));
        }
        if s.len() > MAX_STRING {
            return Err(format!(
                "{} is longer than {MAX_STRING} bytes",
                self.name(key)
            ));
        }
        Ok(s.to_string())
    }

    /// Absent and `null` both mean none: generators often write `null` for a missing value.
    fn optional_string(&self, key: &str) -> Result<Option<String>, String> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.string(key, false).map(Some),
        }
    }

    fn array(&self, key: &str, max: usize, non_empty: bool) -> Result<&'a Vec<Value>, String> {
        let name = self.name(key);
        let a = self.required(key)?.as_array();
        let a = a.ok_or_else(|| format!("{name} must be an array"))?;
        if non_empty && a.is_empty() {
            return Err(format!("{name} must not be empty"));
        }
        if a.len() > max {
            return Err(format!("{name} has more than {max} entries"));
        }
        Ok(a)
    }
}

/// JavaScript, for run-ts and run-js alike, that imports each module and records with
/// `result.set` what it exports as functions: `{"<path>": {"functions": [...]} | {"error": "..."}}`.
pub fn listing_code(paths: &[&str]) -> String {
    let paths = serde_json::to_string(paths).expect("strings always serialise");
    // `export {}` makes Node treat the `.js` snippet as an ES module (top-level await). The default
    // export's own functions count too: that is how a CommonJS `module.exports` reaches ESM.
    // Components are URL-encoded so `#`, `?` or `%` in a file name cannot change the URL.
    format!(
        r#"export {{}};
const paths = {paths};
const listing = Object.create(null);
for (const path of paths) {{
  try {{
    const url = "file:///workspace/" + path.split("/").map(encodeURIComponent).join("/");
    const ns = await import(url);
    const names = new Set();
    for (const key of Object.keys(ns)) {{
      if (typeof ns[key] === "function") names.add(key);
    }}
    const d = ns.default;
    if (d !== null && typeof d === "object") {{
      for (const key of Object.keys(d)) {{
        try {{
          if (typeof d[key] === "function") names.add(key);
        }} catch {{
          // A throwing getter is not a function we can call.
        }}
      }}
    }}
    listing[path] = {{ functions: [...names] }};
  }} catch (e) {{
    listing[path] = {{ error: String(e) }};
  }}
}}
result.set(listing);
"#
    )
}

/// Checks every declared export against the `result` of [`listing_code`] run on the manifest's
/// module paths.
pub fn check_callable(m: &Manifest, listing: &Value) -> Result<(), String> {
    for module in &m.modules {
        let path = &module.path;
        let entry = listing.get(path);
        if let Some(error) = entry.and_then(|e| e.get("error")) {
            let error = error
                .as_str()
                .map_or_else(|| error.to_string(), str::to_string);
            let error: String = error.chars().take(MAX_LOAD_ERROR_CHARS).collect();
            return Err(format!("module {path} failed to load: {error}"));
        }
        let Some(functions) = entry
            .and_then(|e| e.get("functions"))
            .and_then(Value::as_array)
        else {
            return Err(format!("module {path} was not checked"));
        };
        let functions: HashSet<&str> = functions.iter().filter_map(Value::as_str).collect();
        if let Some(e) = module
            .exports
            .iter()
            .find(|e| !functions.contains(e.name.as_str()))
        {
            return Err(format!(
                "declared export {} of {path} is not callable",
                e.name
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "sdk": {"name": "math", "description": "Arithmetic.\nSecond line."},
            "extra": true,
            "modules": [{
                "path": "lib/math.ts",
                "description": "Sums.",
                "exports": [{
                    "name": "add", "description": "Adds.",
                    "params": [{"name": "a", "description": "left", "schema": {"type": "number"}},
                               {"name": "b", "description": "right", "schema": {"type": "number"}}],
                    "returns": {"description": "the sum", "schema": {"type": "number"}},
                    "examples": [{"description": "two", "code": "await add(1, 1)"}]
                }, {
                    "name": "default", "description": "Zero.", "params": [],
                    "returns": {"description": "0", "schema": null},
                    "examples": [{"description": "", "code": "await zero()"}]
                }]
            }, {
                "path": "cjs/util.cjs",
                "exports": [{"name": "id", "description": "Identity.",
                    "params": [{"name": "x", "description": "", "schema": {}}],
                    "returns": {"description": "x", "schema": {}},
                    "examples": [{"description": "", "code": "id(1)"}]}]
            }]
        })
    }

    fn parse_value(v: &Value) -> Result<Manifest, String> {
        parse(v.to_string().as_bytes(), &|p| p != "missing.ts")
    }

    /// The error for the sample with the value at `pointer` replaced, or removed when `None`.
    fn refused(pointer: &str, value: Option<Value>) -> String {
        let mut v = sample();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let parent = v.pointer_mut(parent).unwrap();
        match value {
            Some(value) => parent[key] = value,
            None => {
                parent.as_object_mut().unwrap().remove(key);
            }
        }
        parse_value(&v).unwrap_err()
    }

    #[test]
    fn accepts_and_normalises() {
        let m = parse_value(&sample()).unwrap();
        assert_eq!(m.sdk.name, "math");
        assert_eq!(m.modules[1].description, None);
        assert_eq!(m.modules[0].exports[1].returns.schema, Value::Null);
        assert_eq!(m.export("lib/math.ts", "add").unwrap().params.len(), 2);
        assert!(m.export("lib/math.ts", "id").is_none());
        let out = m.normalised_json();
        assert!(out.ends_with(b"}\n"));
        let back: Value = serde_json::from_slice(&out).unwrap();
        assert!(back.get("extra").is_none());
        assert!(back["modules"][1].get("description").is_none());
        assert_eq!(parse(&out, &|_| true).unwrap(), m);
    }

    #[test]
    fn refuses_with_exact_messages() {
        let err = parse(b"{", &|_| true).unwrap_err();
        assert!(err.starts_with("manifest is not valid JSON: "), "{err}");
        assert_eq!(
            parse(b"[]", &|_| true).unwrap_err(),
            "manifest must be a JSON object"
        );
        let long = "x".repeat(MAX_STRING + 1);
        let e0 = "/modules/0/exports/0";
        let cases = [
            ("/sdk/name", None, "sdk.name is required"),
            ("/sdk/name", Some(json!("")), "sdk.name must not be empty"),
            (
                "/sdk/name",
                Some(json!(long)),
                "sdk.name is longer than 65536 bytes",
            ),
            (
                "/sdk/description",
                Some(json!(1)),
                "sdk.description must be a string",
            ),
            ("/modules", Some(json!([])), "modules must not be empty"),
            (
                "/modules/0/path",
                Some(json!("x.py")),
                "modules[0].path has an unsupported extension (.py)",
            ),
            (
                "/modules/0/path",
                Some(json!("Makefile")),
                "modules[0].path has an unsupported extension (none)",
            ),
            (
                "/modules/0/path",
                Some(json!("missing.ts")),
                "module missing.ts not found",
            ),
            (
                "/modules/1/path",
                Some(json!("lib/math.ts")),
                "duplicate module lib/math.ts",
            ),
            (
                "/modules/0/exports/1/name",
                Some(json!("a-b")),
                "modules[0].exports[1].name is not a JavaScript identifier",
            ),
            (
                "/modules/0/exports/1/name",
                Some(json!("add")),
                "duplicate export add in lib/math.ts",
            ),
            (
                "/modules/0/exports",
                Some(json!([])),
                "modules[0].exports must not be empty",
            ),
        ];
        for (pointer, value, want) in cases {
            assert_eq!(refused(pointer, value), want, "{pointer}");
        }
        for path in [
            "a/../b.ts",
            "/abs.ts",
            "a//b.ts",
            "./a.ts",
            "a\\b.ts",
            "a\0.ts",
        ] {
            assert_eq!(
                refused("/modules/1/path", Some(json!(path))),
                "modules[1].path must be a relative path without ..",
                "{path:?}"
            );
        }
        let nested = [
            ("/examples", Some(json!([])), "examples must not be empty"),
            ("/params/1/schema", None, "params[1].schema is required"),
            ("/returns", Some(json!("x")), "returns must be an object"),
            (
                "/params",
                Some(json!(vec![json!({}); 65])),
                "params has more than 64 entries",
            ),
        ];
        for (pointer, value, want) in nested {
            let got = refused(&format!("{e0}{pointer}"), value);
            assert_eq!(got, format!("modules[0].exports[0].{want}"));
        }
    }

    #[test]
    fn runtime_follows_extension() {
        for p in ["a.ts", "d/b.mts", "c.tsx"] {
            assert_eq!(runtime_of(p), Runtime::Deno, "{p}");
        }
        for p in ["a.js", "b.mjs", "c.cjs", "d.jsx", "x.ts/y.js"] {
            assert_eq!(runtime_of(p), Runtime::Node, "{p}");
        }
        assert_eq!(extension(".ts"), None);
    }

    #[test]
    fn listing_code_escapes_paths() {
        let code = listing_code(&["a\"b\nc.js", "ok.ts"]);
        assert!(code.starts_with("export {};\n"));
        assert!(
            code.contains(r#"const paths = ["a\"b\nc.js","ok.ts"];"#),
            "{code}"
        );
        assert!(!code.contains("a\"b\nc"));
        assert!(code.contains("result.set(listing);"));
    }

    /// Runs the listing under Node over an ES module, a CommonJS module and one that throws.
    #[test]
    fn listing_code_lists_functions_under_node() {
        if std::process::Command::new("node")
            .arg("--version")
            .output()
            .is_err()
        {
            println!("skipped: node is not on PATH");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let files = [
            (
                "a b#.mjs",
                "export function add() {}\nexport const k = 1;\nexport default () => 0;\n",
            ),
            ("c.cjs", "module.exports = { id: (x) => x, n: 1 };\n"),
            ("bad.mjs", "throw new Error(\"nope\");\n"),
        ];
        for (name, code) in files {
            std::fs::write(dir.path().join(name), code).unwrap();
        }
        let root = format!("file://{}/", dir.path().display());
        let code =
            listing_code(&["a b#.mjs", "c.cjs", "bad.mjs"]).replace("file:///workspace/", &root);
        let script = format!(
            "globalThis.result = {{ set: (v) => console.log(JSON.stringify(v)) }};\n{code}"
        );
        let path = dir.path().join("listing.mjs");
        std::fs::write(&path, script).unwrap();
        let out = std::process::Command::new("node")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listing: Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut esm = listing["a b#.mjs"]["functions"].as_array().unwrap().clone();
        esm.sort_by_key(|v| v.to_string());
        assert_eq!(esm, [json!("add"), json!("default")]);
        let cjs = &listing["c.cjs"]["functions"];
        assert!(cjs.as_array().unwrap().contains(&json!("id")), "{cjs}");
        assert!(!cjs.as_array().unwrap().contains(&json!("n")), "{cjs}");
        assert_eq!(listing["bad.mjs"], json!({"error": "Error: nope"}));
    }

    #[test]
    fn callability() {
        let m = parse_value(&sample()).unwrap();
        let ok = json!({"lib/math.ts": {"functions": ["add", "default", "other"]},
                        "cjs/util.cjs": {"functions": ["id"]}});
        assert_eq!(check_callable(&m, &ok), Ok(()));
        let missing =
            json!({"lib/math.ts": {"functions": ["add"]}, "cjs/util.cjs": {"functions": ["id"]}});
        assert_eq!(
            check_callable(&m, &missing).unwrap_err(),
            "declared export default of lib/math.ts is not callable"
        );
        let failed = json!({"lib/math.ts": {"error": "E".repeat(600)}});
        assert_eq!(
            check_callable(&m, &failed).unwrap_err(),
            format!("module lib/math.ts failed to load: {}", "E".repeat(500))
        );
        let absent = json!({"lib/math.ts": {"functions": ["add", "default"]}});
        assert_eq!(
            check_callable(&m, &absent).unwrap_err(),
            "module cjs/util.cjs was not checked"
        );
    }
}
