//! Firecracker's hybrid-vsock handshake: the host writes `CONNECT <port>\n` on the VM's Unix socket and
//! the VMM answers `OK <host-port>\n` once the guest accepted.

/// Longest reply line the host reads before giving up on the handshake.
pub const MAX_REPLY_LINE: usize = 64;

pub fn connect_line(port: u32) -> String {
    format!("CONNECT {port}\n")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// The line did not end in `\n` within [`MAX_REPLY_LINE`] bytes.
    TooLong,
    /// Anything but `OK <n>\n`; carries what was read (lossy UTF-8, trimmed).
    Refused(String),
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::TooLong => {
                write!(f, "handshake reply longer than {MAX_REPLY_LINE} bytes")
            }
            HandshakeError::Refused(got) => write!(f, "handshake refused: {got:?}"),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// Parses one complete reply line (including its `\n`) into the host-side port number.
pub fn parse_reply(line: &[u8]) -> Result<u32, HandshakeError> {
    if line.len() > MAX_REPLY_LINE {
        return Err(HandshakeError::TooLong);
    }
    let refused = || HandshakeError::Refused(String::from_utf8_lossy(line).trim().to_string());
    let text = std::str::from_utf8(line).map_err(|_| refused())?;
    let text = text.strip_suffix('\n').ok_or_else(refused)?;
    let port = text.strip_prefix("OK ").ok_or_else(refused)?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(refused());
    }
    port.parse().map_err(|_| refused())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ok_line() {
        assert_eq!(connect_line(8080), "CONNECT 8080\n");
        assert_eq!(parse_reply(b"OK 1073741824\n"), Ok(1_073_741_824));
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            &b"OK\n"[..],
            b"OK 12",
            b"ok 12\n",
            b"OK -1\n",
            b"NO 1\n",
            b"",
            b"OK 1 2\n",
        ] {
            assert!(
                matches!(parse_reply(bad), Err(HandshakeError::Refused(_))),
                "{bad:?}"
            );
        }
        let long = [b'O'; 65];
        assert_eq!(parse_reply(&long), Err(HandshakeError::TooLong));
    }
}
