//! Moving bytes between a TCP connection and a route stream, both ways,
//! each side's end passed on as the other's: a TCP end of file finishes
//! the stream, and the stream's finish shuts the socket's writing side.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;
use fogwire_exit_proto::wire::DecodeError;
use fogwire_route::RouteStream;
use fogwire_route::proto::router::stream::StreamError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::clients::{Client, PACED_PIECE};

/// Bytes read from the socket at once.
const READ_LEN: usize = 64 * 1024;

/// Why a splice ended early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpliceError {
    #[error("connection: {0}")]
    Socket(#[from] std::io::Error),
    #[error("route stream: {0}")]
    Stream(#[from] StreamError),
    #[error("no receipt came for what the exit carried")]
    Unpaid,
}

/// Bytes moved each way.
#[derive(Debug, Default)]
pub(crate) struct Moved {
    /// From the stream to the socket.
    pub(crate) to_socket: AtomicU64,
    /// From the socket to the stream.
    pub(crate) to_stream: AtomicU64,
}

/// Copies both ways until both have ended, or either fails (then both
/// stop, and dropping the stream resets it). `pace`, when given, holds the
/// bytes of both ways to the client's rate.
pub(crate) async fn splice(
    socket: TcpStream,
    stream: RouteStream,
    pace: Option<Arc<Client>>,
    moved: &[&Moved],
) -> Result<(), SpliceError> {
    let (mut from_socket, mut to_socket) = socket.into_split();
    let (mut from_stream, mut to_stream) = stream.into_split();
    let pace_ref = pace.as_deref();
    let down = async {
        while let Some(chunk) = from_stream.read().await {
            let chunk = chunk?;
            for piece in chunk.chunks(PACED_PIECE) {
                if let Some(client) = pace_ref {
                    client.pace(piece.len()).await?;
                }
                to_socket.write_all(piece).await?;
                for moved in moved {
                    moved
                        .to_socket
                        .fetch_add(piece.len() as u64, Ordering::Relaxed);
                }
            }
        }
        to_socket.shutdown().await?;
        Ok::<_, SpliceError>(())
    };
    let up = async {
        let mut buffer = BytesMut::with_capacity(READ_LEN);
        loop {
            if buffer.capacity() < READ_LEN / 4 {
                buffer.reserve(READ_LEN);
            }
            let read_len = if pace_ref.is_some() {
                PACED_PIECE
            } else {
                READ_LEN
            };
            let mut limited = (&mut from_socket).take(read_len as u64);
            let read = limited.read_buf(&mut buffer).await?;
            if read == 0 {
                break;
            }
            if let Some(client) = pace_ref {
                client.pace(read).await?;
            }
            to_stream.write_all(buffer.split().freeze()).await?;
            for moved in moved {
                moved.to_stream.fetch_add(read as u64, Ordering::Relaxed);
            }
        }
        to_stream.finish().await?;
        Ok::<_, SpliceError>(())
    };
    tokio::try_join!(down, up).map(|_| ())
}

/// Why the message at the start of a stream could not be read.
pub(crate) enum HeadError {
    Malformed(DecodeError),
    Stream(StreamError),
    /// The stream ended first.
    Ended,
}

/// Reads the message `decode` takes from the start of `stream` (a request
/// or a reply, each bounded by its format), putting back whatever followed
/// it for the connection's bytes.
pub(crate) async fn read_head<T>(
    stream: &mut RouteStream,
    decode: impl Fn(&[u8]) -> Result<(T, usize), DecodeError>,
) -> Result<T, HeadError> {
    let mut buffer = BytesMut::new();
    loop {
        match decode(&buffer) {
            Ok((message, len)) => {
                stream.unread(buffer.split_off(len).freeze());
                return Ok(message);
            }
            Err(DecodeError::Incomplete(_)) => {}
            Err(error) => return Err(HeadError::Malformed(error)),
        }
        match stream.read().await {
            Some(Ok(chunk)) => buffer.extend_from_slice(&chunk),
            Some(Err(error)) => return Err(HeadError::Stream(error)),
            None => return Err(HeadError::Ended),
        }
    }
}
