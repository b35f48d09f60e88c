//! `POST /internal/v1/peer/invoke` (`docs/peers.md`): a consumer's code calls an export its
//! provider declares. The bridge token names the consumer and is only good from its address; the
//! call runs in the provider as run-ts or run-js with the provider's secrets and egress rule, and
//! is neither written to an exec log nor to the activity feed.

use super::{LifecycleError, PeerFailure, Runtime, VmService};
use crate::model::VmRecord;
use crate::peers::{manifest, valid_export_name};
use rds_protocol::RunRequest;
use serde_json::value::RawValue;
use serde_json::Value;
use std::net::IpAddr;

/// The default `timeoutMs` of an invoke, below `MAX_RUNTS_TIMEOUT_MS`.
const DEFAULT_TIMEOUT_MS: u64 = 30_000;

/// A validated invoke body.
#[derive(Debug, Clone)]
pub struct InvokeRequest {
    pub alias: String,
    /// Relative to `/workspace`, normalised.
    pub module_path: String,
    pub export_name: String,
    /// The arguments as JSON text (an array).
    pub args: String,
    pub timeout_ms: Option<u64>,
}

fn bad(message: impl Into<String>) -> LifecycleError {
    LifecycleError::peer(PeerFailure::Invalid, message)
}

impl InvokeRequest {
    /// The body's rules, with the messages of `docs/reference/api.md` §7.
    pub fn parse(body: &[u8]) -> Result<InvokeRequest, LifecycleError> {
        let Ok(Value::Object(mut o)) = serde_json::from_slice::<Value>(body) else {
            return Err(bad("Invalid request body"));
        };
        let alias = match o.remove("alias") {
            Some(Value::String(a)) if !a.is_empty() => a,
            _ => return Err(bad("alias is required")),
        };
        let module_path = match o.remove("modulePath") {
            Some(Value::String(p)) => normalise(&p),
            _ => None,
        }
        .ok_or_else(|| bad("modulePath must stay under /workspace"))?;
        let export_name = match o.remove("exportName") {
            None | Some(Value::Null) => "default".to_string(),
            Some(Value::String(n)) if valid_export_name(&n) => n,
            _ => return Err(bad("Invalid exportName")),
        };
        let args = match o.remove("args") {
            None | Some(Value::Null) => "[]".to_string(),
            Some(a @ Value::Array(_)) => a.to_string(),
            _ => return Err(bad("args must be an array")),
        };
        let timeout_ms = match o.remove("timeoutMs") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .filter(|t| *t >= 1)
                    .ok_or_else(|| bad("timeoutMs must be a positive integer"))?,
            ),
        };
        Ok(InvokeRequest {
            alias,
            module_path,
            export_name,
            args,
            timeout_ms,
        })
    }
}

/// `lib/a.ts`, `./lib/a.ts` and `/workspace/lib/a.ts` → `lib/a.ts`; None for anything that is not
/// a file path under `/workspace`.
fn normalise(path: &str) -> Option<String> {
    let rel = match path.strip_prefix('/') {
        Some(abs) => abs.strip_prefix("workspace/")?,
        None => path,
    };
    let mut parts = Vec::new();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            p if p.contains(['\0', '\\']) => return None,
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// The code run in the provider: import the module, call the export with the arguments, record
/// what it resolves to. Strings are embedded as JSON, which no path or name can break out of.
fn invoke_code(module_path: &str, export_name: &str, args_json: &str) -> String {
    let url = serde_json::to_string(&format!("file:///workspace/{module_path}")).expect("string");
    let name = serde_json::to_string(export_name).expect("string");
    format!(
        "export {{}};\n\
         const __m = await import({url});\n\
         let __f = __m[{name}];\n\
         if (typeof __f !== \"function\" && __m.default !== null && typeof __m.default === \"object\") __f = __m.default[{name}];\n\
         if (typeof __f !== \"function\") throw new Error(\"export \" + {name} + \" is not a function\");\n\
         result.set(await __f(...{args_json}));\n"
    )
}

impl VmService {
    /// The consumer holding `token`, if it calls from its own address; checked before the body
    /// is read, so a caller without a good token learns nothing about it.
    pub async fn peer_consumer(
        &self,
        token: &str,
        source: IpAddr,
    ) -> Result<VmRecord, LifecycleError> {
        let unauthorized =
            || LifecycleError::peer(PeerFailure::Unauthorized, "Invalid bridge token");
        let consumer = self
            .inner
            .db
            .vm_by_bridge_token_hash(&super::peers::token_hash(token))
            .await?
            .ok_or_else(unauthorized)?;
        if source != IpAddr::V4(consumer.guest_ip) {
            tracing::warn!(vm_id = %consumer.id, %source, "bridge token used from another address");
            return Err(unauthorized());
        }
        Ok(consumer)
    }

    /// Runs one invoke for `consumer` (from [`VmService::peer_consumer`]).
    #[tracing::instrument(name = "peer.invoke", skip_all, fields(vm_id = %consumer.id))]
    pub async fn invoke_peer(
        &self,
        consumer: VmRecord,
        req: InvokeRequest,
    ) -> Result<Box<RawValue>, LifecycleError> {
        let alias = req.alias.as_str();
        let Some(link) = consumer.peer_links.iter().find(|l| l.alias == alias) else {
            return Err(LifecycleError::peer(
                PeerFailure::Forbidden,
                format!("VM {} is not linked to alias {alias}", consumer.id),
            ));
        };
        let provider = self.provider_of(link).await?;
        let manifest = match self.inner.peer_checks.latest(&provider.id) {
            Some(m) => m,
            // Checked before by this consumer's setup, but not since this manager started.
            None => self.offer(alias, &provider, false).await?.manifest,
        };
        if manifest
            .export(&req.module_path, &req.export_name)
            .is_none()
        {
            return Err(LifecycleError::peer(
                PeerFailure::Forbidden,
                format!(
                    "Export {} of {} is not declared by alias {alias}",
                    req.export_name, req.module_path
                ),
            ));
        }
        let max = self.inner.settings.max_run_timeout_ms;
        let timeout_ms = req.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS.min(max));
        if timeout_ms > max {
            return Err(bad(format!("timeoutMs exceeds maxRunTsTimeoutMs={max}")));
        }
        let runtime = match manifest::runtime_of(&req.module_path) {
            manifest::Runtime::Deno => Runtime::Deno,
            manifest::Runtime::Node => Runtime::Node,
        };
        let run = RunRequest {
            code: Some(invoke_code(&req.module_path, &req.export_name, &req.args)),
            timeout_ms: Some(timeout_ms),
            ..Default::default()
        };
        let reply = self
            .run_internal(&provider, runtime, run, timeout_ms)
            .await?;
        if reply.timed_out {
            return Err(LifecycleError::peer(
                PeerFailure::Timeout,
                format!("Peer alias {alias}: the provider call timed out after {timeout_ms} ms"),
            ));
        }
        if let Some(error) = &reply.error {
            let message = serde_json::from_str::<Value>(error.get())
                .ok()
                .and_then(|e| e.get("message").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| error.get().to_string());
            return Err(LifecycleError::peer(PeerFailure::ProviderFailed, message));
        }
        if reply.exit_code != 0 {
            return Err(LifecycleError::peer(
                PeerFailure::ProviderFailed,
                crate::agent::truncate_chars(&reply.stderr, 500),
            ));
        }
        Ok(reply
            .result
            .unwrap_or_else(|| RawValue::from_string("null".into()).expect("null is JSON")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_paths_stay_under_the_workspace() {
        assert_eq!(normalise("lib/a.ts").as_deref(), Some("lib/a.ts"));
        assert_eq!(normalise("./lib//a.ts").as_deref(), Some("lib/a.ts"));
        assert_eq!(
            normalise("/workspace/lib/a.ts").as_deref(),
            Some("lib/a.ts")
        );
        for bad in [
            "/etc/passwd",
            "../a.ts",
            "lib/../../a.ts",
            "/workspace",
            "",
            "/workspacex/a",
        ] {
            assert_eq!(normalise(bad), None, "{bad}");
        }
    }

    #[test]
    fn bodies_are_checked_in_order() {
        let err = |b: &str| InvokeRequest::parse(b.as_bytes()).unwrap_err().to_string();
        assert_eq!(err("nope"), "Invalid request body");
        assert_eq!(err("{}"), "alias is required");
        assert_eq!(
            err(r#"{"alias":"a","modulePath":"../x"}"#),
            "modulePath must stay under /workspace"
        );
        assert_eq!(
            err(r#"{"alias":"a","modulePath":"x.ts","exportName":"a-b"}"#),
            "Invalid exportName"
        );
        assert_eq!(
            err(r#"{"alias":"a","modulePath":"x.ts","args":{}}"#),
            "args must be an array"
        );
        let ok =
            InvokeRequest::parse(br#"{"alias":"a","modulePath":"/workspace/x.ts","args":[1,"b"]}"#)
                .unwrap();
        assert_eq!(
            (ok.module_path.as_str(), ok.export_name.as_str()),
            ("x.ts", "default")
        );
        assert_eq!(ok.args, r#"[1,"b"]"#);
    }

    #[test]
    fn invoke_code_embeds_strings_as_json() {
        let code = invoke_code("a\".ts", "add", "[1]");
        assert!(
            code.contains(r#"import("file:///workspace/a\".ts")"#),
            "{code}"
        );
        assert!(
            code.contains("__m[\"add\"]") && code.contains("__f(...[1])"),
            "{code}"
        );
    }
}
