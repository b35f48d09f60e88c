//! `POST /time/sync`, `POST /entropy/reseed` and `POST /fs/sync`
//! (`docs/reference/agent-protocol.md` §10).

use std::io;
use std::os::fd::AsRawFd;

use base64::Engine;
use hyper::body::Incoming;
use hyper::{Request, Response};
use rds_protocol::messages;

use crate::error::ApiError;
use crate::http::{self, Body};
use crate::routes::net_config::write_file;
use crate::state::AppState;

/// `_IOW('R', 0x03, int[2])`: add entropy to the input pool, crediting it.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
/// `_IO('R', 0x07)`: reseed the CRNG from the pool now.
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;
const MIN_SEED: usize = 32;
const MAX_SEED: usize = 512;

/// `unixTimeMs` as an integer > 0; anything else is 400 `unixTimeMs is required`.
pub fn parse_time(body: &serde_json::Value) -> Result<libc::timespec, ApiError> {
    let ms = body
        .get("unixTimeMs")
        .and_then(serde_json::Value::as_u64)
        .filter(|ms| *ms > 0)
        .ok_or_else(|| ApiError::bad_request(messages::UNIX_TIME_REQUIRED))?;
    Ok(libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    })
}

pub async fn time_sync(req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let body: serde_json::Value = http::read_json(req).await?;
    let ts = parse_time(&body)?;
    // SAFETY: valid timespec.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        return Err(ApiError::internal(
            "clock_settime failed",
            io::Error::last_os_error(),
        ));
    }
    Ok(http::no_content())
}

pub fn parse_seed(body: &serde_json::Value) -> Result<Vec<u8>, ApiError> {
    let bad = || {
        ApiError::bad_request(format!(
            "seed must be base64 of {MIN_SEED} to {MAX_SEED} bytes"
        ))
    };
    let text = body
        .get("seed")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(bad)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| bad())?;
    if !(MIN_SEED..=MAX_SEED).contains(&bytes.len()) {
        return Err(bad());
    }
    Ok(bytes)
}

/// Mixes `seed` into the kernel pool (credited) and forces a CRNG reseed.
fn add_entropy(seed: &[u8]) -> io::Result<()> {
    let random = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/random")?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info: Vec<u8> = Vec::with_capacity(8 + seed.len() + 3);
    info.extend_from_slice(&((seed.len() * 8) as i32).to_ne_bytes());
    info.extend_from_slice(&(seed.len() as i32).to_ne_bytes());
    info.extend_from_slice(seed);
    // Room for the last partial u32 the kernel may round up to.
    info.resize(8 + seed.len().div_ceil(4) * 4, 0);
    // SAFETY: the buffer holds the header and buf_size bytes of data, as the ioctl expects.
    if unsafe { libc::ioctl(random.as_raw_fd(), RNDADDENTROPY as _, info.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: an ioctl without argument.
    if unsafe { libc::ioctl(random.as_raw_fd(), RNDRESEEDCRNG as _) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn new_machine_id() -> io::Result<String> {
    let mut bytes = [0u8; 16];
    // SAFETY: valid buffer of the given length.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        return Err(io::Error::last_os_error());
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>() + "\n")
}

pub async fn entropy_reseed(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let body: serde_json::Value = http::read_json(req).await?;
    let seed = parse_seed(&body)?;
    add_entropy(&seed).map_err(|e| ApiError::internal("cannot add entropy", e))?;
    // Drawn after the reseed, so a restored snapshot gets an id of its own.
    let id = new_machine_id().map_err(|e| ApiError::internal("getrandom failed", e))?;
    write_file(&state.settings.etc.join("machine-id"), &id)
        .map_err(|e| ApiError::internal("cannot write machine-id", e))?;
    // A warm shell from before a snapshot would be the same shell (same $RANDOM seed) in every
    // VM restored from it: the next one starts after the reseed.
    state.warm.discard(state);
    Ok(http::no_content())
}

pub async fn fs_sync() -> Result<Response<Body>, ApiError> {
    tokio::task::spawn_blocking(|| {
        // SAFETY: sync(2) has no preconditions.
        unsafe { libc::sync() }
    })
    .await
    .map_err(|e| ApiError::internal("sync thread failed", io::Error::other(e)))?;
    Ok(http::no_content())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn time_values() {
        let ts = parse_time(&json!({"unixTimeMs": 1_700_000_000_123u64})).unwrap();
        assert_eq!((ts.tv_sec, ts.tv_nsec), (1_700_000_000, 123_000_000));
        for bad in [
            json!({}),
            json!({"unixTimeMs": 0}),
            json!({"unixTimeMs": -1}),
            json!({"unixTimeMs": 1.5}),
            json!({"unixTimeMs": "1"}),
            json!({"unixTimeMs": null}),
        ] {
            assert_eq!(
                parse_time(&bad).unwrap_err().body().message,
                "unixTimeMs is required",
                "{bad}"
            );
        }
    }

    #[test]
    fn seeds() {
        let b64 = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![7u8; n]);
        assert_eq!(parse_seed(&json!({"seed": b64(32)})).unwrap().len(), 32);
        assert_eq!(parse_seed(&json!({"seed": b64(512)})).unwrap().len(), 512);
        for bad in [
            json!({"seed": b64(31)}),
            json!({"seed": b64(513)}),
            json!({"seed": "!!"}),
            json!({}),
            json!({"seed": 5}),
        ] {
            assert_eq!(
                parse_seed(&bad).unwrap_err().body().message,
                "seed must be base64 of 32 to 512 bytes"
            );
        }
    }

    #[test]
    fn machine_ids_are_32_hex_digits() {
        let id = new_machine_id().unwrap();
        assert_eq!(id.len(), 33);
        assert!(id.trim_end().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(id, new_machine_id().unwrap());
    }
}
