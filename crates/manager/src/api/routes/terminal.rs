//! `GET /v1/vms/:id/pty` (`docs/api.md` "Terminals"): a WebSocket onto a login shell of the sandbox
//! user on a pseudo-terminal. Binary messages carry bytes both ways; text messages carry JSON
//! control: `{"type":"resize","cols":…,"rows":…}` and `{"type":"input","data":…}` in, one
//! `{"type":"exit","exitCode":…}` out before the close.

use crate::api::error::ApiError;
use crate::api::extract::parse_vm_id;
use crate::api::AppState;
use crate::auth::Principal;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::Response;
use axum::Extension;
use futures::{SinkExt, StreamExt};
use rds_protocol::pty::{Exit, Frame, FrameReader, Kind, Size};
use serde_json::{json, Value};
use std::collections::HashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MAX_SIDE: u16 = 1000;

fn size_of(q: &HashMap<String, String>) -> Result<Size, ApiError> {
    let side = |k: &str, default: u16| match q.get(k) {
        None => Ok(default),
        Some(v) => v
            .parse::<u16>()
            .ok()
            .filter(|n| (1..=MAX_SIDE).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "cols and rows must be integers from 1 to {MAX_SIDE}"
                ))
            }),
    };
    Ok(Size {
        cols: side("cols", 80)?,
        rows: side("rows", 24)?,
    })
}

/// A browser session may only open a terminal from this API's own origin (a WebSocket is not
/// subject to CORS, and the session cookie would ride along from any page).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host))
}

pub async fn open(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    principal: Option<Extension<Principal>>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let id = parse_vm_id(&id).ok_or_else(|| ApiError::bad_request("Invalid VM id"))?;
    let size = size_of(&q)?;
    let ws = ws.map_err(|_| ApiError::upgrade_required("A WebSocket upgrade is required"))?;
    if matches!(principal.as_deref(), Some(Principal::Session(_))) && !same_origin(&headers) {
        return Err(ApiError::forbidden("Terminals open from this origin only"));
    }
    let stream = st.vms.open_terminal(&id, size).await?;
    st.metrics.inc("rds_terminals_opened_total", &[]);
    Ok(ws.on_upgrade(move |socket| relay(socket, stream)))
}

/// Client messages to terminal frames and back until either side ends.
async fn relay(socket: WebSocket, stream: crate::agent::AgentStream) {
    let (mut ws_tx, mut ws_rx) = socket.split();
    let (mut rd, mut wr) = tokio::io::split(stream);
    let to_guest = async {
        while let Some(Ok(msg)) = ws_rx.next().await {
            let frame = match msg {
                Message::Binary(b) => Frame::new(Kind::Input, b.to_vec()),
                Message::Text(t) => match control(t.as_str()) {
                    Some(f) => f,
                    None => continue,
                },
                Message::Close(_) => break,
                _ => continue,
            };
            if wr.write_all(&frame.encode()).await.is_err() {
                break;
            }
        }
    };
    let to_client = async {
        let mut frames = FrameReader::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            while let Ok(Some(f)) = frames.next_frame() {
                if f.kind == Kind::Exit {
                    let exit: Exit = serde_json::from_slice(&f.payload).unwrap_or(Exit {
                        exit_code: -1,
                        error: Some("invalid exit frame".into()),
                    });
                    let mut v = json!({"type": "exit", "exitCode": exit.exit_code});
                    if let Some(e) = exit.error {
                        v["error"] = Value::String(e);
                    }
                    let _ = ws_tx.send(Message::Text(v.to_string().into())).await;
                    let _ = ws_tx.send(Message::Close(None)).await;
                    return;
                }
                if f.kind == Kind::Output
                    && ws_tx.send(Message::Binary(f.payload.into())).await.is_err()
                {
                    return;
                }
            }
            match rd.read(&mut buf).await {
                Ok(n) if n > 0 => frames.push(&buf[..n]),
                _ => {
                    let _ = ws_tx.send(Message::Close(None)).await;
                    return;
                }
            }
        }
    };
    // Whichever side ends first ends the terminal: dropping the agent stream hangs up the
    // shell (the agent kills its session).
    tokio::select! {
        () = to_guest => {},
        () = to_client => {},
    }
}

/// A text message: `resize` or `input`; anything else is ignored.
fn control(text: &str) -> Option<Frame> {
    let v: Value = serde_json::from_str(text).ok()?;
    match v.get("type")?.as_str()? {
        "resize" => {
            let side = |k: &str| {
                v.get(k)?
                    .as_u64()
                    .filter(|n| (1..=u64::from(MAX_SIDE)).contains(n))
                    .map(|n| n as u16)
            };
            let size = Size {
                cols: side("cols")?,
                rows: side("rows")?,
            };
            Some(Frame::json(Kind::Resize, &size))
        }
        "input" => Some(Frame::new(
            Kind::Input,
            v.get("data")?.as_str()?.as_bytes().to_vec(),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages() {
        let f = control(r#"{"type":"resize","cols":100,"rows":30}"#).unwrap();
        assert_eq!(f.kind, Kind::Resize);
        assert_eq!(
            serde_json::from_slice::<Size>(&f.payload).unwrap(),
            Size {
                cols: 100,
                rows: 30
            }
        );
        assert!(
            control(r#"{"type":"resize","cols":0,"rows":30}"#).is_none(),
            "zero size"
        );
        assert_eq!(
            control(r#"{"type":"input","data":"ls\r"}"#)
                .unwrap()
                .payload,
            b"ls\r"
        );
        assert!(control("not json").is_none());
    }

    #[test]
    fn sizes_from_the_query() {
        let q = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(size_of(&q(&[])).unwrap(), Size { cols: 80, rows: 24 });
        assert_eq!(
            size_of(&q(&[("cols", "120"), ("rows", "40")])).unwrap(),
            Size {
                cols: 120,
                rows: 40
            }
        );
        for bad in ["0", "1001", "-3", "x"] {
            assert!(size_of(&q(&[("rows", bad)])).is_err(), "{bad}");
        }
    }
}
