//! The writing side of a streamed exec, run-ts or run-js (`rds_protocol::stream`): output events as
//! the pipes deliver them, whole characters only, then one final event.

use bytes::Bytes;
use rds_protocol::stream::{complete_utf8_len, OutputEvent};
use serde::Serialize;
use std::io;
use tokio::sync::mpsc;

/// Lines buffered between the process and the connection; a slow reader slows the process down
/// (its pipes fill) instead of growing memory.
pub const DEPTH: usize = 16;

pub struct Sink {
    tx: mpsc::Sender<io::Result<Bytes>>,
    /// Bytes of a character split between two reads, per stream (stdout, stderr).
    pending: [Vec<u8>; 2],
}

const STREAMS: [&str; 2] = ["stdout", "stderr"];

impl Sink {
    pub fn new(tx: mpsc::Sender<io::Result<Bytes>>) -> Sink {
        Sink {
            tx,
            pending: [Vec::new(), Vec::new()],
        }
    }

    /// Sends `bytes` of stream `i` (0 stdout, 1 stderr); false once the reader is gone.
    pub async fn output(&mut self, i: usize, bytes: &[u8]) -> bool {
        let buf = &mut self.pending[i];
        buf.extend_from_slice(bytes);
        let n = complete_utf8_len(buf);
        if n == 0 {
            return true;
        }
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        buf.drain(..n);
        self.line(&OutputEvent {
            kind: STREAMS[i],
            data: text.into(),
        })
        .await
    }

    /// Whatever is left of a split character, decoded as it is.
    pub async fn flush(&mut self) {
        for (i, kind) in STREAMS.iter().enumerate() {
            let rest = std::mem::take(&mut self.pending[i]);
            if !rest.is_empty() {
                let data = String::from_utf8_lossy(&rest).into_owned().into();
                self.line(&OutputEvent { kind, data }).await;
            }
        }
    }

    /// Resolves once the reader is gone (the connection closed), output or not.
    pub fn gone(&self) -> impl std::future::Future<Output = ()> + 'static {
        let tx = self.tx.clone();
        async move { tx.closed().await }
    }

    /// One JSON line; false once the reader is gone.
    pub async fn line<T: Serialize>(&self, value: &T) -> bool {
        let mut bytes = serde_json::to_vec(value).unwrap_or_default();
        bytes.push(b'\n');
        self.tx.send(Ok(Bytes::from(bytes))).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn characters_split_between_reads_arrive_whole() {
        let (tx, mut rx) = mpsc::channel(8);
        let mut sink = Sink::new(tx);
        let e = "é".as_bytes();
        assert!(sink.output(0, &[b'a', e[0]]).await);
        assert!(sink.output(0, &[e[1], b'b']).await);
        assert!(sink.output(1, &[0xF0, 0x9F]).await);
        sink.flush().await;
        drop(sink);
        let mut lines = Vec::new();
        while let Some(Ok(b)) = rx.recv().await {
            lines.push(String::from_utf8(b.to_vec()).unwrap());
        }
        assert_eq!(
            lines,
            [
                "{\"type\":\"stdout\",\"data\":\"a\"}\n",
                "{\"type\":\"stdout\",\"data\":\"éb\"}\n",
                "{\"type\":\"stderr\",\"data\":\"\u{FFFD}\"}\n",
            ]
        );
    }

    #[tokio::test]
    async fn a_gone_reader_is_reported() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let mut sink = Sink::new(tx);
        assert!(!sink.output(0, b"x").await);
    }
}
