//! VMs, exec and run, logs.

use crate::args::{CreateArgs, ExecArgs, Peer, RunArgs, TimeoutAction, VmCmd};
use crate::client::{root_cause, Client, Failure};
use crate::output::{cell, list_table, object, table};
use crate::stream;
use crate::Out;
use reqwest::Method;
use serde_json::{json, Map, Value};

const VM_COLS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("STATE", "state"),
    ("CPU", "cpu"),
    ("MEM_MB", "memMb"),
    ("IP", "guestIp"),
    ("IMAGE", "imageId"),
    ("CREATED", "createdAt"),
];

pub fn create_body(a: &CreateArgs, snapshot: Option<&str>) -> Value {
    let mut b = Map::new();
    b.insert("cpu".into(), json!(a.cpu));
    b.insert("memMb".into(), json!(a.mem));
    let mut opt = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            b.insert(k.into(), v);
        }
    };
    opt("imageId", a.image.as_ref().map(|v| json!(v)));
    opt("diskSizeMb", a.disk.map(|v| json!(v)));
    opt(
        "allowIps",
        (!a.allow_ip.is_empty()).then(|| json!(a.allow_ip)),
    );
    opt("outboundInternet", a.outbound.then_some(json!(true)));
    let snap = snapshot.or(a.snapshot.as_deref());
    opt("userOverlaySnapshotId", snap.map(|v| json!(v)));
    opt("timeoutSec", a.timeout.map(|v| json!(v)));
    opt(
        "timeoutAction",
        a.timeout_action.map(|t| json!(action_name(t))),
    );
    let meta: Map<String, Value> = a
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    opt(
        "metadata",
        (!meta.is_empty()).then_some(Value::Object(meta)),
    );
    opt(
        "secretEnv",
        (!a.secret_env.is_empty()).then(|| json!(a.secret_env)),
    );
    opt(
        "peerLinks",
        (!a.peer.is_empty()).then(|| a.peer.iter().map(peer_link).collect()),
    );
    Value::Object(b)
}

fn peer_link(p: &Peer) -> Value {
    let mut link = json!({"alias": p.alias, "vmId": p.vm_id});
    if let Some(m) = p.mode {
        link["sourceMode"] = json!(m.name());
    }
    link
}

/// A VM as `field  value` lines, its peer links as `--peer` writes them: `alias=vmId:mode, …`.
pub fn vm_object(vm: &Value) -> String {
    let mut vm = vm.clone();
    if let Some(links) = vm.get("peerLinks").and_then(Value::as_array) {
        let text: Vec<String> = links
            .iter()
            .map(|l| {
                let f = |k: &str| l.get(k).and_then(Value::as_str).unwrap_or("?");
                format!("{}={}:{}", f("alias"), f("vmId"), f("sourceMode"))
            })
            .collect();
        vm["peerLinks"] = if text.is_empty() {
            Value::Null
        } else {
            json!(text.join(", "))
        };
    }
    object(&vm)
}

fn action_name(a: TimeoutAction) -> &'static str {
    match a {
        TimeoutAction::Destroy => "destroy",
        TimeoutAction::Pause => "pause",
    }
}

pub async fn create(c: &Client, out: &Out, body: Value) -> Result<(), Failure> {
    let vm = c.post("/v1/vms", Some(body)).await?;
    out.show(&vm, || vm_object(&vm));
    Ok(())
}

pub async fn run(c: &Client, out: &Out, cmd: VmCmd) -> Result<(), Failure> {
    match cmd {
        VmCmd::Create(a) => create(c, out, create_body(&a, None)).await,
        VmCmd::Ls { state, meta } => {
            let mut q: Vec<(&str, String)> = state.map(|s| ("state", s)).into_iter().collect();
            let keys: Vec<String> = meta.iter().map(|(k, _)| format!("metadata.{k}")).collect();
            for (k, (_, v)) in keys.iter().zip(&meta) {
                q.push((k.as_str(), v.clone()));
            }
            let list = c.get("/v1/vms", &q).await?;
            out.show(&list, || list_table(&list, VM_COLS));
            Ok(())
        }
        VmCmd::Get { id } => {
            let vm = c.get(&format!("/v1/vms/{id}"), &[]).await?;
            out.show(&vm, || vm_object(&vm));
            Ok(())
        }
        VmCmd::Start { id } => action(c, out, &id, "start", "started").await,
        VmCmd::Stop { id } => action(c, out, &id, "stop", "stopped").await,
        VmCmd::Pause { id } => action(c, out, &id, "pause", "paused").await,
        VmCmd::Resume { id } => action(c, out, &id, "resume", "resumed").await,
        VmCmd::Timeout {
            id,
            seconds,
            action,
        } => {
            let secs = match seconds.as_str() {
                "off" => Value::Null,
                s => json!(s.parse::<u64>().map_err(|_| {
                    Failure::usage(format!("timeout must be seconds or 'off', got '{s}'"))
                })?),
            };
            let mut body = json!({ "timeoutSec": secs });
            if let Some(a) = action {
                body["timeoutAction"] = json!(action_name(a));
            }
            let vm = c.post(&format!("/v1/vms/{id}/timeout"), Some(body)).await?;
            out.show(&vm, || vm_object(&vm));
            Ok(())
        }
        VmCmd::Label { id, set, remove } => {
            let mut patch: Map<String, Value> =
                set.into_iter().map(|(k, v)| (k, json!(v))).collect();
            patch.extend(remove.into_iter().map(|k| (k, Value::Null)));
            let body = json!({ "metadata": patch });
            let path = format!("/v1/vms/{id}");
            let vm = c.call(Method::PATCH, &path, &[], Some(body)).await?;
            out.show(&vm, || vm_object(&vm));
            Ok(())
        }
        VmCmd::PeersSync { id } => action(c, out, &id, "peers/sync", "peers synced").await,
        VmCmd::PeerMode { id, alias, mode } => {
            let body = json!({ "sourceMode": mode.name() });
            let path = format!("/v1/vms/{id}/peers/{}", path_segment(&alias));
            c.call(Method::PATCH, &path, &[], Some(body)).await?;
            out.done(&id, &format!("peer {alias} set to {}", mode.name()));
            Ok(())
        }
        VmCmd::Rm { ids } => {
            for id in &ids {
                c.delete(&format!("/v1/vms/{id}")).await?;
                if !out.json {
                    println!("{id} deleted");
                }
            }
            if out.json {
                println!("{}", json!({"ok": true, "ids": ids}));
            }
            Ok(())
        }
    }
}

async fn action(c: &Client, out: &Out, id: &str, verb: &str, done: &str) -> Result<(), Failure> {
    let v = c.post(&format!("/v1/vms/{id}/{verb}"), None).await?;
    if v.is_null() {
        out.done(id, done);
    } else {
        out.show(&v, || format!("{id} {done}\n"));
    }
    Ok(())
}

/// `s` as one URL path segment: aliases are `[A-Za-z0-9_-]`, anything else is escaped so that
/// a typo reaches the manager's "unknown alias" answer instead of another route.
fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One word as the shell reads it literally.
fn quote(w: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_./=:,@%+-".contains(c);
    if !w.is_empty() && w.chars().all(safe) {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

/// The API runs `cmd` under a shell: one argument is a command line as typed, several are argv.
pub fn command_line(words: &[String]) -> String {
    match words {
        [one] => one.clone(),
        _ => words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" "),
    }
}

/// Prints a command's output as the API returned it and gives the exit code to leave with.
fn relay(out: &Out, r: &Value) -> i32 {
    use std::io::Write;
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    if out.json {
        let _ = writeln!(stdout, "{r}");
        let _ = stdout.flush();
        return stream::exit_code(r);
    }
    let text = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or_default();
    let _ = stdout.write_all(text("stdout").as_bytes());
    let _ = stderr.write_all(text("stderr").as_bytes());
    stream::finish(r, &mut stdout, &mut stderr)
}

/// exec, run-ts and run-js: streamed (output as it comes) unless `--json` asks for the buffered
/// answer as one document. A manager without streaming answers the buffered form, relayed as such.
async fn call(c: &Client, out: &Out, path: &str, body: Value) -> Result<i32, Failure> {
    if out.json {
        let r = c.post(path, Some(body)).await?;
        return Ok(relay(out, &r));
    }
    let rb = c
        .request(Method::POST, path, &[])
        .header("accept", stream::NDJSON)
        .header("content-type", "application/json")
        .body(body.to_string());
    let resp = c.send(rb).await?;
    let content_type = resp.headers().get("content-type");
    if !stream::is_ndjson(content_type.and_then(|v| v.to_str().ok())) {
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Failure::conn(format!("reading the answer: {}", root_cause(&e))))?;
        let r: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Failure::conn(format!("the answer is not JSON: {e}")))?;
        return Ok(relay(out, &r));
    }
    let mut to = stream::Relay {
        out: std::io::stdout(),
        err: std::io::stderr(),
    };
    stream::follow(resp.bytes_stream(), &mut to).await
}

pub async fn exec(c: &Client, out: &Out, a: ExecArgs) -> Result<i32, Failure> {
    let mut body = json!({"cmd": command_line(&a.cmd)});
    if let Some(cwd) = a.cwd {
        body["cwd"] = json!(cwd);
    }
    if !a.env.is_empty() {
        body["env"] = Value::Object(a.env.into_iter().map(|(k, v)| (k, json!(v))).collect());
    }
    if let Some(t) = a.timeout_ms {
        body["timeoutMs"] = json!(t);
    }
    call(c, out, &format!("/v1/vms/{}/exec", a.id), body).await
}

pub async fn run_code(c: &Client, out: &Out, a: RunArgs, route: &str) -> Result<i32, Failure> {
    let code = std::fs::read_to_string(&a.file)
        .map_err(|e| Failure::usage(format!("{}: {e}", a.file.display())))?;
    let mut body = json!({"code": code});
    if !a.args.is_empty() {
        body["args"] = json!(a.args);
    }
    if let Some(t) = a.timeout_ms {
        body["timeoutMs"] = json!(t);
    }
    call(c, out, &format!("/v1/vms/{}/{route}", a.id), body).await
}

pub async fn logs(
    c: &Client,
    out: &Out,
    id: &str,
    kind: Option<String>,
    tail: Option<u32>,
) -> Result<(), Failure> {
    let mut q = Vec::new();
    if let Some(k) = kind {
        q.push(("type", k));
    }
    if let Some(t) = tail {
        q.push(("tail", t.to_string()));
    }
    let r = c.get(&format!("/v1/vms/{id}/logs"), &q).await?;
    out.show(&r, || {
        let lines = r
            .get("lines")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        lines
            .iter()
            .map(|l| format!("{}\n", l.as_str().unwrap_or_default()))
            .collect()
    });
    Ok(())
}

pub async fn exec_logs(
    c: &Client,
    out: &Out,
    id: &str,
    kind: Option<String>,
    limit: Option<u32>,
) -> Result<(), Failure> {
    let mut q = Vec::new();
    if let Some(k) = kind {
        q.push(("type", k));
    }
    if let Some(l) = limit {
        q.push(("limit", l.to_string()));
    }
    let r = c.get(&format!("/v1/vms/{id}/exec-logs"), &q).await?;
    out.show(&r, || {
        let entries = r
            .get("entries")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|e| {
                let input = e.get("input");
                let what = input
                    .and_then(|i| i.get("cmd").or_else(|| i.get("path")))
                    .filter(|v| !v.is_null())
                    .map(|v| cell(Some(v)))
                    .unwrap_or_else(|| "<code>".into());
                vec![
                    cell(e.get("timestamp")),
                    cell(e.get("type")),
                    cell(e.get("result").and_then(|r| r.get("exitCode"))),
                    cell(e.get("durationMs")),
                    crate::client::one_line(&what),
                ]
            })
            .collect();
        table(&["TIME", "TYPE", "EXIT", "MS", "INPUT"], &rows)
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_become_peer_links_and_read_back_as_flags() {
        use crate::args::{Cli, Cmd};
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "rds",
            "vm",
            "create",
            "--peer",
            "math=p-1",
            "--peer",
            "src=p-2:mounted",
        ])
        .unwrap();
        let Cmd::Vm(VmCmd::Create(a)) = cli.cmd else {
            panic!("not vm create")
        };
        assert_eq!(
            create_body(&a, None)["peerLinks"],
            json!([{"alias": "math", "vmId": "p-1"},
                   {"alias": "src", "vmId": "p-2", "sourceMode": "mounted"}])
        );
        let plain = Cli::try_parse_from(["rds", "vm", "create"]).unwrap();
        let Cmd::Vm(VmCmd::Create(a)) = plain.cmd else {
            panic!("not vm create")
        };
        assert!(create_body(&a, None).get("peerLinks").is_none());

        let vm = json!({"id": "v", "peerLinks": [
            {"alias": "math", "vmId": "p-1", "sourceMode": "hidden"},
            {"alias": "src", "vmId": "p-2", "sourceMode": "mounted"}]});
        assert_eq!(
            vm_object(&vm),
            "id         v\npeerLinks  math=p-1:hidden, src=p-2:mounted\n"
        );
        assert_eq!(
            vm_object(&json!({"id": "v", "peerLinks": []})),
            "id         v\npeerLinks  -\n"
        );
        assert_eq!(path_segment("my_peer-1"), "my_peer-1");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn quotes_words_for_the_shell() {
        let w = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(command_line(&w(&["sh", "-c", "exit 7"])), "sh -c 'exit 7'");
        assert_eq!(command_line(&w(&["ls | wc -l"])), "ls | wc -l");
        assert_eq!(command_line(&w(&["echo", "it's"])), r"echo 'it'\''s'");
    }
}
