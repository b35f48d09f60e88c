//! Field rules of `docs/reference/api.md` §3.3 and §3.7: strict types, first failing rule reported
//! by name, no coercion, `null` on an optional field means absent.

use super::error::ApiError;
use crate::config::Limits;
use crate::lifecycle::CreateVm;
use rds_protocol::{is_valid_env_key, ExecRequest};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::net::IpAddr;

type Obj = Map<String, Value>;

/// The field if present and not null.
fn field<'a>(o: &'a Obj, name: &str) -> Option<&'a Value> {
    o.get(name).filter(|v| !v.is_null())
}

/// An integer literal within `min..=max`; floats such as `1.5` or `1.0` and strings are refused.
fn int_in(v: Option<&Value>, min: u64, max: u64) -> Option<Result<u64, ()>> {
    let v = v?;
    Some(v.as_u64().filter(|n| (min..=max).contains(n)).ok_or(()))
}

pub fn create_vm(o: &Obj, limits: &Limits) -> Result<CreateVm, ApiError> {
    let cpu_msg = format!("cpu must be an integer between 1 and {}", limits.max_cpu);
    let cpu = int_in(field(o, "cpu"), 1, u64::from(limits.max_cpu))
        .unwrap_or(Err(()))
        .map_err(|_| ApiError::bad_request(cpu_msg))?;
    let mem_msg = format!(
        "memMb must be an integer between 128 and {}",
        limits.max_mem_mb
    );
    let mem_mb = int_in(field(o, "memMb"), 128, u64::from(limits.max_mem_mb))
        .unwrap_or(Err(()))
        .map_err(|_| ApiError::bad_request(mem_msg))?;
    let allow_ips = allow_ips(field(o, "allowIps"), limits.max_allow_ips)?;
    let outbound_internet = match field(o, "outboundInternet") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::bad_request("outboundInternet must be a boolean")),
    };
    let disk_size_mb = int_in(field(o, "diskSizeMb"), 64, 1_048_576)
        .transpose()
        .map_err(|_| {
            ApiError::bad_request("diskSizeMb must be an integer between 64 and 1048576")
        })?;
    let image_id = match field(o, "imageId") {
        None => None,
        Some(Value::String(s)) if is_prefixed_uuid(s, "img-") => Some(s.to_ascii_lowercase()),
        Some(_) => return Err(ApiError::bad_request("imageId must be an image id")),
    };
    let overlay = snapshot_id(o, "userOverlaySnapshotId")?;
    let alias = snapshot_id(o, "snapshotId")?;
    let snapshot_id = match (overlay, alias) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::bad_request(
                "snapshotId and userOverlaySnapshotId differ",
            ))
        }
        (a, b) => a.or(b),
    };
    Ok(CreateVm {
        cpu: cpu as u32,
        mem_mb: mem_mb as u32,
        disk_size_mb,
        outbound_internet,
        allow_ips,
        image_id,
        snapshot_id,
    })
}

/// An optional snapshot id field: `snap-<uuid>`, lowercased.
fn snapshot_id(o: &Obj, name: &str) -> Result<Option<String>, ApiError> {
    match field(o, name) {
        None => Ok(None),
        Some(Value::String(s)) => super::extract::parse_prefixed_id(s, "snap-")
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("{name} must be a snapshot id"))),
        Some(_) => Err(ApiError::bad_request(format!(
            "{name} must be a snapshot id"
        ))),
    }
}

fn is_prefixed_uuid(s: &str, prefix: &str) -> bool {
    s.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
        && super::extract::parse_vm_id(&s[prefix.len()..]).is_some()
}

/// Each entry an IPv4/IPv6 address or CIDR (≤ 64 chars), never the metadata address; normalised to
/// the network address and de-duplicated, order kept.
fn allow_ips(v: Option<&Value>, max: usize) -> Result<Vec<String>, ApiError> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let Value::Array(items) = v else {
        return Err(ApiError::bad_request(
            "allowIps must be an array of strings",
        ));
    };
    if items.len() > max {
        return Err(ApiError::bad_request(format!(
            "allowIps must have at most {max} entries"
        )));
    }
    let mut out: Vec<String> = Vec::new();
    for item in items {
        let Value::String(e) = item else {
            return Err(ApiError::bad_request(
                "allowIps must be an array of strings",
            ));
        };
        let norm = normalise_cidr(e).ok_or_else(|| {
            ApiError::bad_request(format!("allowIps entry '{e}' is not an IP address or CIDR"))
        })?;
        if norm == "169.254.169.254" || norm == "169.254.169.254/32" {
            return Err(ApiError::bad_request(format!(
                "allowIps entry '{e}' is not allowed (metadata address)"
            )));
        }
        if !out.contains(&norm) {
            out.push(norm);
        }
    }
    Ok(out)
}

fn normalise_cidr(e: &str) -> Option<String> {
    if e.is_empty() || e.len() > 64 {
        return None;
    }
    let Some((addr, prefix)) = e.split_once('/') else {
        return e.parse::<IpAddr>().ok().map(|ip| ip.to_string());
    };
    let ip: IpAddr = addr.parse().ok()?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) || prefix.len() > 3 {
        return None;
    }
    let p: u32 = prefix.parse().ok()?;
    let net = match ip {
        IpAddr::V4(v4) if p <= 32 => {
            let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            IpAddr::from(std::net::Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) if p <= 128 => {
            let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            IpAddr::from(std::net::Ipv6Addr::from(u128::from(v6) & mask))
        }
        _ => return None,
    };
    Some(format!("{net}/{p}"))
}

/// A validated exec body and the timeout to apply.
pub fn exec(o: &Obj, limits: &Limits) -> Result<(ExecRequest, u64), ApiError> {
    let cmd = match field(o, "cmd") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) | None => return Err(ApiError::bad_request("cmd is required")),
        Some(_) => return Err(ApiError::bad_request("cmd must be a string")),
    };
    if cmd.len() > 262_144 {
        return Err(ApiError::bad_request("cmd must be at most 262144 bytes"));
    }
    if cmd.contains('\0') {
        return Err(ApiError::bad_request("cmd must not contain NUL"));
    }
    let cwd = match field(o, "cwd") {
        None => None,
        Some(Value::String(s)) if !s.contains('\0') => Some(s.clone()),
        Some(_) => return Err(ApiError::bad_request("cwd must be a string")),
    };
    let env = env_map(field(o, "env"))?;
    let timeout_ms = timeout(o, limits.max_exec_timeout_ms, "maxExecTimeoutMs")?;
    let req = ExecRequest {
        cmd,
        cwd,
        env,
        timeout_ms: Some(timeout_ms),
    };
    Ok((req, timeout_ms))
}

/// `timeoutMs`: an integer 1..=`max`, default min(30000, max); `limit_name` names the cap in the
/// message (`maxExecTimeoutMs`, `maxRunTsTimeoutMs`).
fn timeout(o: &Obj, max: u64, limit_name: &str) -> Result<u64, ApiError> {
    match field(o, "timeoutMs") {
        None => Ok(30_000.min(max)),
        Some(v) => match v.as_u64() {
            Some(n) if (1..=max).contains(&n) => Ok(n),
            Some(n) if n > max => Err(ApiError::bad_request(format!(
                "timeoutMs exceeds {limit_name}={max}"
            ))),
            _ => Err(ApiError::bad_request(
                "timeoutMs must be a positive integer",
            )),
        },
    }
}

fn env_map(v: Option<&Value>) -> Result<BTreeMap<String, String>, ApiError> {
    let Some(v) = v else {
        return Ok(BTreeMap::new());
    };
    let Value::Object(m) = v else {
        return Err(ApiError::bad_request("env must be an object of strings"));
    };
    if m.len() > 256 {
        return Err(ApiError::bad_request("env must have at most 256 keys"));
    }
    let mut out = BTreeMap::new();
    for (k, val) in m {
        if !is_valid_env_key(k) {
            return Err(ApiError::bad_request(format!("env key '{k}' is invalid")));
        }
        match val {
            Value::String(s) if !s.contains('\0') => {
                out.insert(k.clone(), s.clone());
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "env value of '{k}' must be a string without NUL"
                )))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limits() -> Limits {
        Limits {
            max_vms: 20,
            max_cpu: 4,
            max_mem_mb: 2048,
            max_allow_ips: 3,
            max_exec_timeout_ms: 120_000,
            max_runts_timeout_ms: 120_000,
        }
    }

    fn obj(v: Value) -> Obj {
        v.as_object().unwrap().clone()
    }

    fn create_err(v: Value) -> String {
        create_vm(&obj(v), &limits()).unwrap_err().message
    }

    #[test]
    fn create_rules_in_order() {
        let cpu = "cpu must be an integer between 1 and 4";
        for bad in [
            json!({"memMb": 256}),
            json!({"cpu": 0, "memMb": 256}),
            json!({"cpu": 1.5, "memMb": 256}),
            json!({"cpu": "2", "memMb": 256}),
            json!({"cpu": 5, "memMb": 256}),
            json!({"cpu": 1.0}),
            json!({"cpu": null, "memMb": 256}),
            json!({"cpu": -1}),
        ] {
            assert_eq!(create_err(bad), cpu);
        }
        let mem = "memMb must be an integer between 128 and 2048";
        assert_eq!(create_err(json!({"cpu": 1, "memMb": 64})), mem);
        assert_eq!(create_err(json!({"cpu": 1, "memMb": 2049})), mem);
        assert_eq!(create_err(json!({"cpu": 1})), mem);
        assert_eq!(
            create_err(json!({"cpu": 1, "memMb": 256, "diskSizeMb": 63})),
            "diskSizeMb must be an integer between 64 and 1048576"
        );
        assert_eq!(
            create_err(json!({"cpu": 1, "memMb": 256, "imageId": "img-123"})),
            "imageId must be an image id"
        );
        let snap = "snap-0f8fad5b-d9cb-469f-a165-70867728950e";
        let other = "snap-1f8fad5b-d9cb-469f-a165-70867728950e";
        for bad in [
            json!("snap-1"),
            json!(7),
            json!("img-0f8fad5b-d9cb-469f-a165-70867728950e"),
        ] {
            assert_eq!(
                create_err(json!({"cpu": 1, "memMb": 256, "userOverlaySnapshotId": bad})),
                "userOverlaySnapshotId must be a snapshot id"
            );
        }
        assert_eq!(
            create_err(json!({"cpu": 1, "memMb": 256, "snapshotId": "x"})),
            "snapshotId must be a snapshot id"
        );
        assert_eq!(
            create_err(
                json!({"cpu": 1, "memMb": 256, "snapshotId": snap, "userOverlaySnapshotId": other})
            ),
            "snapshotId and userOverlaySnapshotId differ"
        );
        // Either name alone, or both equal (case aside), name the same snapshot.
        for body in [
            json!({"cpu": 1, "memMb": 256, "snapshotId": snap}),
            json!({"cpu": 1, "memMb": 256, "userOverlaySnapshotId": snap.to_uppercase()}),
            json!({"cpu": 1, "memMb": 256, "snapshotId": snap, "userOverlaySnapshotId": snap.to_uppercase()}),
        ] {
            let ok = create_vm(&obj(body), &limits()).unwrap();
            assert_eq!(ok.snapshot_id.as_deref(), Some(snap));
        }
        let ok = create_vm(
            &obj(json!({"cpu": 2, "memMb": 256, "outboundInternet": null, "extra": {"x": 1}})),
            &limits(),
        )
        .unwrap();
        assert_eq!(
            (ok.cpu, ok.mem_mb, ok.outbound_internet, ok.disk_size_mb),
            (2, 256, false, None)
        );
    }

    #[test]
    fn allow_ips_rules() {
        let base = |ips: Value| json!({"cpu": 1, "memMb": 256, "allowIps": ips});
        for bad in [
            "example.com",
            "1.2.3.4/33",
            "",
            "999.1.1.1",
            "abc",
            "10.0.0.0/33",
            "10.0.0.0/+8",
            "1.2.3.4/",
        ] {
            assert_eq!(
                create_err(base(json!([bad]))),
                format!("allowIps entry '{bad}' is not an IP address or CIDR")
            );
        }
        assert_eq!(
            create_err(base(json!(["169.254.169.254"]))),
            "allowIps entry '169.254.169.254' is not allowed (metadata address)"
        );
        assert_eq!(
            create_err(base(json!(["1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4"]))),
            "allowIps must have at most 3 entries"
        );
        let ok = create_vm(
            &obj(base(json!(["10.0.0.5/24", "10.0.0.0/24", "::1"]))),
            &limits(),
        )
        .unwrap();
        assert_eq!(ok.allow_ips, vec!["10.0.0.0/24", "::1"]);
    }

    #[test]
    fn exec_rules() {
        let err = |v: Value| exec(&obj(v), &limits()).unwrap_err().message;
        assert_eq!(err(json!({})), "cmd is required");
        assert_eq!(err(json!({"cmd": ""})), "cmd is required");
        assert_eq!(err(json!({"cmd": "a\u{0}b"})), "cmd must not contain NUL");
        assert_eq!(
            err(json!({"cmd": "x", "timeoutMs": 0})),
            "timeoutMs must be a positive integer"
        );
        assert_eq!(
            err(json!({"cmd": "x", "timeoutMs": 1.5})),
            "timeoutMs must be a positive integer"
        );
        assert_eq!(
            err(json!({"cmd": "x", "timeoutMs": 120001})),
            "timeoutMs exceeds maxExecTimeoutMs=120000"
        );
        assert_eq!(
            err(json!({"cmd": "x", "env": {"1A": "v"}})),
            "env key '1A' is invalid"
        );
        let (req, t) = exec(&obj(json!({"cmd": "id", "env": {"A": "1"}})), &limits()).unwrap();
        assert_eq!(
            (req.cmd.as_str(), t, req.env.get("A").map(String::as_str)),
            ("id", 30_000, Some("1"))
        );
    }
}

/// A validated run-ts / run-js body (`docs/reference/api.md` §3.8) and its timeout. `allowNet` is
/// ignored: the manager decides it.
pub fn run(
    o: &Obj,
    limits: &Limits,
    deno: bool,
) -> Result<(rds_protocol::RunRequest, u64), ApiError> {
    let opt_string = |name: &str| -> Result<Option<String>, ApiError> {
        match field(o, name) {
            None => Ok(None),
            Some(Value::String(s)) if !s.contains('\0') => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::bad_request(format!("{name} must be a string"))),
        }
    };
    let code = opt_string("code")?;
    let path = opt_string("path")?;
    match (&code, &path) {
        (None, None) => return Err(ApiError::bad_request("code or path is required")),
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "code and path are mutually exclusive",
            ))
        }
        _ => {}
    }
    if code.as_ref().is_some_and(|c| c.len() > 512 * 1024) {
        return Err(ApiError::bad_request("code must be at most 512 KiB"));
    }
    let args = string_list(o, "args", 256)?;
    let env = string_list(o, "env", 256)?;
    for (i, e) in env.iter().enumerate() {
        if !e.split_once('=').is_some_and(|(k, _)| is_valid_env_key(k)) {
            return Err(ApiError::bad_request(format!(
                "env entry {i} must be KEY=value with a valid KEY"
            )));
        }
    }
    let (flags_name, forbidden) = if deno {
        ("denoFlags", rds_protocol::FORBIDDEN_DENO_FLAGS)
    } else {
        ("nodeFlags", rds_protocol::FORBIDDEN_NODE_FLAGS)
    };
    let flags = string_list(o, flags_name, 64)?;
    for f in &flags {
        if !f.starts_with('-') || f.len() > 256 {
            return Err(ApiError::bad_request(format!(
                "{flags_name} entry '{f}' must start with '-'"
            )));
        }
        let name = f.split_once('=').map_or(f.as_str(), |(n, _)| n);
        if forbidden.contains(&name) {
            return Err(ApiError::bad_request(format!(
                "{flags_name} entry '{f}' is not allowed"
            )));
        }
    }
    let timeout_ms = timeout(o, limits.max_runts_timeout_ms, "maxRunTsTimeoutMs")?;
    let (deno_flags, node_flags) = if deno {
        (flags, Vec::new())
    } else {
        (Vec::new(), flags)
    };
    let req = rds_protocol::RunRequest {
        code,
        path,
        args,
        env,
        deno_flags,
        node_flags,
        timeout_ms: Some(timeout_ms),
        allow_net: false,
    };
    Ok((req, timeout_ms))
}

fn string_list(o: &Obj, name: &str, max: usize) -> Result<Vec<String>, ApiError> {
    let Some(v) = field(o, name) else {
        return Ok(Vec::new());
    };
    let bad = || ApiError::bad_request(format!("{name} must be an array of at most {max} strings"));
    let Value::Array(items) = v else {
        return Err(bad());
    };
    if items.len() > max {
        return Err(bad());
    }
    items
        .iter()
        .map(|i| match i {
            Value::String(s) if !s.contains('\0') => Ok(s.clone()),
            _ => Err(bad()),
        })
        .collect()
}

#[cfg(test)]
mod run_tests {
    use super::*;
    use serde_json::json;

    fn limits() -> Limits {
        Limits {
            max_vms: 20,
            max_cpu: 4,
            max_mem_mb: 2048,
            max_allow_ips: 3,
            max_exec_timeout_ms: 120_000,
            max_runts_timeout_ms: 60_000,
        }
    }

    fn err(v: serde_json::Value, deno: bool) -> String {
        run(v.as_object().unwrap(), &limits(), deno)
            .unwrap_err()
            .message
    }

    #[test]
    fn run_rules() {
        assert_eq!(err(json!({}), true), "code or path is required");
        assert_eq!(
            err(json!({"code": "1", "path": "a.ts"}), true),
            "code and path are mutually exclusive"
        );
        assert_eq!(
            err(json!({"code": "1", "env": ["A=1", "1A=2"]}), true),
            "env entry 1 must be KEY=value with a valid KEY"
        );
        assert_eq!(
            err(json!({"code": "1", "env": ["NOEQ"]}), false),
            "env entry 0 must be KEY=value with a valid KEY"
        );
        assert_eq!(
            err(json!({"code": "1", "denoFlags": ["-A"]}), true),
            "denoFlags entry '-A' is not allowed"
        );
        assert_eq!(
            err(json!({"code": "1", "denoFlags": ["--allow-run=ls"]}), true),
            "denoFlags entry '--allow-run=ls' is not allowed"
        );
        assert_eq!(
            err(json!({"code": "1", "denoFlags": ["x"]}), true),
            "denoFlags entry 'x' must start with '-'"
        );
        assert_eq!(
            err(json!({"code": "1", "nodeFlags": ["-e"]}), false),
            "nodeFlags entry '-e' is not allowed"
        );
        assert_eq!(
            err(json!({"code": "1", "timeoutMs": 60_001}), false),
            "timeoutMs exceeds maxRunTsTimeoutMs=60000"
        );
        let (req, t) = run(
            json!({"code": "1", "allowNet": true, "args": ["a"]})
                .as_object()
                .unwrap(),
            &limits(),
            true,
        )
        .unwrap();
        assert_eq!((t, req.allow_net, req.args.len()), (30_000, false, 1));
    }
}
