//! `/metrics`, streamed: the exposition is rendered on the blocking pool in pieces of
//! about 64 KiB that go out as they are made, through a channel of a few pieces, so a
//! scrape of hundreds of thousands of series never holds the whole text in memory.
//!
//! # Guarantees
//! - A body that ends cleanly is complete. When rendering fails, or the client stops
//!   reading for [`SEND_TIMEOUT`], the body ends with an error (the connection is cut
//!   mid-transfer), never with a clean end that a text-format parser would take for a
//!   shorter scrape: unknown is not "no series".
//! - The renderer stops as soon as the client goes away.
//!
//! The store's read lock is held only while the renderer copies the series it exposes,
//! never while a piece waits for the client (`telemetry::exposition`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use super::AppState;
use crate::telemetry::metrics::{Format, Metrics};

/// How long a client may stop reading before the scrape is cut.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Pieces rendered ahead of the client.
const AHEAD: usize = 4;

/// Why a streamed body ended early.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("metrics rendering failed or was cut short")]
    Incomplete,
}

enum Piece {
    Data(Bytes),
    End,
}

/// The receiving end, as an HTTP body.
struct Streamed {
    rx: mpsc::Receiver<Piece>,
    done: bool,
}

impl http_body::Body for Streamed {
    type Data = Bytes;
    type Error = StreamError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<Bytes>, StreamError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Piece::Data(b))) => Poll::Ready(Some(Ok(http_body::Frame::data(b)))),
            Poll::Ready(Some(Piece::End)) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(Some(Err(StreamError::Incomplete)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// Renders on the current thread (a blocking one), sending pieces until the end.
fn produce(metrics: &Metrics, format: Format, tx: &mpsc::Sender<Piece>, handle: &tokio::runtime::Handle) {
    let send = |piece: Piece| matches!(handle.block_on(tokio::time::timeout(SEND_TIMEOUT, tx.send(piece))), Ok(Ok(())));
    match metrics.render(format, &mut |text| send(Piece::Data(Bytes::from(text)))) {
        Ok(true) => {
            // The receiver may be gone already; nothing is left to do either way.
            let _delivered = send(Piece::End);
        }
        Ok(false) => tracing::warn!(timeout_seconds = SEND_TIMEOUT.as_secs(), "metrics scrape cut: the client stopped reading or went away"),
        Err(error) => tracing::error!(%error, "metrics rendering failed"),
    }
    // Dropping the sender without `End` fails the body.
}

/// The `/metrics` handler.
pub async fn handler(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let (tx, rx) = mpsc::channel(AHEAD);
    let metrics: Arc<Metrics> = s.metrics.clone();
    let handle = tokio::runtime::Handle::current();
    // Ends by itself: when rendering is done or the body (the receiver) is dropped.
    drop(tokio::task::spawn_blocking(move || produce(&metrics, format, &tx, &handle)));
    ([(header::CONTENT_TYPE, format.content_type())], Body::new(Streamed { rx, done: false })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_body_whose_renderer_stopped_before_the_end_fails_instead_of_ending_short() {
        let (tx, rx) = mpsc::channel(4);
        tx.send(Piece::Data(Bytes::from_static(b"streamguard_x 1\n"))).await.unwrap();
        drop(tx);
        let body = Body::new(Streamed { rx, done: false });
        assert!(body.collect().await.is_err());

        let (tx, rx) = mpsc::channel(4);
        tx.send(Piece::Data(Bytes::from_static(b"streamguard_x 1\n"))).await.unwrap();
        tx.send(Piece::End).await.unwrap();
        let body = Body::new(Streamed { rx, done: false });
        assert_eq!(body.collect().await.unwrap().to_bytes(), Bytes::from_static(b"streamguard_x 1\n"));
    }
}
