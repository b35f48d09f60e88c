//! The listener and the HTTP/1.1 connection loop: one request per connection, every reply stamped with
//! `X-RDS-Agent-Version`, one console line per request (method, path, status, duration; never bodies).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use rds_protocol::{HEADER_AGENT_VERSION, HOST_CID};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio_vsock::{VsockAddr, VsockListener, VMADDR_CID_ANY};

use crate::config::Listen;
use crate::http::Body;
use crate::routes;
use crate::state::AppState;

/// A request whose headers have not arrived by then is dropped.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed accept (e.g. out of descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

pub enum Listener {
    Vsock(VsockListener),
    Unix(UnixListener),
    Tcp(TcpListener),
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {what}")]
pub struct BindError {
    what: String,
    #[source]
    source: io::Error,
}

impl Listener {
    pub fn bind(listen: &Listen) -> Result<Listener, BindError> {
        let what = format!("{listen:?}");
        let wrap = |source| BindError {
            what: what.clone(),
            source,
        };
        match listen {
            Listen::Vsock { port } => {
                VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, *port)).map(Listener::Vsock)
            }
            Listen::Unix(path) => {
                // A socket file left by an earlier run would make bind fail.
                let _ = std::fs::remove_file(path);
                UnixListener::bind(path).map(Listener::Unix)
            }
            Listen::Tcp(addr) => {
                let std = std::net::TcpListener::bind(addr).map_err(wrap)?;
                std.set_nonblocking(true).map_err(wrap)?;
                TcpListener::from_std(std).map(Listener::Tcp)
            }
        }
        .map_err(wrap)
    }

    /// Where it listens, for the start-up log line.
    pub fn describe(&self) -> String {
        match self {
            Listener::Vsock(l) => l.local_addr().map(|a| format!("vsock port {}", a.port())),
            Listener::Unix(l) => l.local_addr().map(|a| {
                format!(
                    "unix {:?}",
                    a.as_pathname().unwrap_or(std::path::Path::new("?"))
                )
            }),
            Listener::Tcp(l) => l.local_addr().map(|a| format!("tcp {a}")),
        }
        .unwrap_or_else(|e| format!("unknown address ({e})"))
    }
}

/// Serves connections until `shutdown` completes.
pub async fn run(listener: Listener, state: Arc<AppState>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = accept(&listener) => match accepted {
                Ok(Some(conn)) => spawn_connection(conn, state.clone()),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
}

enum Conn {
    Vsock(tokio_vsock::VsockStream),
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

/// Accepts one connection; `None` for a vsock peer that is not the host, which is closed at once.
async fn accept(listener: &Listener) -> io::Result<Option<Conn>> {
    Ok(match listener {
        Listener::Vsock(l) => {
            let (stream, peer) = l.accept().await?;
            if peer.cid() != HOST_CID {
                tracing::warn!(
                    cid = peer.cid(),
                    "refused vsock connection from a non-host peer"
                );
                return Ok(None);
            }
            Some(Conn::Vsock(stream))
        }
        Listener::Unix(l) => Some(Conn::Unix(l.accept().await?.0)),
        Listener::Tcp(l) => Some(Conn::Tcp(l.accept().await?.0)),
    })
}

fn spawn_connection(conn: Conn, state: Arc<AppState>) {
    match conn {
        Conn::Vsock(s) => serve(s, state),
        Conn::Unix(s) => serve(s, state),
        Conn::Tcp(s) => serve(s, state),
    }
}

fn serve<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(stream: S, state: Arc<AppState>) {
    tokio::spawn(async move {
        let service = service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(handle(&state, req).await) }
        });
        let conn = http1::Builder::new()
            .keep_alive(false)
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service)
            // Tunnels and terminals switch protocols after their 101.
            .with_upgrades();
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    });
}

async fn handle(state: &Arc<AppState>, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let mut resp = routes::dispatch(state, req).await;
    resp.headers_mut().insert(
        HEADER_AGENT_VERSION,
        HeaderValue::from_static(crate::VERSION),
    );
    tracing::info!(
        "{method} {path} {} {}ms",
        resp.status().as_u16(),
        started.elapsed().as_millis()
    );
    resp
}
