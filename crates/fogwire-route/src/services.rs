//! Services on route streams.
//!
//! A stream opened to a node starts with a header naming the service it is
//! for: `length u8 (1..=32) | name (printable ASCII)`. The dispatcher reads
//! it and hands the stream to whoever [`crate::Routing::serve`]s that name;
//! a stream for an unknown service, or whose header does not come within
//! [`HEADER_TIMEOUT`], is reset.
//!
//! Built in:
//! - `echo` writes back what it reads, then finishes;
//! - `sink` reads to the end, then answers `bytes u64 | BLAKE3 [32]` of
//!   what it read, and finishes: a transfer check ([`send_to_sink`]);
//! - `discard` reads to the end, then answers `bytes u64` and finishes: a
//!   throughput measure that costs the receiver nothing but the reading.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fogwire_route_proto::router::stream::StreamError;
use tokio::sync::{Semaphore, mpsc};

use crate::{RouteError, RouteStream, Routing, Services};

pub const ECHO: &str = "echo";
pub const SINK: &str = "sink";
pub const DISCARD: &str = "discard";
/// Streams queued per service.
pub const QUEUE_LEN: usize = 16;
/// How long an incoming stream may take to name its service.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Incoming streams whose header is being read at once. With the service
/// queues and concurrency below, this bounds the streams whose data a node
/// buffers for services (each at most one stream window).
const HEADERS_IN_PROGRESS_MAX: usize = 256;
/// Streams each built-in service serves at once.
const BUILTIN_CONCURRENCY: usize = 64;
const SERVICE_LEN_MAX: usize = 32;
const SINK_REPLY_LEN: usize = 8 + 32;

/// The header that opens a stream to `service`.
pub fn header(service: &str) -> Result<Bytes, StreamError> {
    if service.is_empty()
        || service.len() > SERVICE_LEN_MAX
        || !service.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(StreamError::Violation);
    }
    let mut out = Vec::with_capacity(1 + service.len());
    out.push(service.len() as u8);
    out.extend_from_slice(service.as_bytes());
    Ok(Bytes::from(out))
}

async fn read_header(stream: &mut RouteStream) -> Result<String, StreamError> {
    let len = usize::from(stream.read_exact(1).await?[0]);
    if len == 0 || len > SERVICE_LEN_MAX {
        return Err(StreamError::Violation);
    }
    let name = stream.read_exact(len).await?;
    String::from_utf8(name.to_vec())
        .ok()
        .filter(|name| name.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or(StreamError::Violation)
}

/// Hands incoming streams to their services.
pub(crate) async fn dispatch(mut incoming: mpsc::Receiver<RouteStream>, services: Services) {
    let in_progress = Arc::new(Semaphore::new(HEADERS_IN_PROGRESS_MAX));
    while let Some(mut stream) = incoming.recv().await {
        let Ok(permit) = in_progress.clone().try_acquire_owned() else {
            // Dropping resets it.
            continue;
        };
        let services = services.clone();
        tokio::spawn(async move {
            let name = match tokio::time::timeout(HEADER_TIMEOUT, read_header(&mut stream)).await {
                Ok(Ok(name)) => name,
                _ => return,
            };
            drop(permit);
            let sender = services
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .get(&name)
                .cloned();
            match sender {
                Some(sender) => {
                    if sender.try_send(stream).is_err() {
                        tracing::debug!(service = %name, "service busy: stream refused");
                    }
                }
                None => {
                    tracing::debug!(service = %name, "stream for a service not offered here");
                }
            }
        });
    }
}

pub(crate) fn start_builtin(routing: &Routing) {
    serve_each(routing.serve(ECHO), echo);
    serve_each(routing.serve(SINK), sink);
    serve_each(routing.serve(DISCARD), discard);
}

fn serve_each<F, Fut>(mut streams: mpsc::Receiver<RouteStream>, handle: F)
where
    F: Fn(RouteStream) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), StreamError>> + Send + 'static,
{
    tokio::spawn(async move {
        let running = Arc::new(Semaphore::new(BUILTIN_CONCURRENCY));
        while let Some(stream) = streams.recv().await {
            let Ok(permit) = running.clone().acquire_owned().await else {
                return;
            };
            let served = handle(stream);
            tokio::spawn(async move {
                if let Err(error) = served.await {
                    tracing::debug!("service stream ended: {error}");
                }
                drop(permit);
            });
        }
    });
}

async fn echo(mut stream: RouteStream) -> Result<(), StreamError> {
    while let Some(chunk) = stream.read().await {
        stream.write_all(chunk?).await?;
    }
    stream.finish().await
}

async fn sink(mut stream: RouteStream) -> Result<(), StreamError> {
    let mut hasher = blake3::Hasher::new();
    let mut bytes = 0u64;
    while let Some(chunk) = stream.read().await {
        let chunk = chunk?;
        bytes += chunk.len() as u64;
        hasher.update(&chunk);
    }
    let mut reply = Vec::with_capacity(SINK_REPLY_LEN);
    reply.extend_from_slice(&bytes.to_be_bytes());
    reply.extend_from_slice(hasher.finalize().as_bytes());
    stream.write_all(Bytes::from(reply)).await?;
    stream.finish().await?;
    // Wait for the other end's end, so the stream closes cleanly.
    while stream.read().await.is_some() {}
    Ok(())
}

async fn discard(mut stream: RouteStream) -> Result<(), StreamError> {
    let mut bytes = 0u64;
    while let Some(chunk) = stream.read().await {
        bytes += chunk?.len() as u64;
    }
    stream
        .write_all(Bytes::copy_from_slice(&bytes.to_be_bytes()))
        .await?;
    stream.finish().await?;
    while stream.read().await.is_some() {}
    Ok(())
}

/// Writes `block` over a stream opened to `discard` until `duration` has
/// passed, finishes, and returns the bytes the far end counted and the
/// time from the first write to its answer.
pub async fn send_to_discard(
    mut stream: RouteStream,
    block: Bytes,
    duration: Duration,
) -> Result<(u64, Duration), RouteError> {
    let started = Instant::now();
    while started.elapsed() < duration {
        stream.write_all(block.clone()).await?;
    }
    stream.finish().await?;
    let reply = stream.read_exact(8).await?;
    let elapsed = started.elapsed();
    while stream.read().await.is_some() {}
    Ok((
        u64::from_be_bytes(reply[..].try_into().unwrap_or([0; 8])),
        elapsed,
    ))
}

/// What a transfer to a `sink` showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub bytes: u64,
    /// From the first byte written to the sink's answer.
    pub elapsed: Duration,
    pub sent_hash: [u8; 32],
    /// What the sink says it received.
    pub received_bytes: u64,
    pub received_hash: [u8; 32],
}

impl Transfer {
    /// The sink got exactly what was sent.
    pub fn intact(&self) -> bool {
        self.received_bytes == self.bytes && self.received_hash == self.sent_hash
    }

    pub fn bytes_per_second(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Length of the block a transfer repeats (random, so that lost,
/// duplicated or reordered data shows in the hash).
const PATTERN_LEN: usize = 1 << 20;
/// Bytes handed to the stream per write.
const WRITE_LEN: usize = 256 * 1024;

/// Sends `total` bytes over a stream already opened to `sink` and checks
/// the sink's answer. `progress` is told the bytes written so far.
pub async fn send_to_sink(
    mut stream: RouteStream,
    total: u64,
    mut progress: impl FnMut(u64),
) -> Result<Transfer, RouteError> {
    let mut pattern = vec![0u8; PATTERN_LEN];
    // Any randomness does; a failure leaves zeros, still a valid pattern.
    let _ = getrandom::fill(&mut pattern);
    let pattern = Bytes::from(pattern);
    let mut hasher = blake3::Hasher::new();
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        let offset = (sent % PATTERN_LEN as u64) as usize;
        let len = (total - sent)
            .min(WRITE_LEN as u64)
            .min((PATTERN_LEN - offset) as u64) as usize;
        let chunk = pattern.slice(offset..offset + len);
        hasher.update(&chunk);
        stream.write_all(chunk).await?;
        sent += len as u64;
        progress(sent);
    }
    stream.finish().await?;
    let reply = stream.read_exact(SINK_REPLY_LEN).await?;
    let elapsed = started.elapsed();
    while stream.read().await.is_some() {}
    let mut received_hash = [0u8; 32];
    received_hash.copy_from_slice(&reply[8..]);
    Ok(Transfer {
        bytes: total,
        elapsed,
        sent_hash: *hasher.finalize().as_bytes(),
        received_bytes: u64::from_be_bytes(reply[..8].try_into().unwrap_or([0; 8])),
        received_hash,
    })
}
