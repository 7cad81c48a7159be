//! Answers that stream one JSON object per line (progress, then a
//! result), for long operations.

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::server::error;

/// Lines queued to a slow reader; progress lines beyond are dropped, the
/// last line never is.
pub(crate) const QUEUE: usize = 16;

pub(crate) type Lines = mpsc::Sender<Result<Bytes, std::io::Error>>;

/// One line: the object and a newline.
pub(crate) fn line(value: &impl serde::Serialize) -> Bytes {
    let mut text = serde_json::to_vec(value).unwrap_or_default();
    text.push(b'\n');
    Bytes::from(text)
}

/// A channel for lines, and the response that streams them.
pub(crate) fn streamed() -> (Lines, Response) {
    let (lines, mut receiver) = mpsc::channel(QUEUE);
    let stream = futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx));
    let response = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| {
            error(StatusCode::INTERNAL_SERVER_ERROR, "cannot stream").into_response()
        });
    (lines, response)
}
