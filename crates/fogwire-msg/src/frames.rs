//! Frames on a route stream: read in batches (every whole frame the
//! stream has delivered so far), so a burst of envelopes is opened and
//! committed together.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use fogwire_msg_proto::{Frame, WireError};
use fogwire_route::RouteStream;

/// Most frames handed over as one batch.
pub const BATCH_MAX: usize = 256;

/// Why frames could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FramesError {
    #[error("the stream ended")]
    Ended,
    #[error("nothing came within {0:?}")]
    Timeout(Duration),
    #[error("stream: {0}")]
    Stream(String),
    #[error("malformed frame: {0}")]
    Malformed(#[from] WireError),
}

/// Reads frames off a stream.
#[derive(Debug, Default)]
pub struct FrameReader {
    buffer: BytesMut,
}

impl FrameReader {
    /// The whole frames buffered now, at most [`BATCH_MAX`].
    fn parse(&mut self) -> Result<Vec<Frame>, WireError> {
        let mut frames = Vec::new();
        while frames.len() < BATCH_MAX && self.buffer.len() >= 4 {
            let mut prefix = [0u8; 4];
            prefix.copy_from_slice(&self.buffer[..4]);
            let len = Frame::announced_len(prefix)?;
            if self.buffer.len() < 4 + len {
                break;
            }
            self.buffer.advance(4);
            let body = self.buffer.split_to(len);
            frames.push(Frame::decode(&body)?);
        }
        Ok(frames)
    }

    /// Waits (at most `timeout` between chunks) for at least one whole
    /// frame, then returns every whole frame buffered.
    pub async fn next_batch(
        &mut self,
        stream: &mut RouteStream,
        timeout: Duration,
    ) -> Result<Vec<Frame>, FramesError> {
        loop {
            let frames = self.parse()?;
            if !frames.is_empty() {
                return Ok(frames);
            }
            let chunk: Bytes = match tokio::time::timeout(timeout, stream.read()).await {
                Err(_) => return Err(FramesError::Timeout(timeout)),
                Ok(None) => return Err(FramesError::Ended),
                Ok(Some(Err(error))) => return Err(FramesError::Stream(error.to_string())),
                Ok(Some(Ok(chunk))) => chunk,
            };
            self.buffer.extend_from_slice(&chunk);
        }
    }
}

/// Frames, encoded back to back, as one write.
pub fn encode_all(frames: &[Frame]) -> Bytes {
    let mut out = Vec::new();
    for frame in frames {
        out.extend_from_slice(&frame.encode());
    }
    Bytes::from(out)
}
