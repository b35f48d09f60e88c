//! Connect + hybrid-vsock handshake, the only part of an agent call that is ever retried.

use rds_protocol::handshake::{connect_line, parse_reply, HandshakeError, MAX_REPLY_LINE};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect {0}: {1}")]
    Connect(String, #[source] std::io::Error),
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("handshake: connection closed")]
    Closed,
    #[error("handshake: {SILENT} {0} ms")]
    Timeout(u64),
    #[error("handshake: {0}")]
    Io(#[from] std::io::Error),
    #[error("{last} (after {attempts} attempts)")]
    Exhausted {
        attempts: u32,
        #[source]
        last: Box<ConnectError>,
    },
}

/// Text of a handshake that got no answer ([`ConnectError::Timeout`]).
pub const SILENT: &str = "no reply within";

pub async fn connect_once(
    socket: &Path,
    port: u32,
    timeout: Duration,
) -> Result<UnixStream, ConnectError> {
    let mut stream = UnixStream::connect(socket)
        .await
        .map_err(|e| ConnectError::Connect(socket.display().to_string(), e))?;
    let handshake = async {
        stream.write_all(connect_line(port).as_bytes()).await?;
        // Read byte by byte: anything after the newline belongs to the HTTP reply.
        let mut line = Vec::with_capacity(16);
        loop {
            let mut b = [0u8; 1];
            if stream.read(&mut b).await? == 0 {
                return Err(ConnectError::Closed);
            }
            line.push(b[0]);
            if b[0] == b'\n' || line.len() > MAX_REPLY_LINE {
                parse_reply(&line)?;
                return Ok(());
            }
        }
    };
    match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(())) => Ok(stream),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ConnectError::Timeout(timeout.as_millis() as u64)),
    }
}

pub async fn connect_with_retries(
    socket: &Path,
    port: u32,
    timeout: Duration,
    attempts: u32,
    delay: Duration,
) -> Result<UnixStream, ConnectError> {
    let mut last = None;
    for attempt in 1..=attempts.max(1) {
        match connect_once(socket, port, timeout).await {
            Ok(s) => return Ok(s),
            Err(e) => {
                tracing::debug!(attempt, error = %e, "agent connect failed");
                last = Some(e);
            }
        }
        if attempt < attempts {
            tokio::time::sleep(delay).await;
        }
    }
    Err(ConnectError::Exhausted {
        attempts,
        last: Box::new(last.unwrap_or(ConnectError::Closed)),
    })
}

#[cfg(test)]
mod tests {
    //! A fake VMM socket stands in for vhost-device-vsock here: the faults under test (refusals,
    //! silence, garbage) cannot be produced on demand by a real guest.
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use tokio::net::UnixListener;

    /// Serves `replies[i]` to the i-th connection (then closes); counts connections.
    fn fake(dir: &Path, replies: Vec<&'static [u8]>) -> (std::path::PathBuf, Arc<AtomicU32>) {
        let path = dir.join("v.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let count = Arc::new(AtomicU32::new(0));
        let c = count.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let i = c.fetch_add(1, Ordering::SeqCst) as usize;
                let mut buf = [0u8; 64];
                let n = s.read(&mut buf).await.unwrap_or(0);
                assert_eq!(&buf[..n], b"CONNECT 8080\n");
                let reply = replies.get(i).copied().unwrap_or(b"");
                if reply == b"silent" {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
                let _ = s.write_all(reply).await;
            }
        });
        (path, count)
    }

    #[tokio::test]
    async fn retries_until_handshake_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let (path, count) = fake(dir.path(), vec![b"", b"NOPE\n", b"OK 1024\n"]);
        let s = connect_with_retries(
            &path,
            8080,
            Duration::from_secs(1),
            5,
            Duration::from_millis(10),
        )
        .await;
        assert!(s.is_ok());
        assert_eq!(count.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn gives_up_after_the_configured_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let (path, count) = fake(dir.path(), vec![b"", b"", b"", b"OK 1\n"]);
        let err = connect_with_retries(
            &path,
            8080,
            Duration::from_secs(1),
            3,
            Duration::from_millis(10),
        )
        .await
        .unwrap_err();
        assert_eq!(count.load(Ordering::SeqCst), 3);
        assert!(err.to_string().contains("after 3 attempts"), "{err}");
    }

    #[tokio::test]
    async fn silent_peer_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = fake(dir.path(), vec![b"silent"]);
        let t = std::time::Instant::now();
        let err = connect_once(&path, 8080, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectError::Timeout(200)), "{err}");
        assert!(t.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn missing_socket_is_a_connect_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = connect_once(&dir.path().join("nope"), 8080, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectError::Connect(..)));
    }
}
