//! Services on routes, and the way to plug one in.
//!
//! A service implements [`Service`] and is offered with
//! [`crate::Routing::accept`] under its [`Spec`]: a name for streams and,
//! if it takes datagrams, a port.
//!
//! - A stream opened to a node starts with a header naming the service it
//!   is for: `length u8 (1..=32) | name (printable ASCII)`. The dispatcher
//!   reads it and queues the stream for that service; a stream for an
//!   unknown service, whose header does not come within
//!   [`HEADER_TIMEOUT`], or that finds its service's queue full, is reset.
//!   Each service runs at most [`Limits::streams_at_once`] of its streams.
//! - A datagram carries the port of its service (`port u16 | data`, see
//!   `docs/protocol/routing.md` §5); it is queued for the service on that
//!   port, and dropped when nobody serves the port or its queue is full
//!   (datagrams are unreliable).
//!
//! Built in:
//! - `echo` writes back what it reads, then finishes;
//! - `sink` reads to the end, then answers `bytes u64 | BLAKE3 [32]` of
//!   what it read, and finishes: a transfer check ([`send_to_sink`]);
//! - `discard` reads to the end, then answers `bytes u64` and finishes: a
//!   throughput measure that costs the receiver nothing but the reading.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fogwire_identity::NodeId;
use fogwire_route_proto::router::SessionId;
use fogwire_route_proto::router::stream::StreamError;
use tokio::sync::{Semaphore, mpsc};

use crate::{RouteError, RouteStream};

pub const ECHO: &str = "echo";
pub const SINK: &str = "sink";
pub const DISCARD: &str = "discard";
/// How long an incoming stream may take to name its service.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Incoming streams whose header is being read at once. With the service
/// queues and concurrency below, this bounds the streams whose data a node
/// buffers for services (each at most one stream window).
const HEADERS_IN_PROGRESS_MAX: usize = 256;
const SERVICE_LEN_MAX: usize = 32;
const SINK_REPLY_LEN: usize = 8 + 32;

/// A boxed future, for services.
pub type BoxFuture<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send>>;

/// A datagram that arrived for a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// The node at the other end of the route.
    pub from: NodeId,
    /// The session it came on: answers go back on it
    /// ([`crate::Routing::reply_datagram`]).
    pub session: SessionId,
    pub port: u16,
    pub data: Bytes,
}

/// A service reachable over routes.
pub trait Service: Send + Sync + 'static {
    /// Serves one stream opened to this service (its header already
    /// read). Runs as a task of its own, within the service's limits.
    fn accept(&self, stream: RouteStream) -> BoxFuture<()>;

    /// Takes one datagram sent to this service's port, in the order they
    /// came, from the service's own queue. It must not block: a service
    /// with slow work queues it itself.
    fn datagram(&self, datagram: Datagram) {
        let _ = datagram;
    }
}

/// A service that takes datagrams only, each handed to the function it
/// holds; a stream opened to it is reset.
pub struct Datagrams<F>(pub F);

impl<F> std::fmt::Debug for Datagrams<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datagrams").finish_non_exhaustive()
    }
}

impl<F: Fn(Datagram) + Send + Sync + 'static> Service for Datagrams<F> {
    fn accept(&self, stream: RouteStream) -> BoxFuture<()> {
        drop(stream);
        Box::pin(async {})
    }

    fn datagram(&self, datagram: Datagram) {
        (self.0)(datagram);
    }
}

/// The bounds of one service's queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Streams waiting for the service; more are reset.
    pub streams_queued: usize,
    /// Streams the service serves at once; the queue waits beyond.
    pub streams_at_once: usize,
    /// Datagrams waiting for the service; more are dropped.
    pub datagrams_queued: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            streams_queued: 16,
            streams_at_once: 64,
            datagrams_queued: 1024,
        }
    }
}

/// How a service is offered: its name, its datagram port, its bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub name: &'static str,
    pub datagram_port: Option<u16>,
    pub limits: Limits,
}

impl Spec {
    /// A service of streams named `name`, with the default bounds.
    pub const fn streams(name: &'static str) -> Self {
        Self {
            name,
            datagram_port: None,
            limits: Limits {
                streams_queued: 16,
                streams_at_once: 64,
                datagrams_queued: 1024,
            },
        }
    }

    /// A service of datagrams to `port` only (streams to `name` are
    /// reset), at most `queued` waiting: see [`Datagrams`].
    pub const fn datagrams(name: &'static str, port: u16, queued: usize) -> Self {
        Self::streams(name)
            .with_datagrams(port)
            .with_limits(Limits {
                streams_queued: 1,
                streams_at_once: 1,
                datagrams_queued: queued,
            })
    }

    /// Datagrams to `port` are this service's too.
    pub const fn with_datagrams(mut self, port: u16) -> Self {
        self.datagram_port = Some(port);
        self
    }

    pub const fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}

/// Why a service could not be offered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    #[error("`{0}` is not a service name: 1 to 32 printable ASCII characters")]
    BadName(String),
    #[error("datagram port {port} is served by `{by}` already")]
    PortTaken { port: u16, by: &'static str },
}

/// The queues of the services offered on a node, by name and by port.
#[derive(Default)]
pub(crate) struct Registry {
    streams: HashMap<String, mpsc::Sender<RouteStream>>,
    datagrams: HashMap<u16, (&'static str, mpsc::Sender<Datagram>)>,
}

pub(crate) type Services = Arc<Mutex<Registry>>;

fn lock(services: &Services) -> MutexGuard<'_, Registry> {
    services
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn valid_name(service: &str) -> bool {
    !service.is_empty()
        && service.len() <= SERVICE_LEN_MAX
        && service.bytes().all(|b| b.is_ascii_graphic())
}

/// Offers `service` by `spec` (replacing whoever served that name): its
/// queues, and the tasks that feed it from them.
pub(crate) fn offer(
    services: &Services,
    spec: Spec,
    service: Arc<dyn Service>,
) -> Result<(), ServiceError> {
    if !valid_name(spec.name) {
        return Err(ServiceError::BadName(spec.name.to_owned()));
    }
    let (streams, mut stream_queue) = mpsc::channel(spec.limits.streams_queued.max(1));
    let mut datagram_queue = None;
    {
        let mut registry = lock(services);
        if let Some(port) = spec.datagram_port {
            if let Some((by, _)) = registry.datagrams.get(&port)
                && *by != spec.name
            {
                return Err(ServiceError::PortTaken { port, by });
            }
            let (sender, receiver) = mpsc::channel(spec.limits.datagrams_queued.max(1));
            registry.datagrams.insert(port, (spec.name, sender));
            datagram_queue = Some(receiver);
        }
        registry.streams.insert(spec.name.to_owned(), streams);
    }
    let running = Arc::new(Semaphore::new(spec.limits.streams_at_once.max(1)));
    let serving = service.clone();
    tokio::spawn(async move {
        while let Some(stream) = stream_queue.recv().await {
            let Ok(permit) = running.clone().acquire_owned().await else {
                return;
            };
            let served = serving.accept(stream);
            tokio::spawn(async move {
                served.await;
                drop(permit);
            });
        }
    });
    if let Some(mut queue) = datagram_queue {
        tokio::spawn(async move {
            while let Some(datagram) = queue.recv().await {
                service.datagram(datagram);
            }
        });
    }
    Ok(())
}

/// Stops offering the service `name` (its tasks end with its queues);
/// whether it was offered.
pub(crate) fn withdraw(services: &Services, name: &str) -> bool {
    let mut registry = lock(services);
    registry.datagrams.retain(|_, (by, _)| *by != name);
    registry.streams.remove(name).is_some()
}

/// Forgets every service (their tasks end with their queues).
pub(crate) fn clear(services: &Services) {
    let mut registry = lock(services);
    registry.streams.clear();
    registry.datagrams.clear();
}

/// Queues a datagram for the service on its port; false if nobody serves
/// the port or its queue is full (it is dropped).
pub(crate) fn deliver_datagram(services: &Services, datagram: Datagram) -> bool {
    let sender = lock(services)
        .datagrams
        .get(&datagram.port)
        .map(|(_, sender)| sender.clone());
    sender.is_some_and(|sender| sender.try_send(datagram).is_ok())
}

/// The header that opens a stream to `service`.
pub fn header(service: &str) -> Result<Bytes, StreamError> {
    if !valid_name(service) {
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
            let sender = lock(&services).streams.get(&name).cloned();
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

/// A service served by one async function per stream.
struct StreamFn<F>(F);

impl<F, Fut> Service for StreamFn<F>
where
    F: Fn(RouteStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), StreamError>> + Send + 'static,
{
    fn accept(&self, stream: RouteStream) -> BoxFuture<()> {
        let served = (self.0)(stream);
        Box::pin(async move {
            if let Err(error) = served.await {
                tracing::debug!("service stream ended: {error}");
            }
        })
    }
}

/// The built-in services: `echo`, `sink` and `discard`.
pub fn builtin() -> [(Spec, Arc<dyn Service>); 3] {
    [
        (Spec::streams(ECHO), Arc::new(StreamFn(echo))),
        (Spec::streams(SINK), Arc::new(StreamFn(sink))),
        (Spec::streams(DISCARD), Arc::new(StreamFn(discard))),
    ]
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
