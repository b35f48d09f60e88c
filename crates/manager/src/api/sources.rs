//! Guests may call one route of the manager, the peer invoke route (`docs/reference/security.md`
//! §3); a request from any address in `VM_SUBNET` for another path is refused with 403 before
//! authentication, routing or reading a body, whatever credentials it carries.

use super::error::ApiError;
use super::AppState;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::{IpAddr, SocketAddr};

/// The one path guests may call (served once peers exist).
pub const PEER_INVOKE_PATH: &str = "/internal/v1/peer/invoke";
pub const NOT_FROM_VM: &str = "Not allowed from a VM";

/// The gateway is the host's own address on the bridge, never a guest's.
fn is_guest(st: &AppState, ip: std::net::Ipv4Addr) -> bool {
    st.vm_subnet.contains(ip) && ip != st.vm_subnet.gateway()
}

pub async fn refuse_guests(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let from_guest = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|ConnectInfo(a)| match a.ip() {
            IpAddr::V4(v4) => is_guest(&st, v4),
            IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some_and(|v4| is_guest(&st, v4)),
        });
    if from_guest && req.uri().path() != PEER_INVOKE_PATH {
        return ApiError::forbidden(NOT_FROM_VM).into_response();
    }
    next.run(req).await
}
