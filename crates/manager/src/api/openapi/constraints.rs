//! What the validators enforce, written into the OpenAPI document: ranges (the configured limits
//! included), patterns, enums, required fields and the answers every route can give. Generated
//! clients and schemathesis's conformance checks then accept exactly what the server accepts.
//! Each rule names the validator it mirrors; `validate.rs` and the extractors stay the authority,
//! and `scripts/schemathesis.sh` checks that the two agree.
//!
//! The patterns are ECMA-262 and Python `re` compatible (schemathesis generates from them).

use crate::config::Limits;
use rds_protocol::{
    FORBIDDEN_DENO_FLAGS, FORBIDDEN_NODE_FLAGS, MAX_PATH_BYTES, MAX_RUN_ARGS, MAX_RUN_ENV,
    MAX_RUN_FLAGS, MAX_RUN_FLAG_CHARS,
};
use serde_json::{json, Map, Value};

const HEX: &str = "[0-9a-fA-F]";
/// `extract::parse_vm_id`: a hyphenated UUID of version 4, any case.
fn uuid_v4() -> String {
    format!("^{HEX}{{8}}-{HEX}{{4}}-4{HEX}{{3}}-{HEX}{{4}}-{HEX}{{12}}$")
}

/// `extract::parse_prefixed_id`: `<prefix>` in any case, then a hyphenated UUID of any version.
fn prefixed_uuid(prefix: &str) -> String {
    let p: String = prefix
        .chars()
        .map(|c| match c {
            'a'..='z' => format!("[{c}{}]", c.to_ascii_uppercase()),
            _ => c.to_string(),
        })
        .collect();
    format!("^{p}{HEX}{{8}}-{HEX}{{4}}-{HEX}{{4}}-{HEX}{{4}}-{HEX}{{12}}$")
}

/// Any string without NUL.
const NO_NUL: &str = "^[^\\u0000]*$";
/// `trim()` leaves something and there is no NUL (names and descriptions).
const NON_BLANK: &str = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$";
/// `rds_protocol::is_valid_env_key`.
const ENV_KEY: &str = "^[A-Za-z_][A-Za-z0-9_]*$";

/// A path the agent's `paths::normalize` accepts: `/workspace` or below, or relative to it, with
/// no `..` component (the agent allows a `..` that stays inside; the document states the simpler
/// rule, which every such path can be written in).
fn workspace_path() -> String {
    let seg = "(?:[^/.\\u0000][^/\\u0000]*|\\.[^/.\\u0000][^/\\u0000]*|\\.\\.[^/\\u0000]+|\\.?)";
    let first = "(?:[^/.\\u0000][^/\\u0000]*|\\.[^/.\\u0000][^/\\u0000]*|\\.\\.[^/\\u0000]+|\\.)";
    format!("^(?:/workspace|{first})(?:/{seg})*$")
}

/// `validate::allow_ips`: an IPv4/IPv6 address or CIDR of at most 64 characters, never the
/// metadata address.
fn allow_ip() -> Value {
    let o = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";
    let v4 = format!("{o}(?:\\.{o}){{3}}");
    let h = "[0-9a-fA-F]{1,4}";
    let v6 = [
        format!("(?:{h}:){{7}}{h}"),
        format!("(?:{h}:){{1,7}}:"),
        format!("(?:{h}:){{1,6}}:{h}"),
        format!("(?:{h}:){{1,5}}(?::{h}){{1,2}}"),
        format!("(?:{h}:){{1,4}}(?::{h}){{1,3}}"),
        format!("(?:{h}:){{1,3}}(?::{h}){{1,4}}"),
        format!("(?:{h}:){{1,2}}(?::{h}){{1,5}}"),
        format!("{h}:(?::{h}){{1,6}}"),
        format!(":(?:(?::{h}){{1,7}}|:)"),
        format!("::(?:[fF]{{4}}:)?{v4}"),
        format!("(?:{h}:){{6}}{v4}"),
    ]
    .join("|");
    let v4_prefix = "(?:3[0-2]|[12]?[0-9])";
    let v6_prefix = "(?:12[0-8]|1[01][0-9]|[1-9]?[0-9])";
    json!({
        "type": "string",
        "maxLength": 64,
        "pattern": format!("^(?:{v4}(?:/{v4_prefix})?|(?:{v6})(?:/{v6_prefix})?)$"),
        "not": {"enum": ["169.254.169.254", "169.254.169.254/32"]},
        "description": "An IPv4 or IPv6 address or CIDR; never 169.254.169.254.",
    })
}

/// `validate::run`: a flag starts with `-`, is at most 256 characters and is not one the runtime
/// forbids (with or without `=value`).
fn run_flags(forbidden: &[&str]) -> Value {
    let names: Vec<String> = forbidden.iter().map(|f| f.replace('.', "\\.")).collect();
    json!({
        "type": ["array", "null"],
        "maxItems": MAX_RUN_FLAGS,
        "items": {
            "type": "string",
            "pattern": "^-[^\\u0000]*$",
            "maxLength": MAX_RUN_FLAG_CHARS,
            "not": {"pattern": format!("^(?:{})(?:=|$)", names.join("|"))},
        },
        "description": format!("Flags for the runtime; not {}.", forbidden.join(", ")),
    })
}

/// A strict non-negative query integer, clamped to its range (`routes::logs::clamped`).
fn clamped_int(description: &str) -> Value {
    json!({"type": "integer", "minimum": 0, "description": description})
}

/// Sets `patch`'s keys on the object at `pointer`; `null` in the patch removes a key. A pointer
/// that names nothing is a bug in this file (the unit test applies every rule).
fn set(doc: &mut Value, pointer: &str, patch: Value) {
    let target = doc
        .pointer_mut(pointer)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("OpenAPI document has no object at {pointer}"));
    for (k, v) in patch.as_object().expect("patch is an object") {
        if v.is_null() {
            target.remove(k);
        } else {
            target.insert(k.clone(), v.clone());
        }
    }
}

fn prop(schema: &str, field: &str) -> String {
    format!("/components/schemas/{schema}/properties/{field}")
}

pub fn apply(doc: &mut Value, limits: &Limits) {
    path_ids(doc);
    query_params(doc);
    vm_bodies(doc, limits);
    run_bodies(doc, limits);
    other_bodies(doc);
    common_answers(doc);
}

/// Every `{id}` by the family of its route (`extract::VmId`, `ImageId`, `SnapshotId`, `UuidId`).
fn path_ids(doc: &mut Value) {
    let paths = doc["paths"].as_object_mut().expect("paths");
    for (path, item) in paths.iter_mut() {
        let (pattern, what) = if path.starts_with("/v1/vms/") {
            (uuid_v4(), "VM id: a UUID v4")
        } else if path.starts_with("/v1/images/") {
            (prefixed_uuid("img-"), "Image id: img-<uuid>")
        } else if path.starts_with("/v1/snapshots/") {
            (prefixed_uuid("snap-"), "Snapshot id: snap-<uuid>")
        } else {
            (uuid_v4(), "A UUID v4")
        };
        for op in operations(item) {
            for p in params(op) {
                if p["in"] == "path" && p["name"] == "id" {
                    p["schema"] = json!({"type": "string", "pattern": pattern});
                    p["description"] = json!(what);
                }
            }
        }
    }
}

fn query_params(doc: &mut Value) {
    let before = json!({"type": "string", "pattern": uuid_v4()});
    let rules: [(&str, &str, Value); 11] = [
        (
            "/v1/vms/{id}/processes/{pid}/output",
            "offset",
            json!({"type": "integer", "minimum": 0,
                "description": "Byte offset to read from (default 0); past the output so far: 400"}),
        ),
        (
            "/v1/vms/{id}/processes/{pid}/wait",
            "timeoutMs",
            json!({"type": "integer", "minimum": 1, "maximum": 600_000,
                "description": "How long to wait, 1..600000 ms; default 30000"}),
        ),
        (
            "/v1/vms/{id}/logs",
            "type",
            json!({"type": "string", "enum":
            ["vmm.log", "console.log", "vmm.stderr.log",
             "firecracker.log", "firecracker.stdout.log", "firecracker.stderr.log"]}),
        ),
        (
            "/v1/vms/{id}/logs",
            "tail",
            clamped_int("Lines, clamped to 1..1000; default 200"),
        ),
        (
            "/v1/vms/{id}/exec-logs",
            "type",
            json!({"type": "string", "enum": ["all", "exec", "run-ts", "run-js"]}),
        ),
        (
            "/v1/vms/{id}/exec-logs",
            "limit",
            clamped_int("Entries, clamped to 1..200; default 50"),
        ),
        ("/v1/vms/{id}/exec-logs", "before", before.clone()),
        (
            "/v1/admin/activity",
            "limit",
            clamped_int("Events, clamped to 1..200; default 50"),
        ),
        ("/v1/admin/activity", "before", before),
        (
            "/v1/admin/webhooks/{id}/deliveries",
            "limit",
            clamped_int("Deliveries, clamped to 1..200; default 50"),
        ),
        (
            "/v1/snapshots",
            "scope",
            json!({"type": "string", "enum": ["user", "internal", "all"]}),
        ),
    ];
    for (path, name, schema) in rules {
        let item = &mut doc["paths"][path];
        let mut found = false;
        for op in operations(item) {
            for p in params(op) {
                if p["in"] == "query" && p["name"] == name {
                    p["schema"] = schema.clone();
                    found = true;
                }
            }
        }
        assert!(found, "no query parameter {name} on {path}");
    }
    // `peers::patch`: the alias rule of `peers::valid_alias`.
    for op in operations(&mut doc["paths"]["/v1/vms/{id}/peers/{alias}"]) {
        for p in params(op) {
            if p["name"] == "alias" {
                p["schema"] = json!({"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"});
            }
        }
    }
    // `files::upload` and `files::download`: a non-empty workspace path.
    let path = json!({"type": "string", "minLength": 1, "maxLength": MAX_PATH_BYTES,
                      "pattern": workspace_path()});
    for (route, name) in [
        ("/v1/vms/{id}/files/upload", "dest"),
        ("/v1/vms/{id}/files/download", "path"),
    ] {
        for op in operations(&mut doc["paths"][route]) {
            for p in params(op) {
                if p["name"] == name {
                    p["schema"] = path.clone();
                    p["required"] = json!(true);
                }
            }
        }
    }
}

/// `validate::create_vm`, `set_timeout`, `patch_vm`.
fn vm_bodies(doc: &mut Value, l: &Limits) {
    let c = "CreateVmBody";
    set(
        doc,
        &prop(c, "cpu"),
        json!({"minimum": 1, "maximum": l.max_cpu, "format": null}),
    );
    set(
        doc,
        &prop(c, "memMb"),
        json!({"minimum": 128, "maximum": l.max_mem_mb, "format": null}),
    );
    set(
        doc,
        &prop(c, "diskSizeMb"),
        json!({"minimum": 64, "maximum": 1_048_576, "format": null}),
    );
    set(
        doc,
        &prop(c, "allowIps"),
        json!({"maxItems": l.max_allow_ips, "items": allow_ip()}),
    );
    set(
        doc,
        &prop(c, "imageId"),
        json!({"pattern": prefixed_uuid("img-")}),
    );
    for f in ["userOverlaySnapshotId", "snapshotId"] {
        set(doc, &prop(c, f), json!({"pattern": prefixed_uuid("snap-")}));
    }
    let timeout = json!({"minimum": 1, "maximum": l.max_vm_timeout_sec, "format": null});
    set(doc, &prop(c, "timeoutSec"), timeout.clone());
    set(doc, &prop("TimeoutBody", "timeoutSec"), timeout);
    // The alias may repeat the id, never name another; stated as "not both" (the same id twice is
    // accepted too).
    set(
        doc,
        &format!("/components/schemas/{c}"),
        json!({"not": {
        "required": ["userOverlaySnapshotId", "snapshotId"],
        "properties": {"userOverlaySnapshotId": {"type": "string"}, "snapshotId": {"type": "string"}}}}),
    );
    // Unique keys cannot be stated (uniqueItems compares whole entries).
    set(
        doc,
        &prop(c, "secretEnv"),
        json!({"maxItems": crate::secret_env::MAX_ENTRIES, "items": {"type": "string",
            "pattern": "^[A-Za-z_][A-Za-z0-9_]*=(?:[^\\u0000]{4,})?$"}}),
    );
    for body in [c, "PatchVmBody"] {
        // `null` means absent, as on every optional field.
        set(
            doc,
            &prop(body, "metadata"),
            json!({"type": ["object", "null"]}),
        );
        let values = format!("{}/additionalProperties", prop(body, "metadata"));
        set(doc, &values, json!({"pattern": NO_NUL}));
    }
}

/// `validate::exec` and `validate::run`.
fn run_bodies(doc: &mut Value, l: &Limits) {
    // `validate::process` checks a background process's command as exec's.
    for e in ["ExecBody", "ProcessStartBody"] {
        set(
            doc,
            &prop(e, "cmd"),
            json!({"minLength": 1, "maxLength": 262_144, "pattern": NO_NUL,
            "description": "A bash command line, at most 262144 bytes."}),
        );
        set(doc, &prop(e, "cwd"), json!({"pattern": NO_NUL}));
        set(
            doc,
            &prop(e, "env"),
            json!({"maxProperties": 256,
            "propertyNames": {"type": "string", "pattern": ENV_KEY},
            "additionalProperties": {"type": "string", "pattern": NO_NUL}}),
        );
    }
    let e = "ExecBody";
    set(
        doc,
        &prop(e, "timeoutMs"),
        json!({"minimum": 1, "maximum": l.max_exec_timeout_ms,
        "format": null, "description": "Default min(30000, MAX_EXEC_TIMEOUT_MS)."}),
    );
    for (body, flags, forbidden) in [
        ("RunTsBody", "denoFlags", FORBIDDEN_DENO_FLAGS),
        ("RunJsBody", "nodeFlags", FORBIDDEN_NODE_FLAGS),
    ] {
        set(
            doc,
            &prop(body, "code"),
            json!({"maxLength": 512 * 1024, "pattern": NO_NUL}),
        );
        set(doc, &prop(body, "path"), json!({"pattern": NO_NUL}));
        set(
            doc,
            &prop(body, "args"),
            json!({"maxItems": MAX_RUN_ARGS,
            "items": {"type": "string", "pattern": NO_NUL}}),
        );
        set(
            doc,
            &prop(body, "env"),
            json!({"maxItems": MAX_RUN_ENV,
            "items": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*=[^\\u0000]*$"}}),
        );
        doc["components"]["schemas"][body]["properties"][flags] = run_flags(forbidden);
        set(
            doc,
            &prop(body, "timeoutMs"),
            json!({"minimum": 1, "maximum": l.max_runts_timeout_ms,
            "format": null, "description": "Default min(30000, MAX_RUN_TS_TIMEOUT_MS)."}),
        );
        // Exactly one of code and path.
        set(
            doc,
            &format!("/components/schemas/{body}"),
            json!({"oneOf": [
                {"required": ["code"], "properties": {"code": {"type": "string"}, "path": {"type": "null"}}},
                {"required": ["path"], "properties": {"path": {"type": "string"}, "code": {"type": "null"}}},
            ]}),
        );
    }
}

/// Images, login, API keys and webhooks (their route handlers).
fn other_bodies(doc: &mut Value) {
    let name = |max: usize| json!({"pattern": NON_BLANK, "maxLength": max});
    set(doc, &prop("CreateImageBody", "name"), name(200));
    set(doc, &prop("CreateImageBody", "description"), name(2000));
    set(doc, &prop("CreateApiKeyBody", "name"), name(200));
    set(doc, &prop("WebhookBody", "name"), name(200));
    set(
        doc,
        &prop("WebhookBody", "url"),
        json!({"maxLength": 2048, "pattern": "^[hH][tT][tT][pP][sS]?://"}),
    );
    let mut types: Vec<&str> = crate::activity::EventType::ALL
        .iter()
        .map(|t| t.as_str())
        .collect();
    types.push("*");
    set(
        doc,
        &prop("WebhookBody", "eventTypes"),
        json!({"minItems": 1, "maxItems": 100,
        "items": {"type": "string", "enum": types}}),
    );
    for f in ["email", "password"] {
        set(doc, &prop("LoginBody", f), json!({"minLength": 1}));
    }
}

/// Answers any route can give besides its own: 400 where it takes input, and under `/v1` 401 (no
/// or bad credentials), 429 (the global rate limit) and 503 (the database is unreachable).
fn common_answers(doc: &mut Value) {
    let error = json!({"description": "Error", "content": {"application/json": {"schema":
        {"$ref": "#/components/schemas/ErrorBody"}}}});
    let paths = doc["paths"].as_object_mut().expect("paths");
    for (path, item) in paths.iter_mut() {
        for op in operations(item) {
            let takes_input = op.get("requestBody").is_some()
                || op
                    .get("parameters")
                    .and_then(Value::as_array)
                    .is_some_and(|p| !p.is_empty());
            let mut codes = Vec::new();
            if takes_input {
                codes.push("400");
            }
            if path.starts_with("/v1/") {
                codes.extend(["401", "429", "503"]);
            }
            let responses = op["responses"].as_object_mut().expect("responses");
            for code in codes {
                responses.entry(code).or_insert_with(|| error.clone());
            }
        }
    }
}

fn operations(item: &mut Value) -> impl Iterator<Item = &mut Map<String, Value>> {
    item.as_object_mut()
        .into_iter()
        .flat_map(|m| m.iter_mut())
        .filter(|(k, _)| ["get", "put", "post", "delete", "patch"].contains(&k.as_str()))
        .filter_map(|(_, v)| v.as_object_mut())
}

fn params(op: &mut Map<String, Value>) -> impl Iterator<Item = &mut Value> {
    op.get_mut("parameters")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flat_map(|a| a.iter_mut())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_agree_with_the_validators() {
        let re = |p: &str| regex_lite(p);
        assert!(re(&uuid_v4())("0f8fad5b-d9cb-469f-a165-70867728950e"));
        assert!(!re(&uuid_v4())("0f8fad5b-d9cb-169f-a165-70867728950e"));
        assert!(re(&prefixed_uuid("img-"))(
            "IMG-0f8fad5b-d9cb-169f-a165-70867728950e"
        ));
        let path = re(&workspace_path());
        for ok in ["/workspace", "/workspace/a/b", "a", "./a", "a/.b/..c", ".x"] {
            assert!(path(ok), "{ok}");
        }
        for bad in ["", "/etc", "/workspacex", "..", "a/../b", "a\0"] {
            assert!(!path(bad), "{bad}");
        }
        let ip = re(allow_ip()["pattern"].as_str().unwrap());
        for ok in [
            "1.2.3.4",
            "10.0.0.0/8",
            "::1",
            "::",
            "fe80::1/64",
            "2001:db8::/32",
            "::ffff:1.2.3.4",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:1.2.3.4",
        ] {
            assert!(ip(ok), "{ok}");
            assert!(
                crate::api::validate::allow_ip_ok(ok),
                "validator refuses {ok}"
            );
        }
        for bad in ["01.2.3.4", "1.2.3.4/33", "1.2.3", "::1/129", "1::2::3", "x"] {
            assert!(!ip(bad), "{bad}");
        }
    }

    /// The Rust `regex` crate's syntax is close enough for these patterns (no lookaround used);
    /// `\u0000` is spelled `\x00` there.
    fn regex_lite(p: &str) -> impl Fn(&str) -> bool {
        let r = regex::Regex::new(&p.replace("\\u0000", "\\x00")).expect("pattern compiles");
        move |s| r.is_match(s)
    }
}
