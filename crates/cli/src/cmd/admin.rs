//! Login, logout, and the session-only admin commands: API keys and webhooks.

use crate::args::{KeysCmd, WebhooksCmd};
use crate::client::{Auth, Client, Failure};
use crate::output::{list_table, object};
use crate::profile::{self, Profile};
use crate::Out;
use serde_json::{json, Value};
use std::io::IsTerminal;

fn password() -> Result<String, Failure> {
    if let Ok(p) = std::env::var("RDS_PASSWORD") {
        return Ok(p);
    }
    let read = if std::io::stdin().is_terminal() {
        rpassword::prompt_password("Password: ")
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    };
    let p = read.map_err(|e| Failure::usage(format!("reading the password: {e}")))?;
    Ok(p.trim_end_matches(['\r', '\n']).to_string())
}

/// `rds login`: checks the credential against the manager, then saves it.
pub async fn login(
    url: &str,
    api_key: Option<String>,
    email: Option<String>,
    mut saved: Profile,
) -> Result<(), Failure> {
    if saved.url.as_deref() != Some(url) {
        saved = Profile::default();
    }
    saved.url = Some(url.to_string());
    match email {
        None => {
            let key =
                api_key.ok_or_else(|| Failure::usage("login needs --api-key (or RDS_API_KEY)"))?;
            Client::new(url, Auth::Key(Some(key.clone())))?
                .get("/v1/images", &[])
                .await?;
            saved.api_key = Some(key);
        }
        Some(email) => {
            let c = Client::new(url, Auth::Key(None))?;
            let body = json!({"email": email, "password": password()?});
            let rb = c
                .request(reqwest::Method::POST, "/auth/login", &[])
                .header("content-type", "application/json")
                .body(body.to_string());
            let resp = c.send(rb).await?;
            let cookie = resp
                .headers()
                .get_all("set-cookie")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(|v| v.strip_prefix("rds_session="))
                .and_then(|v| v.split(';').next())
                .map(str::to_string)
                .ok_or_else(|| Failure::conn("the login answer set no session cookie"))?;
            let answer = json_value(resp).await?;
            saved.session = Some(cookie);
            saved.csrf_token = answer
                .get("csrfToken")
                .and_then(Value::as_str)
                .map(str::to_string);
            if let Some(k) = api_key {
                saved.api_key = Some(k);
            }
        }
    }
    let path = profile::save(&saved).map_err(Failure::usage)?;
    eprintln!("saved {}", path.display());
    Ok(())
}

/// Ends the saved session on the manager and forgets it.
pub async fn logout(url: &str, mut saved: Profile) -> Result<(), Failure> {
    if let (Some(cookie), Some(csrf)) = (saved.session.take(), saved.csrf_token.take()) {
        let c = Client::new(url, Auth::Session { cookie, csrf })?;
        c.post("/auth/logout", None).await?;
    }
    let path = profile::save(&saved).map_err(Failure::usage)?;
    eprintln!("logged out ({})", path.display());
    Ok(())
}

async fn json_value(resp: reqwest::Response) -> Result<Value, Failure> {
    let b = resp
        .bytes()
        .await
        .map_err(|e| Failure::conn(e.to_string()))?;
    serde_json::from_slice(&b).map_err(|e| Failure::conn(format!("the answer is not JSON: {e}")))
}

pub async fn keys(c: &Client, out: &Out, cmd: KeysCmd) -> Result<(), Failure> {
    match cmd {
        KeysCmd::Create { name, expires_at } => {
            let mut body = json!({"name": name});
            if let Some(e) = expires_at {
                body["expiresAt"] = json!(e);
            }
            let k = c.post("/v1/admin/api-keys", Some(body)).await?;
            out.show(&k, || {
                object(&k) + "\nThe apiKey above is shown only once.\n"
            });
        }
        KeysCmd::Ls => {
            let list = c.get("/v1/admin/api-keys", &[]).await?;
            let cols = [
                ("ID", "id"),
                ("NAME", "name"),
                ("PREFIX", "prefix"),
                ("CREATED", "createdAt"),
                ("EXPIRES", "expiresAt"),
                ("REVOKED", "revokedAt"),
                ("LAST_USED", "lastUsedAt"),
            ];
            out.show(&list, || list_table(&list, &cols));
        }
        KeysCmd::Revoke { id } => {
            let k = c
                .post(&format!("/v1/admin/api-keys/{id}/revoke"), None)
                .await?;
            out.show(&k, || format!("{id} revoked\n"));
        }
    }
    Ok(())
}

pub async fn webhooks(c: &Client, out: &Out, cmd: WebhooksCmd) -> Result<(), Failure> {
    match cmd {
        WebhooksCmd::Create {
            name,
            target,
            events,
            disabled,
        } => {
            let events = if events.is_empty() {
                vec!["*".to_string()]
            } else {
                events
            };
            let body =
                json!({"name": name, "url": target, "enabled": !disabled, "eventTypes": events});
            let w = c.post("/v1/admin/webhooks", Some(body)).await?;
            out.show(&w, || {
                object(&w) + "\nThe secret above is shown only once.\n"
            });
        }
        WebhooksCmd::Ls => {
            let list = c.get("/v1/admin/webhooks", &[]).await?;
            let cols = [
                ("ID", "id"),
                ("NAME", "name"),
                ("URL", "url"),
                ("ENABLED", "enabled"),
                ("EVENTS", "eventTypes"),
            ];
            out.show(&list, || list_table(&list, &cols));
        }
        WebhooksCmd::Rm { id } => {
            c.delete(&format!("/v1/admin/webhooks/{id}")).await?;
            out.done(&id, "deleted");
        }
        WebhooksCmd::Deliveries { id, limit } => {
            let q: Vec<(&str, String)> = limit
                .map(|l| ("limit", l.to_string()))
                .into_iter()
                .collect();
            let list = c
                .get(&format!("/v1/admin/webhooks/{id}/deliveries"), &q)
                .await?;
            let cols = [
                ("ID", "id"),
                ("EVENT", "eventType"),
                ("ATTEMPT", "attempt"),
                ("STATUS", "status"),
                ("HTTP", "responseStatus"),
                ("ERROR", "error"),
                ("CREATED", "createdAt"),
            ];
            out.show(&list, || list_table(&list, &cols));
        }
    }
    Ok(())
}
