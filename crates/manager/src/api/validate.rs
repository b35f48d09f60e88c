//! Field rules of `docs/reference/api.md` §3.3 and §3.7: strict types, first failing rule reported
//! by name, no coercion, `null` on an optional field means absent.

use super::error::ApiError;
use crate::config::Limits;
use crate::lifecycle::labels::{
    is_metadata_key, MetadataPatch, MAX_METADATA_KEYS, MAX_METADATA_KEY_LEN,
    MAX_METADATA_VALUE_CHARS,
};
use crate::lifecycle::CreateVm;
use crate::model::TimeoutAction;
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
        Some(Value::String(s)) => Some(
            super::extract::parse_prefixed_id(s, "img-")
                .ok_or_else(|| ApiError::bad_request("imageId must be an image id"))?,
        ),
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
    let secret_env = secret_env(field(o, "secretEnv"))?;
    let timeout_sec = match vm_timeout(field(o, "timeoutSec"), limits)? {
        None if limits.default_vm_timeout_sec > 0 => Some(limits.default_vm_timeout_sec),
        t => t,
    };
    let timeout_action = timeout_action(field(o, "timeoutAction"))?.unwrap_or_default();
    let metadata = metadata(field(o, "metadata"))?;
    let peer_links = peer_links(field(o, "peerLinks"))?;
    Ok(CreateVm {
        cpu: cpu as u32,
        mem_mb: mem_mb as u32,
        disk_size_mb,
        outbound_internet,
        allow_ips,
        image_id,
        snapshot_id,
        timeout_sec,
        timeout_action,
        metadata,
        secret_env,
        peer_links,
    })
}

/// `peerLinks` (`docs/peers.md`): at most 16 `{alias, vmId, sourceMode?}`, aliases valid and
/// unique, `vmId` a VM id. Whether the targets exist and offer a manifest is the lifecycle's check.
fn peer_links(v: Option<&Value>) -> Result<Vec<crate::peers::PeerLink>, ApiError> {
    use crate::peers::{valid_alias, PeerLink, SourceMode, MAX_LINKS};
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    let shape = || {
        ApiError::bad_request(format!(
            "peerLinks must be an array of at most {MAX_LINKS} {{alias, vmId, sourceMode}} objects"
        ))
    };
    let items = v
        .as_array()
        .filter(|a| a.len() <= MAX_LINKS)
        .ok_or_else(shape)?;
    let mut links: Vec<PeerLink> = Vec::with_capacity(items.len());
    for item in items {
        let o = item.as_object().ok_or_else(shape)?;
        let alias = match field(o, "alias") {
            Some(Value::String(a)) if valid_alias(a) => a.clone(),
            _ => return Err(ApiError::bad_request("Invalid peerLinks alias")),
        };
        if links.iter().any(|l| l.alias == alias) {
            return Err(ApiError::bad_request("peerLinks aliases must be unique"));
        }
        let vm_id = match field(o, "vmId") {
            Some(Value::String(s)) => super::extract::parse_vm_id(s),
            _ => None,
        }
        .ok_or_else(|| ApiError::bad_request("peerLinks vmId must be a VM id"))?;
        let source_mode = match field(o, "sourceMode") {
            None => SourceMode::default(),
            Some(Value::String(m)) => SourceMode::parse(m).ok_or_else(|| {
                ApiError::bad_request("peerLinks sourceMode must be hidden or mounted")
            })?,
            Some(_) => {
                return Err(ApiError::bad_request(
                    "peerLinks sourceMode must be hidden or mounted",
                ))
            }
        };
        links.push(PeerLink {
            alias,
            vm_id,
            source_mode,
        });
    }
    Ok(links)
}

/// `secretEnv` (`docs/secret-env.md`): at most 64 `KEY=value` strings, valid and unique keys, each
/// value empty or at least 4 bytes (so scrubbing it cannot erase common text), no NUL. Whether
/// `VM_SECRET_KEY` is set is the route's check, after these.
fn secret_env(v: Option<&Value>) -> Result<crate::secret_env::Entries, ApiError> {
    use crate::secret_env::{MAX_ENTRIES, MIN_VALUE_BYTES};
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    let bad_list = || {
        ApiError::bad_request(format!(
            "secretEnv must be an array of at most {MAX_ENTRIES} strings"
        ))
    };
    let Value::Array(items) = v else {
        return Err(bad_list());
    };
    if items.len() > MAX_ENTRIES {
        return Err(bad_list());
    }
    let mut out: crate::secret_env::Entries = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let entry = match item {
            Value::String(s) if !s.contains('\0') => s.split_once('='),
            _ => None,
        };
        let Some((k, val)) = entry.filter(|(k, _)| is_valid_env_key(k)) else {
            return Err(ApiError::bad_request(format!(
                "secretEnv entry {i} must be KEY=value with a valid KEY"
            )));
        };
        if out.iter().any(|(seen, _)| seen == k) {
            return Err(ApiError::bad_request(format!(
                "secretEnv key {k} is duplicated"
            )));
        }
        if !val.is_empty() && val.len() < MIN_VALUE_BYTES {
            return Err(ApiError::bad_request(format!(
                "secretEnv value of {k} must be empty or at least {MIN_VALUE_BYTES} bytes"
            )));
        }
        out.push((k.to_string(), val.to_string()));
    }
    Ok(out)
}

/// `timeoutSec`: an integer 1..=`MAX_VM_TIMEOUT_SEC`, or absent.
fn vm_timeout(v: Option<&Value>, limits: &Limits) -> Result<Option<u64>, ApiError> {
    let max = limits.max_vm_timeout_sec;
    int_in(v, 1, max).transpose().map_err(|_| {
        ApiError::bad_request(format!("timeoutSec must be an integer between 1 and {max}"))
    })
}

/// `timeoutAction`: `destroy` or `pause`, or absent.
fn timeout_action(v: Option<&Value>) -> Result<Option<TimeoutAction>, ApiError> {
    match v {
        None => Ok(None),
        Some(Value::String(s)) if TimeoutAction::parse(s).is_some() => Ok(TimeoutAction::parse(s)),
        Some(_) => Err(ApiError::bad_request(
            "timeoutAction must be 'destroy' or 'pause'",
        )),
    }
}

/// A `POST /v1/vms/:id/timeout` body: `timeoutSec` an integer 1..=`MAX_VM_TIMEOUT_SEC` or `null`
/// (required: `null` clears the deadline), and an optional `timeoutAction`.
pub fn set_timeout(
    o: &Obj,
    limits: &Limits,
) -> Result<(Option<u64>, Option<TimeoutAction>), ApiError> {
    let Some(t) = o.get("timeoutSec") else {
        return Err(ApiError::bad_request(
            "timeoutSec is required (an integer, or null to clear the deadline)",
        ));
    };
    let timeout_sec = vm_timeout(Some(t).filter(|v| !v.is_null()), limits)?;
    let action = timeout_action(field(o, "timeoutAction"))?;
    Ok((timeout_sec, action))
}

const METADATA_OBJECT: &str = "metadata must be an object of strings";

fn metadata_key(k: &str) -> Result<(), ApiError> {
    if is_metadata_key(k) {
        return Ok(());
    }
    let shown: String = k.chars().take(100).collect();
    Err(ApiError::bad_request(format!(
        "metadata key '{shown}' is invalid (1-{MAX_METADATA_KEY_LEN} characters of A-Z a-z 0-9 _ . -)"
    )))
}

fn metadata_value(k: &str, v: &str) -> Result<String, ApiError> {
    if v.chars().count() > MAX_METADATA_VALUE_CHARS {
        return Err(ApiError::bad_request(format!(
            "metadata value of '{k}' is longer than {MAX_METADATA_VALUE_CHARS} characters"
        )));
    }
    if v.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "metadata value of '{k}' must not contain NUL"
        )));
    }
    Ok(v.to_string())
}

fn too_many_keys() -> ApiError {
    ApiError::bad_request(format!(
        "metadata may have at most {MAX_METADATA_KEYS} keys"
    ))
}

/// Create's `metadata`: an object of at most 50 string values under valid keys; absent: `{}`.
fn metadata(v: Option<&Value>) -> Result<BTreeMap<String, String>, ApiError> {
    let Some(v) = v else {
        return Ok(BTreeMap::new());
    };
    let Value::Object(m) = v else {
        return Err(ApiError::bad_request(METADATA_OBJECT));
    };
    if m.len() > MAX_METADATA_KEYS {
        return Err(too_many_keys());
    }
    let mut out = BTreeMap::new();
    for (k, val) in m {
        metadata_key(k)?;
        let Value::String(s) = val else {
            return Err(ApiError::bad_request(METADATA_OBJECT));
        };
        out.insert(k.clone(), metadata_value(k, s)?);
    }
    Ok(out)
}

/// A `PATCH /v1/vms/:id` body: `metadata`, an object whose string values set keys and whose `null`
/// values remove them. Other fields are ignored, like unknown fields everywhere; without
/// `metadata` nothing changes. The key count of the result is checked against the VM's current
/// metadata by the lifecycle.
pub fn patch_vm(o: &Obj) -> Result<MetadataPatch, ApiError> {
    let Some(v) = field(o, "metadata") else {
        return Ok(MetadataPatch::new());
    };
    let Value::Object(m) = v else {
        return Err(ApiError::bad_request(
            "metadata must be an object of strings or nulls",
        ));
    };
    let mut out = MetadataPatch::new();
    for (k, val) in m {
        metadata_key(k)?;
        let value = match val {
            Value::Null => None,
            Value::String(s) => Some(metadata_value(k, s)?),
            _ => {
                return Err(ApiError::bad_request(
                    "metadata must be an object of strings or nulls",
                ))
            }
        };
        out.insert(k.clone(), value);
    }
    Ok(out)
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

/// For the OpenAPI pattern's test: whether `allowIps` takes this entry.
#[cfg(test)]
pub(crate) fn allow_ip_ok(e: &str) -> bool {
    normalise_cidr(e).is_some()
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

/// A background process (`docs/api.md` "Processes"): `cmd`, `cwd` and `env` as for exec;
/// `timeoutMs` optional (none: runs until it ends, is signalled, or the VM stops), at most a day.
pub fn process(o: &Obj, limits: &Limits) -> Result<(ExecRequest, Option<u64>), ApiError> {
    const MAX_PROCESS_TIMEOUT_MS: u64 = 86_400_000;
    let timeout_ms = match field(o, "timeoutMs") {
        None => None,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_PROCESS_TIMEOUT_MS).contains(&n) => Some(n),
            Some(n) if n > MAX_PROCESS_TIMEOUT_MS => {
                return Err(ApiError::bad_request(format!(
                    "timeoutMs exceeds {MAX_PROCESS_TIMEOUT_MS}"
                )))
            }
            _ => {
                return Err(ApiError::bad_request(
                    "timeoutMs must be a positive integer",
                ))
            }
        },
    };
    let mut rest = o.clone();
    rest.remove("timeoutMs");
    let (mut req, _) = exec(&rest, limits)?;
    req.timeout_ms = timeout_ms;
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
            max_vm_timeout_sec: 86_400,
            default_vm_timeout_sec: 0,
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
    fn lifetime_and_metadata_rules() {
        let base = |extra: Value| {
            let mut o = obj(json!({"cpu": 1, "memMb": 256}));
            o.extend(obj(extra));
            o
        };
        let err = |extra: Value| create_vm(&base(extra), &limits()).unwrap_err().message;
        let timeout = "timeoutSec must be an integer between 1 and 86400";
        for bad in [
            json!(0),
            json!(86_401),
            json!(1.5),
            json!("60"),
            json!(-1),
            json!(true),
        ] {
            assert_eq!(err(json!({ "timeoutSec": bad })), timeout);
        }
        for bad in [json!("Destroy"), json!(""), json!(1), json!(["pause"])] {
            assert_eq!(
                err(json!({ "timeoutAction": bad })),
                "timeoutAction must be 'destroy' or 'pause'"
            );
        }
        let object = "metadata must be an object of strings";
        for bad in [
            json!([]),
            json!("a=b"),
            json!({"a": 1}),
            json!({"a": null}),
            json!({"a": {"b": "c"}}),
        ] {
            assert_eq!(err(json!({ "metadata": bad })), object);
        }
        let many: Map<String, Value> = (0..51).map(|i| (format!("k{i}"), json!("v"))).collect();
        assert_eq!(
            err(json!({ "metadata": many })),
            "metadata may have at most 50 keys"
        );
        let long_key = "k".repeat(65);
        for bad in ["", "a b", "é", "a/b", long_key.as_str()] {
            assert_eq!(
                err(json!({"metadata": {bad: "v"}})),
                format!("metadata key '{bad}' is invalid (1-64 characters of A-Z a-z 0-9 _ . -)")
            );
        }
        assert_eq!(
            err(json!({"metadata": {"a": "é".repeat(513)}})),
            "metadata value of 'a' is longer than 512 characters"
        );
        assert_eq!(
            err(json!({"metadata": {"a": "x\u{0}y"}})),
            "metadata value of 'a' must not contain NUL"
        );

        // Valid: the limits themselves; null means absent.
        let fifty: Map<String, Value> = (0..50).map(|i| (format!("k{i}"), json!("v"))).collect();
        let ok = create_vm(
            &base(json!({"timeoutSec": 86_400, "timeoutAction": "pause", "metadata": fifty})),
            &limits(),
        )
        .unwrap();
        assert_eq!(ok.timeout_sec, Some(86_400));
        assert_eq!(ok.timeout_action, TimeoutAction::Pause);
        assert_eq!(ok.metadata.len(), 50);
        let key = "A-z_0.9".to_string() + &"k".repeat(57);
        let ok = create_vm(
            &base(json!({"metadata": {key.clone(): "é".repeat(512)}, "timeoutSec": null})),
            &limits(),
        )
        .unwrap();
        assert_eq!(ok.metadata[&key].chars().count(), 512);
        assert_eq!(ok.timeout_sec, None);
        assert_eq!(ok.timeout_action, TimeoutAction::Destroy);

        // DEFAULT_VM_TIMEOUT_SEC fills in only when timeoutSec is absent or null.
        let mut with_default = limits();
        with_default.default_vm_timeout_sec = 600;
        for (body, want) in [
            (json!({}), Some(600)),
            (json!({"timeoutSec": null}), Some(600)),
            (json!({"timeoutSec": 5}), Some(5)),
        ] {
            let ok = create_vm(&base(body), &with_default).unwrap();
            assert_eq!(ok.timeout_sec, want);
        }
    }

    #[test]
    fn timeout_and_patch_bodies() {
        let timeout = |v: Value| set_timeout(&obj(v), &limits());
        assert_eq!(
            timeout(json!({})).unwrap_err().message,
            "timeoutSec is required (an integer, or null to clear the deadline)"
        );
        assert_eq!(
            timeout(json!({"timeoutSec": 0})).unwrap_err().message,
            "timeoutSec must be an integer between 1 and 86400"
        );
        assert_eq!(
            timeout(json!({"timeoutSec": 5, "timeoutAction": "stop"}))
                .unwrap_err()
                .message,
            "timeoutAction must be 'destroy' or 'pause'"
        );
        assert_eq!(timeout(json!({"timeoutSec": null})).unwrap(), (None, None));
        assert_eq!(
            timeout(json!({"timeoutSec": 60, "timeoutAction": "pause"})).unwrap(),
            (Some(60), Some(TimeoutAction::Pause))
        );

        let patch = |v: Value| patch_vm(&obj(v));
        assert!(patch(json!({})).unwrap().is_empty());
        assert!(patch(json!({"metadata": null, "cpu": 4}))
            .unwrap()
            .is_empty());
        for bad in [json!([]), json!({"a": 1}), json!({"a": ["b"]})] {
            assert_eq!(
                patch(json!({ "metadata": bad })).unwrap_err().message,
                "metadata must be an object of strings or nulls"
            );
        }
        assert_eq!(
            patch(json!({"metadata": {"a b": null}}))
                .unwrap_err()
                .message,
            "metadata key 'a b' is invalid (1-64 characters of A-Z a-z 0-9 _ . -)"
        );
        let p = patch(json!({"metadata": {"a": "1", "b": null}})).unwrap();
        assert_eq!(p["a"].as_deref(), Some("1"));
        assert_eq!(p["b"], None);
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
            max_vm_timeout_sec: 86_400,
            default_vm_timeout_sec: 0,
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
