//! A download streamed from the agent to the API client: capped at `VSOCK_MAX_BINARY_RESPONSE_BYTES`
//! and bound by the binary deadline; either limit ends the stream with an error.

use bytes::Bytes;
use futures::Stream;
use hyper::body::{Body as _, Incoming};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::time::{Instant, Sleep};

pub struct Download {
    body: Incoming,
    left: u64,
    timer: Pin<Box<Sleep>>,
}

impl Download {
    pub(super) fn new(body: Incoming, cap: u64, deadline: Instant) -> Self {
        Download {
            body,
            left: cap,
            timer: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }
}

impl Stream for Download {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(std::io::Error::other(
                "agent download deadline passed",
            ))));
        }
        loop {
            let frame = match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Some(Err(std::io::Error::other(e))))
                }
                Poll::Ready(Some(Ok(f))) => f,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.len() as u64 > self.left {
                return Poll::Ready(Some(Err(std::io::Error::other(
                    "agent download over the size cap",
                ))));
            }
            self.left -= data.len() as u64;
            return Poll::Ready(Some(Ok(data)));
        }
    }
}

use std::future::Future;
