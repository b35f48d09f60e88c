//! `GET /v1/admin/events` (docs/reference/api-admin.md Activity): the activity feed as server-sent
//! events, for admin sessions. `: connected` first; with `Last-Event-ID`, up to 200 newer stored
//! events; then every event as it is stored, `: ping` every 15 s. The stream ends when the session
//! expires or is logged out (checked at each ping), or when the client goes.

use crate::activity::{Activity, ActivityEvent};
use crate::api::auth::AdminSession;
use crate::api::error::ApiError;
use crate::api::extract::parse_vm_id;
use crate::api::schema::ErrorBody;
use crate::api::AppState;
use crate::auth::{AuthService, Session};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

const PING: Duration = Duration::from_secs(15);
const REPLAY: usize = 200;

fn frame(e: &ActivityEvent) -> Event {
    Event::default()
        .event("activity")
        .id(e.id.clone())
        .data(e.with_meta().to_string())
}

#[utoipa::path(get, path = "/admin/events", tag = "admin", security(("SessionCookie" = [])),
    params(("Last-Event-ID" = Option<String>, Header, description = "Replay up to 200 events stored after this one first")),
    responses((status = 200, description = "text/event-stream: `event: activity`, `id: <eventId>`, `data: <event with meta parsed under \"meta\">`; `: ping` every 15 s", content_type = "text/event-stream"),
              (status = 401, body = ErrorBody), (status = 403, description = "Admin session required", body = ErrorBody)))]
pub async fn events(
    AdminSession(session): AdminSession,
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // Subscribed before the replay is read, so nothing stored in between is missed; duplicates are
    // skipped by `seq`.
    let live = st.activity.subscribe();
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_vm_id);
    let after = match last_id {
        Some(id) => st.activity.seq_of(&id).await?,
        None => None,
    };
    let replay = match after {
        Some(seq) => st.activity.after_seq(seq, REPLAY).await?,
        None => Vec::new(),
    };
    let (tx, rx) = mpsc::channel::<Event>(64);
    let feed = Feed {
        activity: st.activity.clone(),
        auth: st.auth.clone(),
        session,
        tx,
        last_seq: after.unwrap_or(0),
    };
    tokio::spawn(feed.run(replay, live));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    let mut resp = Sse::new(stream).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    // Proxies such as nginx would otherwise hold events back in their buffers.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

/// One stream's producer; ends (closing the stream) on expiry, logout, or a gone client.
struct Feed {
    activity: Activity,
    auth: AuthService,
    session: Session,
    tx: mpsc::Sender<Event>,
    /// The newest event sent (or replayed past); older ones arriving live are skipped.
    last_seq: i64,
}

impl Feed {
    async fn send(&mut self, e: &ActivityEvent) -> bool {
        if e.seq <= self.last_seq {
            return true;
        }
        self.last_seq = e.seq;
        self.tx.send(frame(e)).await.is_ok()
    }

    async fn run(
        mut self,
        replay: Vec<ActivityEvent>,
        mut live: broadcast::Receiver<Arc<ActivityEvent>>,
    ) {
        if self
            .tx
            .send(Event::default().comment("connected"))
            .await
            .is_err()
        {
            return;
        }
        for e in &replay {
            if !self.send(e).await {
                return;
            }
        }
        let expiry = tokio::time::sleep(self.session.remaining());
        tokio::pin!(expiry);
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING, PING);
        loop {
            tokio::select! {
                _ = &mut expiry => return,
                _ = self.tx.closed() => return,
                _ = ping.tick() => {
                    if !self.still_logged_in().await
                        || self.tx.send(Event::default().comment("ping")).await.is_err()
                    {
                        return;
                    }
                }
                got = live.recv() => {
                    let sent = match got {
                        Ok(e) => self.send(&e).await,
                        Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up().await,
                        Err(broadcast::error::RecvError::Closed) => false,
                    };
                    if !sent {
                        return;
                    }
                }
            }
        }
    }

    /// Fell behind the broadcast: the newest stored events after the last one sent.
    async fn catch_up(&mut self) -> bool {
        match self.activity.after_seq(self.last_seq, REPLAY).await {
            Ok(events) => {
                for e in &events {
                    if !self.send(e).await {
                        return false;
                    }
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "activity stream catch-up failed");
                true
            }
        }
    }

    /// A logout (or a failed lookup) ends the stream; a DB error keeps it.
    async fn still_logged_in(&self) -> bool {
        match self.auth.session_by_hash(&self.session.id_hash).await {
            Ok(s) => s.is_some(),
            Err(e) => {
                tracing::warn!(error = %e, "session check of an event stream failed");
                true
            }
        }
    }
}
