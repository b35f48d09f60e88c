//! The terminal connection (`docs/reference/agent-protocol.md` "Terminals"): `POST /pty` upgraded
//! to `rds-pty`, then length-prefixed frames both ways on the raw stream. Frames keep resize
//! requests apart from typed bytes without escaping either.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The `Upgrade` token of `POST /pty`.
pub const UPGRADE: &str = "rds-pty";
/// Bytes before a frame's payload: kind (1) and payload length (4, big-endian).
pub const HEADER_LEN: usize = 5;
/// Largest payload either side sends or accepts.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Terminals a guest serves at once; one more is refused with 429.
pub const MAX_TERMINALS: usize = 8;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Manager → agent, first frame: [`Open`] as JSON.
    Open = 1,
    /// Manager → agent: typed bytes.
    Input = 2,
    /// Manager → agent: [`Size`] as JSON.
    Resize = 3,
    /// Agent → manager: bytes the terminal wrote.
    Output = 4,
    /// Agent → manager, last frame: [`Exit`] as JSON.
    Exit = 5,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Open,
            2 => Kind::Input,
            3 => Kind::Resize,
            4 => Kind::Output,
            5 => Kind::Exit,
            _ => return None,
        })
    }
}

/// Rows and columns of the terminal; both at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Size {
    pub cols: u16,
    pub rows: u16,
}

impl Size {
    pub fn valid(&self) -> bool {
        self.cols >= 1 && self.rows >= 1
    }
}

/// The first frame: the terminal's size and the environment of its login shell (the VM's secrets
/// among it), applied over the sandbox's base environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Open {
    pub size: Size,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

/// The last frame: how the shell ended (`128 + N` for signal N), or why it never started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Exit {
    pub exit_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn new(kind: Kind, payload: impl Into<Vec<u8>>) -> Frame {
        Frame {
            kind,
            payload: payload.into(),
        }
    }

    /// A frame whose payload is `value` as JSON.
    pub fn json<T: Serialize>(kind: Kind, value: &T) -> Frame {
        Frame::new(kind, serde_json::to_vec(value).unwrap_or_default())
    }

    /// Header and payload, ready to write. Payloads past [`MAX_PAYLOAD`] must be split by the
    /// caller ([`Frame::chunks`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        out.push(self.kind as u8);
        out.extend_from_slice(&(self.payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    /// `bytes` as frames of `kind` of at most [`MAX_PAYLOAD`] each.
    pub fn chunks(kind: Kind, bytes: &[u8]) -> impl Iterator<Item = Frame> + '_ {
        bytes
            .chunks(MAX_PAYLOAD)
            .map(move |c| Frame::new(kind, c.to_vec()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    UnknownKind(u8),
    TooLarge(usize),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::UnknownKind(k) => write!(f, "unknown terminal frame kind {k}"),
            FrameError::TooLarge(n) => {
                write!(f, "terminal frame of {n} bytes (at most {MAX_PAYLOAD})")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Collects bytes as they are read and hands out whole frames.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, `None` until one has arrived; an error for a stream that can no
    /// longer be trusted (the connection is then closed).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let kind = Kind::from_byte(self.buf[0]).ok_or(FrameError::UnknownKind(self.buf[0]))?;
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(FrameError::TooLarge(len));
        }
        if self.buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let payload = self.buf[HEADER_LEN..HEADER_LEN + len].to_vec();
        self.buf.drain(..HEADER_LEN + len);
        Ok(Some(Frame { kind, payload }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_any_split() {
        let frames = [
            Frame::json(
                Kind::Open,
                &Open {
                    size: Size { cols: 80, rows: 24 },
                    env: BTreeMap::new(),
                    cwd: None,
                },
            ),
            Frame::new(Kind::Input, b"ls\r".to_vec()),
            Frame::new(Kind::Output, Vec::new()),
        ];
        let wire: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        for step in [1, 2, 3, 7, wire.len()] {
            let mut r = FrameReader::default();
            let mut got = Vec::new();
            for piece in wire.chunks(step) {
                r.push(piece);
                while let Some(f) = r.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, frames, "split every {step} bytes");
        }
    }

    #[test]
    fn bad_frames_are_errors() {
        let mut r = FrameReader::default();
        r.push(&[9, 0, 0, 0, 0]);
        assert_eq!(r.next_frame(), Err(FrameError::UnknownKind(9)));
        let mut r = FrameReader::default();
        r.push(&[2, 0, 1, 0, 1]);
        assert_eq!(r.next_frame(), Err(FrameError::TooLarge(65537)));
        let big = vec![0u8; MAX_PAYLOAD + 1];
        let parts: Vec<_> = Frame::chunks(Kind::Output, &big).collect();
        assert_eq!(parts.len(), 2);
        assert!(!Size { cols: 0, rows: 3 }.valid());
    }
}
