//! A SOCKS 5 server on a local address that sends every connection
//! through an exit over a route.
//!
//! Each SOCKS username is an isolation group: connections of different
//! usernames go over different routes (and, when the network has several
//! exits and no exit is named, may leave by different exits). A username
//! of the form `group@exit` also names the exit, by node id or a prefix of
//! it; `@exit` names the exit alone. The password is ignored.
//!
//! A group's route is opened once and kept (routing repairs it when a
//! relay fails), so a connection's greeting, request and first bytes go
//! out at once: the first byte comes back one route round trip plus one
//! round trip from the exit to the origin after the request.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use fogwire_exit_proto::socks::{
    self, Command, Credentials, Greeting, METHOD_PASSWORD, METHOD_REFUSED, SocksError, UdpHeader,
};
use fogwire_exit_proto::wire::{self, Reply, Status};
use fogwire_identity::{NodeId, prefix_of};
use fogwire_route::proto::path::HOPS_MAX;
use fogwire_route::proto::router::RouteId;
use fogwire_route::{Constraints, RouteError, RouteStream, Routing, services};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

use crate::choose::{exits, pick};
use crate::outbound::Outbound;
use crate::proxy_udp::{Association, UdpCounters};
use crate::service::SERVICE;
use crate::splice::{HeadError, Moved, read_head, splice};

/// How long a client has for its greeting, credentials and request.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long opening a group's route may take.
pub const ROUTE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the exit may take to answer a request (it resolves and
/// connects within its own 15 s).
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// The largest UDP payload a SOCKS client may send through an exit: a
/// route datagram, less the exit's header with the longest hostname.
pub const UDP_PAYLOAD_MAX: usize =
    fogwire_route::proto::router::DATAGRAM_LEN_MAX - 4 - wire::REQUEST_LEN_MAX;

/// Warnings about one cause are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// How the proxy serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    pub listen: SocketAddr,
    /// The exit used when a username names none; `None` picks the
    /// cheapest, nearest one.
    pub exit: Option<NodeId>,
    /// Links on each route, at least (more hops hide the client better
    /// from the exit and cost more).
    pub min_hops: usize,
    /// SOCKS connections open at once; more are closed on accept.
    pub connections_max: usize,
    /// Isolation groups (usernames) with a route kept; the least recently
    /// used gives its route up beyond.
    pub groups_max: usize,
}

impl ProxyConfig {
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            exit: None,
            min_hops: 1,
            connections_max: 1024,
            groups_max: 64,
        }
    }
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    #[error("cannot listen for SOCKS on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// Counters of a proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyStats {
    pub connections: u64,
    pub connected: u64,
    pub failed: u64,
    /// Connections closed on accept: the proxy was full.
    pub turned_away: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub routes_opened: u64,
    /// UDP datagrams relayed to exits and answers passed back; datagrams
    /// dropped (from another address, malformed, a route error) and too
    /// large for a route.
    pub udp_sent: u64,
    pub udp_received: u64,
    pub udp_dropped: u64,
    pub udp_oversized: u64,
}

#[derive(Default)]
struct Counters {
    udp: Arc<UdpCounters>,
    connections: AtomicU64,
    connected: AtomicU64,
    failed: AtomicU64,
    turned_away: AtomicU64,
    routes_opened: AtomicU64,
    moved: Moved,
}

/// A group's route to its exit.
#[derive(Debug, Clone, Copy)]
struct Held {
    route: RouteId,
    exit: NodeId,
    price_per_gib: u64,
}

/// A group's name, and the exit its username names (a node id or a
/// prefix of one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct GroupKey {
    group: String,
    exit: Option<String>,
}

/// A group: its route, opened by one connection at a time.
struct Group {
    held: tokio::sync::Mutex<Option<Held>>,
    used: Mutex<Instant>,
}

struct Shared {
    last_warning_ms: AtomicU64,
    config: ProxyConfig,
    routing: Routing,
    outbound: Arc<Outbound>,
    groups: Mutex<HashMap<GroupKey, Arc<Group>>>,
    counters: Counters,
}

/// A running SOCKS proxy; stops when dropped.
pub struct Proxy {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why one SOCKS connection failed: the reply code it is owed, if any,
/// and what to log.
struct Refused(Option<u8>, String);

impl From<SocksError> for Refused {
    fn from(error: SocksError) -> Self {
        Refused(error.reply_code(), error.to_string())
    }
}

impl Proxy {
    /// Listens on `config.listen` and serves until dropped. The default
    /// group's route is opened at once, so the first connection need not
    /// wait for it.
    pub async fn start(config: ProxyConfig, outbound: Arc<Outbound>) -> Result<Proxy, ProxyError> {
        let routing = outbound.routing().clone();
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ProxyError::Listen {
                    address: config.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| ProxyError::Listen {
            address: config.listen,
            source,
        })?;
        let shared = Arc::new(Shared {
            last_warning_ms: AtomicU64::new(0),
            config,
            routing,
            outbound,
            groups: Mutex::new(HashMap::new()),
            counters: Counters::default(),
        });
        let warming = shared.clone();
        tokio::spawn(async move {
            if let Err(Refused(_, why)) = warming.route_for(&GroupKey::default()).await {
                tracing::debug!(%why, "socks: no route to an exit yet; the first connection will try again");
            }
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        tracing::info!(%local_addr, "socks: serving");
        Ok(Proxy {
            local_addr,
            shared,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn config(&self) -> &ProxyConfig {
        &self.shared.config
    }

    /// Stops taking connections (those open end with their routes).
    pub fn stop(&self) {
        self.task.abort();
    }

    /// The routes kept now: each group (username) with the exit it
    /// leaves by and its route.
    pub fn routes(&self) -> Vec<(String, Option<String>, NodeId, RouteId)> {
        let groups = self.shared.groups.lock().unwrap_or_else(|p| p.into_inner());
        groups
            .iter()
            .filter_map(|(key, group)| {
                let held = (*group.held.try_lock().ok()?)?;
                Some((key.group.clone(), key.exit.clone(), held.exit, held.route))
            })
            .collect()
    }

    pub fn stats(&self) -> ProxyStats {
        let counters = &self.shared.counters;
        ProxyStats {
            connections: counters.connections.load(Ordering::Relaxed),
            connected: counters.connected.load(Ordering::Relaxed),
            failed: counters.failed.load(Ordering::Relaxed),
            turned_away: counters.turned_away.load(Ordering::Relaxed),
            bytes_up: counters.moved.to_stream.load(Ordering::Relaxed),
            bytes_down: counters.moved.to_socket.load(Ordering::Relaxed),
            routes_opened: counters.routes_opened.load(Ordering::Relaxed),
            udp_sent: counters.udp.sent.load(Ordering::Relaxed),
            udp_received: counters.udp.received.load(Ordering::Relaxed),
            udp_dropped: counters.udp.dropped.load(Ordering::Relaxed),
            udp_oversized: counters.udp.oversized.load(Ordering::Relaxed),
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let open = Arc::new(Semaphore::new(shared.config.connections_max.max(1)));
    loop {
        let (socket, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors, say: back off rather than spin.
                tracing::warn!(%error, "socks: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            shared.counters.turned_away.fetch_add(1, Ordering::Relaxed);
            drop(socket);
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            shared.counters.connections.fetch_add(1, Ordering::Relaxed);
            let _ = socket.set_nodelay(true);
            if let Err(Refused(_, why)) = shared.serve(socket).await {
                shared.counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%why, "socks: connection failed");
            }
            drop(permit);
        });
    }
}

/// Reads from `socket` into `buffer` until `decode` takes a whole
/// message (at most `max` bytes), and drops the bytes it took.
async fn read_message<T>(
    socket: &mut TcpStream,
    buffer: &mut BytesMut,
    max: usize,
    decode: impl Fn(&[u8]) -> Result<(T, usize), SocksError>,
) -> Result<T, Refused> {
    loop {
        match decode(buffer) {
            Ok((message, len)) => {
                let _ = buffer.split_to(len);
                return Ok(message);
            }
            Err(SocksError::Incomplete(_)) if buffer.len() < max => {}
            Err(error) => return Err(error.into()),
        }
        buffer.reserve(max);
        let read = socket
            .read_buf(buffer)
            .await
            .map_err(|error| Refused(None, format!("reading: {error}")))?;
        if read == 0 {
            return Err(Refused(None, "the client closed the connection".into()));
        }
    }
}

/// Splits a username into its group and the exit it names.
fn parse_username(username: &[u8]) -> (String, Option<String>) {
    let text = String::from_utf8_lossy(username);
    match text.rsplit_once('@') {
        Some((group, exit)) if !exit.is_empty() => (group.to_owned(), Some(exit.to_owned())),
        _ => (text.into_owned(), None),
    }
}

impl Shared {
    async fn serve(&self, mut socket: TcpStream) -> Result<(), Refused> {
        let mut buffer = BytesMut::with_capacity(512);
        let handshake = async {
            let greeting = read_message(
                &mut socket,
                &mut buffer,
                socks::GREETING_LEN_MAX,
                Greeting::decode,
            )
            .await?;
            let method = greeting.choose();
            write(&mut socket, &socks::method_reply(method)).await?;
            if method == METHOD_REFUSED {
                return Err(Refused(
                    None,
                    "the client offered no method this proxy takes".into(),
                ));
            }
            let mut username = Vec::new();
            if method == METHOD_PASSWORD {
                let credentials = read_message(
                    &mut socket,
                    &mut buffer,
                    socks::CREDENTIALS_LEN_MAX,
                    Credentials::decode,
                )
                .await?;
                write(&mut socket, &socks::credentials_reply(true)).await?;
                username = credentials.username;
            }
            let request = read_message(
                &mut socket,
                &mut buffer,
                socks::REQUEST_LEN_MAX,
                socks::Request::decode,
            )
            .await?;
            Ok((username, request))
        };
        let (username, request) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(done)) => done,
            Ok(Err(Refused(Some(code), why))) => {
                let _ = write(&mut socket, &socks::request_reply(code, unspecified())).await;
                return Err(Refused(Some(code), why));
            }
            Ok(Err(refused)) => return Err(refused),
            Err(_) => return Err(Refused(None, "the client's handshake took too long".into())),
        };
        let (group, named_exit) = parse_username(&username);
        if request.command == Command::UdpAssociate {
            return self.associate(socket, group, named_exit, &request).await;
        }
        let exit_request = wire::Request {
            destination: request.destination,
            port: request.port,
        };
        match self
            .open_through_exit(
                &group,
                named_exit.as_deref(),
                &exit_request,
                buffer.split().freeze(),
            )
            .await
        {
            Ok((stream, held)) => {
                let meter = self
                    .outbound
                    .meter(held.exit, held.price_per_gib, held.route);
                let bound = socket.local_addr().unwrap_or_else(|_| unspecified());
                write(
                    &mut socket,
                    &socks::request_reply(socks::reply::SUCCEEDED, bound),
                )
                .await?;
                self.counters.connected.fetch_add(1, Ordering::Relaxed);
                splice(socket, stream, None, &[&self.counters.moved, &meter.moved])
                    .await
                    .map_err(|error| Refused(None, error.to_string()))
            }
            Err(Refused(code, why)) => {
                let code = code.unwrap_or(socks::reply::GENERAL_FAILURE);
                let _ = write(&mut socket, &socks::request_reply(code, unspecified())).await;
                Err(Refused(Some(code), why))
            }
        }
    }

    /// Serves a UDP ASSOCIATE: a UDP socket beside the control
    /// connection, relayed to the group's exit until the control
    /// connection closes.
    async fn associate(
        &self,
        mut control: TcpStream,
        group: String,
        named_exit: Option<String>,
        request: &socks::Request,
    ) -> Result<(), Refused> {
        let failed = |error: std::io::Error| Refused(None, format!("UDP ASSOCIATE: {error}"));
        let local = control.local_addr().map_err(failed)?;
        let client_ip = control.peer_addr().map_err(failed)?.ip();
        // A client that names its UDP port is held to it.
        let client_port = request.port;
        let key = GroupKey {
            group,
            exit: named_exit.map(|exit| prefix_of(&exit).to_owned()),
        };
        let prepared = async {
            let held = self.route_for(&key).await?;
            let replies = self.outbound.replies.clone();
            let socket = UdpSocket::bind(SocketAddr::new(local.ip(), 0))
                .await
                .map_err(failed)?;
            Ok::<_, Refused>((held, replies, Arc::new(socket)))
        };
        let (held, replies, socket) = match prepared.await {
            Ok(prepared) => prepared,
            Err(Refused(code, why)) => {
                let code = code.unwrap_or(socks::reply::GENERAL_FAILURE);
                let _ = write(&mut control, &socks::request_reply(code, unspecified())).await;
                return Err(Refused(Some(code), why));
            }
        };
        let (answers, mut answers_queue) = mpsc::channel(crate::proxy_udp::ANSWERS_QUEUED);
        let association = Arc::new(Association {
            answers,
            exit: held.exit,
            counters: self.counters.udp.clone(),
        });
        let Some(id) = replies.register(association.clone()) else {
            let code = socks::reply::GENERAL_FAILURE;
            let _ = write(&mut control, &socks::request_reply(code, unspecified())).await;
            return Err(Refused(
                Some(code),
                "too many UDP associations at once".into(),
            ));
        };
        let bound = socket.local_addr().map_err(failed)?;
        let meter = self
            .outbound
            .meter(held.exit, held.price_per_gib, held.route);
        let outcome = async {
            write(&mut control, &socks::request_reply(socks::reply::SUCCEEDED, bound)).await?;
            self.counters.connected.fetch_add(1, Ordering::Relaxed);
                        let mut buffer = vec![0u8; 65_536];
            let mut ignored = [0u8; 256];
            // The SOCKS client's UDP address, once it has sent.
            let mut client = None;
            loop {
                tokio::select! {
                    read = control.read(&mut ignored) => match read {
                        Ok(0) | Err(_) => return Ok(()),
                        Ok(_) => {}
                    },
                    received = socket.recv_from(&mut buffer) => {
                        let Ok((len, from)) = received else { return Ok(()) };
                        if from.ip() != client_ip || (client_port != 0 && from.port() != client_port) {
                            self.counters.udp.dropped.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                                                client = Some(from);
                        if let Some(sent) = self.relay_datagram(&buffer[..len], id, held).await {
                            meter.moved.to_stream.fetch_add(sent as u64, Ordering::Relaxed);
                        }
                    }
                    Some(answer) = answers_queue.recv() => {
                                                let sent = match client {
                            Some(client) => socket.send_to(&answer, client).await.is_ok(),
                            None => false,
                        };
                        meter.moved.to_socket.fetch_add(answer.len() as u64, Ordering::Relaxed);
                        let counter = if sent { &self.counters.udp.received } else { &self.counters.udp.dropped };
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        .await;
        replies.remove(id);
        outcome
    }

    /// One datagram from the SOCKS client to the exit.
    /// Returns the payload's length if it was sent.
    async fn relay_datagram(&self, datagram: &[u8], id: u32, held: Held) -> Option<usize> {
        let counters = &self.counters.udp;
        let Ok((header, at)) = UdpHeader::decode(datagram) else {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let payload = &datagram[at..];
        if payload.len() > UDP_PAYLOAD_MAX {
            counters.oversized.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let Ok(bytes) = (wire::Datagram {
            association: id,
            peer: wire::Request {
                destination: header.destination,
                port: header.port,
            },
            payload,
        })
        .encode() else {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let len = payload.len();
        match self
            .routing
            .send_datagram(held.route, crate::udp::DATAGRAM_PORT, Bytes::from(bytes))
            .await
        {
            Ok(()) => {
                counters.sent.fetch_add(1, Ordering::Relaxed);
                Some(len)
            }
            Err(_) => {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// A stream to the exit, its request sent (with whatever the client
    /// sent after its own) and answered.
    async fn open_through_exit(
        &self,
        group: &str,
        named_exit: Option<&str>,
        request: &wire::Request,
        early: Bytes,
    ) -> Result<(RouteStream, Held), Refused> {
        let key = GroupKey {
            group: group.to_owned(),
            exit: named_exit.map(|exit| prefix_of(exit).to_owned()),
        };
        let encoded = request
            .encode()
            .map_err(|error| Refused(Some(socks::reply::HOST_UNREACHABLE), error.to_string()))?;
        let mut first = BytesMut::new();
        first.extend_from_slice(
            &services::header(SERVICE).map_err(|error| Refused(None, error.to_string()))?,
        );
        first.extend_from_slice(&encoded);
        first.extend_from_slice(&early);
        let first = first.freeze();
        // A kept route may have gone since it was last used: one retry on
        // a fresh one.
        let mut stream = None;
        for attempt in 0..2 {
            let held = self.route_for(&key).await?;
            match self.routing.open_stream(held.route).await {
                Ok(mut opened) => match opened.write_all(first.clone()).await {
                    Ok(()) => {
                        stream = Some((opened, held));
                        break;
                    }
                    Err(error) if attempt == 1 => return Err(Refused(None, error.to_string())),
                    Err(_) => self.forget(&key, held).await,
                },
                Err(error) if attempt == 1 => {
                    return Err(Refused(None, format!("no stream to the exit: {error}")));
                }
                Err(_) => self.forget(&key, held).await,
            }
        }
        let Some((mut stream, held)) = stream else {
            return Err(Refused(None, "no stream to the exit".into()));
        };
        let reply = tokio::time::timeout(EXIT_TIMEOUT, read_reply(&mut stream))
            .await
            .map_err(|_| {
                Refused(
                    Some(socks::reply::TTL_EXPIRED),
                    "the exit did not answer".into(),
                )
            })??;
        if reply.status != Status::Connected {
            if reply.status == Status::PaymentRequired && self.may_warn() {
                tracing::warn!(
                    exit = %held.exit.short(),
                    reason = %reply.reason,
                    "socks: the exit refused a connection for want of payment; fund this node's \
                     account (fogwire wallet balance) or pick a cheaper exit (fogwire exits)"
                );
            }
            return Err(Refused(
                Some(socks::reply_for(reply.status)),
                format!("the exit answered {:?}: {}", reply.status, reply.reason),
            ));
        }
        Ok((stream, held))
    }

    /// Whether a warning may be logged now: at most one per
    /// [`WARN_EVERY`], so a browser's hundred refused connections make one
    /// line.
    fn may_warn(&self) -> bool {
        let now = fogwire_env::unix_ms();
        let last = self.last_warning_ms.load(Ordering::Relaxed);
        now.saturating_sub(last) >= WARN_EVERY.as_millis() as u64
            && self
                .last_warning_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// The route of a group, opened if it has none.
    async fn route_for(&self, key: &GroupKey) -> Result<Held, Refused> {
        let group = {
            let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
            if !groups.contains_key(key) && groups.len() >= self.config.groups_max.max(1) {
                let oldest = groups
                    .iter()
                    .min_by_key(|(_, group)| *group.used.lock().unwrap_or_else(|p| p.into_inner()))
                    .map(|(name, _)| name.clone());
                if let Some(oldest) = oldest
                    && let Some(evicted) = groups.remove(&oldest)
                {
                    let routing = self.routing.clone();
                    tokio::spawn(async move {
                        if let Some(held) = *evicted.held.lock().await {
                            let _ = routing.close(held.route).await;
                        }
                    });
                }
            }
            groups
                .entry(key.clone())
                .or_insert_with(|| {
                    Arc::new(Group {
                        held: tokio::sync::Mutex::new(None),
                        used: Mutex::new(Instant::now()),
                    })
                })
                .clone()
        };
        *group.used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        let mut held = group.held.lock().await;
        if let Some(held) = *held {
            return Ok(held);
        }
        let known = exits(&self.routing)
            .await
            .map_err(|error| Refused(None, error.to_string()))?;
        let wanted_node = match &key.exit {
            None => self.config.exit,
            Some(prefix) => Some(
                known
                    .iter()
                    .map(|exit| exit.node)
                    .find(|node| node.to_string().starts_with(prefix.as_str()))
                    .or_else(|| prefix.parse().ok())
                    .ok_or_else(|| {
                        Refused(
                            Some(socks::reply::NETWORK_UNREACHABLE),
                            format!("the username names exit `{prefix}`, which no known exit's id starts with (see `fogwire exits`)"),
                        )
                    })?,
            ),
        };
        let Some(exit) = pick(&known, wanted_node) else {
            let why = match wanted_node {
                Some(node) => format!(
                    "{} is not an exit this node can reach (see `fogwire exits`)",
                    node.short()
                ),
                None if known.is_empty() => {
                    "no exit is known in the network (see `fogwire exits`)".to_owned()
                }
                None => "no known exit is reachable (see `fogwire exits`)".to_owned(),
            };
            return Err(Refused(Some(socks::reply::NETWORK_UNREACHABLE), why));
        };
        let constraints = Constraints {
            min_hops: self.config.min_hops.clamp(1, HOPS_MAX),
            ..Constraints::default()
        };
        let opened = tokio::time::timeout(ROUTE_TIMEOUT, self.routing.open(exit.node, constraints))
            .await
            .map_err(|_| RouteError::Timeout(ROUTE_TIMEOUT))
            .and_then(|opened| opened)
            .map_err(|error| {
                Refused(
                    Some(socks::reply::NETWORK_UNREACHABLE),
                    format!("no route to exit {}: {error}", exit.node.short()),
                )
            })?;
        self.counters.routes_opened.fetch_add(1, Ordering::Relaxed);
        tracing::info!(group = %key.group, exit = %exit.node.short(), hops = opened.path.len(), "socks: route to the exit is up");
        let fresh = Held {
            route: opened.route,
            exit: exit.node,
            price_per_gib: exit.price_per_gib,
        };
        *held = Some(fresh);
        Ok(fresh)
    }

    /// Drops a group's route that failed (if it is still the one held).
    async fn forget(&self, key: &GroupKey, failed: Held) {
        let group = self
            .groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned();
        if let Some(group) = group {
            let mut held = group.held.lock().await;
            if held.is_some_and(|held| held.route == failed.route) {
                *held = None;
                let _ = self.routing.close(failed.route).await;
                tracing::debug!(exit = %failed.exit.short(), "socks: dropped a broken route");
            }
        }
    }
}

/// The exit's reply, and whatever followed it put back on the stream.
async fn read_reply(stream: &mut RouteStream) -> Result<Reply, Refused> {
    read_head(stream, Reply::decode)
        .await
        .map_err(|error| match error {
            HeadError::Malformed(error) => Refused(None, format!("the exit's reply: {error}")),
            HeadError::Stream(error) => Refused(None, format!("the exit's stream: {error}")),
            HeadError::Ended => Refused(None, "the exit closed the stream without a reply".into()),
        })
}

async fn write(socket: &mut TcpStream, bytes: &[u8]) -> Result<(), Refused> {
    socket
        .write_all(bytes)
        .await
        .map_err(|error| Refused(None, format!("writing: {error}")))
}

fn unspecified() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_username_names_a_group_and_maybe_an_exit() {
        assert_eq!(parse_username(b"alice"), ("alice".into(), None));
        assert_eq!(
            parse_username(b"alice@fw1abc"),
            ("alice".into(), Some("fw1abc".into()))
        );
        assert_eq!(
            parse_username(b"@fw1abc"),
            ("".into(), Some("fw1abc".into()))
        );
        assert_eq!(parse_username(b"a@b@"), ("a@b@".into(), None));
    }
}
