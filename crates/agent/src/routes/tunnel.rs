//! `POST /tunnel?port=N` (`docs/reference/agent-protocol.md` "Tunnels"): the manager's port proxy.
//! The agent connects to the port on the guest's loopback and, once the connection exists,
//! switches to `rds-tunnel` and copies bytes both ways. Nothing crosses the guest's network
//! interface, so its egress rules do not apply and do not change.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rds_protocol::TUNNEL_UPGRADE;
use tokio::net::TcpStream;

use crate::error::ApiError;
use crate::http::{self, Body};

/// A listener that has not accepted by then is treated as absent.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn post(req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    http::require_upgrade(&req, TUNNEL_UPGRADE)?;
    let port = http::query(&req)?
        .get("port")
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p != 0)
        .ok_or_else(|| ApiError::bad_request("port must be an integer from 1 to 65535"))?;
    let upstream = connect(port).await.ok_or_else(|| {
        ApiError::refused(
            StatusCode::BAD_GATEWAY,
            format!("Nothing listens on port {port} in the guest"),
        )
    })?;
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let mut upstream = upstream;
        match on_upgrade.await {
            Ok(upgraded) => {
                let mut io = TokioIo::new(upgraded);
                let _ = tokio::io::copy_bidirectional(&mut io, &mut upstream).await;
            }
            Err(e) => tracing::debug!(error = %e, "tunnel upgrade failed"),
        }
    });
    Ok(http::switching(TUNNEL_UPGRADE))
}

/// IPv4 loopback first (what most servers bind), then IPv6.
async fn connect(port: u16) -> Option<TcpStream> {
    for ip in [
        Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::from(Ipv6Addr::LOCALHOST),
    ] {
        let addr = SocketAddr::new(ip, port);
        if let Ok(Ok(s)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            let _ = s.set_nodelay(true);
            return Some(s);
        }
    }
    None
}
