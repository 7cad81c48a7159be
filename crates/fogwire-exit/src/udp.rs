//! UDP through an exit: the exit's side of SOCKS UDP ASSOCIATE.
//!
//! A client's datagram to the exit's [`DATAGRAM_PORT`] names an
//! association (one UDP socket at the exit, for one UDP ASSOCIATE), a
//! destination and a payload (`fogwire_exit_proto::wire::Datagram`). The
//! exit opens the association's socket on first use, resolves a hostname
//! itself, checks the address against its policy, and sends. What comes
//! back to the socket from an address the association sent to goes back
//! to the client's [`REPLY_PORT`], on the session the client's datagrams
//! came on. An association idle for [`IDLE`] is closed.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use fogwire_exit_proto::policy::canonical;
use fogwire_exit_proto::wire::{Datagram, Destination, Request};
use fogwire_identity::NodeId;
use fogwire_route::proto::router::SessionId;
use fogwire_route::{Datagram as RouteDatagram, Routing};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::pay::Payments;
use crate::service::RESOLVE_TIMEOUT;

/// The exit's datagram port: client → exit.
pub const DATAGRAM_PORT: u16 = 1080;
/// The client's datagram port: exit → client.
pub const REPLY_PORT: u16 = 1081;
/// An association with no datagram either way this long is closed.
pub const IDLE: Duration = Duration::from_secs(60);
/// Associations one client may hold at once.
pub const ASSOCIATIONS_PER_CLIENT: usize = 16;
/// Associations in all.
pub const ASSOCIATIONS_MAX: usize = 1024;
/// Datagrams waiting to be sent on one association; more are dropped.
const QUEUE: usize = 64;
/// Destinations an association remembers; only they may answer.
const PEERS_REMEMBERED: usize = 64;
/// Largest UDP payload read.
const RECEIVE_LEN: usize = 65_535;

/// Counters of the exit's UDP.
#[derive(Debug, Default)]
pub(crate) struct UdpCounters {
    pub(crate) sent: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) dropped: AtomicU64,
}

struct Association {
    queue: mpsc::Sender<(Request, Bytes)>,
    /// The session answers go back on (the latest the client used).
    session: Arc<Mutex<SessionId>>,
}

type Key = (NodeId, u32);

/// The exit's associations.
pub(crate) struct ExitUdp {
    routing: OnceLock<Routing>,
    payments: Arc<Payments>,
    associations: Mutex<HashMap<Key, Association>>,
    pub(crate) counters: UdpCounters,
}

/// One association's state shared by its sending and receiving halves.
struct Shared {
    key: Key,
    socket: UdpSocket,
    /// Addresses sent to, newest last; only they may answer.
    peers: Mutex<VecDeque<SocketAddr>>,
    session: Arc<Mutex<SessionId>>,
}

impl ExitUdp {
    pub(crate) fn new(payments: Arc<Payments>) -> Self {
        Self {
            routing: OnceLock::new(),
            payments,
            associations: Mutex::new(HashMap::new()),
            counters: UdpCounters::default(),
        }
    }

    pub(crate) fn attach(&self, routing: Routing) {
        let _ = self.routing.set(routing);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Association>> {
        self.associations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes one datagram from a client; never blocks.
    pub(crate) fn datagram(
        self: &Arc<Self>,
        datagram: RouteDatagram,
        policy: impl FnOnce() -> fogwire_exit_proto::Policy,
    ) {
        let parsed = match Datagram::decode(&datagram.data) {
            Ok(parsed) => parsed,
            Err(error) => {
                tracing::debug!(client = %datagram.from.short(), %error, "exit: a malformed UDP datagram");
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let key = (datagram.from, parsed.association);
        let payload = datagram
            .data
            .slice(datagram.data.len() - parsed.payload.len()..);
        let mut associations = self.lock();
        if !associations.contains_key(&key) {
            let held = associations
                .keys()
                .filter(|(from, _)| *from == key.0)
                .count();
            if held >= ASSOCIATIONS_PER_CLIENT || associations.len() >= ASSOCIATIONS_MAX {
                tracing::debug!(client = %key.0.short(), held, "exit: over the UDP association limits");
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let Some(routing) = self.routing.get().cloned() else {
                return;
            };
            let Some(association) = self.open(key, datagram.session, routing, policy()) else {
                tracing::debug!("exit: cannot open a UDP socket");
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            };
            associations.insert(key, association);
        }
        let Some(association) = associations.get(&key) else {
            return;
        };
        *association
            .session
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = datagram.session;
        if let Err(error) = association.queue.try_send((parsed.peer, payload)) {
            tracing::debug!(%error, "exit: a UDP datagram dropped");
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A new association: its socket, and its two tasks.
    fn open(
        self: &Arc<Self>,
        key: Key,
        session: SessionId,
        routing: Routing,
        policy: fogwire_exit_proto::Policy,
    ) -> Option<Association> {
        let socket = bind()?;
        let (queue, receiver) = mpsc::channel(QUEUE);
        let session = Arc::new(Mutex::new(session));
        let shared = Arc::new(Shared {
            key,
            socket,
            peers: Mutex::new(VecDeque::new()),
            session: session.clone(),
        });
        let exit = self.clone();
        tokio::spawn(async move {
            let sending = exit.send_loop(&shared, receiver, &policy);
            let receiving = exit.receive_loop(&shared, &routing);
            // Whichever ends first (idle, or the queue closed) ends both.
            tokio::select! {
                () = sending => {}
                () = receiving => {}
            }
            exit.lock().remove(&shared.key);
        });
        Some(Association { queue, session })
    }

    async fn send_loop(
        &self,
        shared: &Shared,
        mut queue: mpsc::Receiver<(Request, Bytes)>,
        policy: &fogwire_exit_proto::Policy,
    ) {
        let mut resolved: HashMap<String, Option<SocketAddr>> = HashMap::new();
        loop {
            let Ok(Some((peer, payload))) = tokio::time::timeout(IDLE, queue.recv()).await else {
                return;
            };
            let address = match &peer.destination {
                Destination::Address(address) => Some(SocketAddr::new(*address, peer.port)),
                Destination::Host(name) => {
                    if resolved.len() >= PEERS_REMEMBERED {
                        resolved.clear();
                    }
                    match resolved.get(name) {
                        Some(known) => known.map(|a| SocketAddr::new(a.ip(), peer.port)),
                        None => {
                            let found = resolve(name, peer.port, policy).await;
                            resolved.insert(name.clone(), found);
                            found
                        }
                    }
                }
            };
            let Some(address) = address.filter(|a| policy.check(*a).is_ok()) else {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if let Err(why) = self.payments.admit(shared.key.0).await {
                tracing::debug!(client = %shared.key.0.short(), %why, "exit: UDP not paid for");
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.payments.count(shared.key.0, payload.len() as u64);
            {
                let mut peers = shared.peers.lock().unwrap_or_else(|p| p.into_inner());
                if !peers.contains(&address) {
                    if peers.len() == PEERS_REMEMBERED {
                        peers.pop_front();
                    }
                    peers.push_back(address);
                }
            }
            let dual_stack = shared.socket.local_addr().is_ok_and(|a| a.is_ipv6());
            match shared
                .socket
                .send_to(&payload, to_socket(address, dual_stack))
                .await
            {
                Ok(_) => {
                    self.counters.sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    tracing::debug!(%address, %error, "exit: a UDP send failed");
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    async fn receive_loop(&self, shared: &Shared, routing: &Routing) {
        let mut buffer = vec![0u8; RECEIVE_LEN];
        loop {
            let Ok(Ok((len, from))) =
                tokio::time::timeout(IDLE, shared.socket.recv_from(&mut buffer)).await
            else {
                return;
            };
            let from = SocketAddr::new(canonical(from.ip()), from.port());
            let known = shared
                .peers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&from);
            if !known {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let reply = Datagram {
                association: shared.key.1,
                peer: Request {
                    destination: Destination::Address(from.ip()),
                    port: from.port(),
                },
                payload: &buffer[..len],
            };
            let Ok(bytes) = reply.encode() else {
                continue;
            };
            self.payments.count(shared.key.0, len as u64);
            let session = *shared.session.lock().unwrap_or_else(|p| p.into_inner());
            match routing
                .reply_datagram(session, REPLY_PORT, Bytes::from(bytes))
                .await
            {
                Ok(()) => {
                    self.counters.received.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// The first allowed address `name` resolves to.
async fn resolve(name: &str, port: u16, policy: &fogwire_exit_proto::Policy) -> Option<SocketAddr> {
    let found = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port)))
        .await
        .ok()?
        .ok()?;
    found
        .map(|a| SocketAddr::new(canonical(a.ip()), a.port()))
        .find(|address| policy.check(*address).is_ok())
}

/// A UDP socket for both families if the host has IPv6, else IPv4 only.
fn bind() -> Option<UdpSocket> {
    let socket = std::net::UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0))
        .or_else(|_| std::net::UdpSocket::bind(("0.0.0.0", 0)))
        .ok()?;
    socket.set_nonblocking(true).ok()?;
    UdpSocket::from_std(socket).ok()
}

/// `address` as the socket's family wants it: IPv4 mapped into IPv6 on
/// a dual-stack socket.
fn to_socket(address: SocketAddr, dual_stack: bool) -> SocketAddr {
    match address.ip() {
        IpAddr::V4(v4) if dual_stack => {
            SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), address.port())
        }
        _ => address,
    }
}
