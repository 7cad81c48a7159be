//! The `exit` service: forwards route streams to the networks this
//! node's host reaches.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fogwire_exit_proto::Policy;
use fogwire_exit_proto::wire::{DecodeError, Destination, Reply, Request, Status};
use fogwire_route::proto::advert::Offer;
use fogwire_route::services::BoxFuture;
use fogwire_route::{Limits, RouteStream, Service, Spec};
use ipnet::IpNet;
use tokio::net::TcpStream;

use crate::clients::Clients;
use crate::pay::{Funds, Payments};
use crate::splice::{HeadError, Moved, read_head, splice};

/// The service's name on routes and in adverts.
pub const SERVICE: &str = "exit";
/// The name an exit that forwards VPN packets offers its leases under
/// (the node's VPN gateway serves it).
pub const VPN_SERVICE: &str = "vpn-exit";
/// How long a client has to send its whole request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a hostname may take to resolve.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting to a destination may take, over all its addresses.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a refused client's stream is kept for its reply to arrive.
const ANSWER_LINGER: Duration = Duration::from_secs(2);
/// Addresses of a name tried, at most.
const ADDRESSES_TRIED_MAX: usize = 4;
/// How often the host's own networks are read again (they change with
/// DHCP, VPNs, interfaces coming and going).
const LOCAL_NETWORKS_REFRESH: Duration = Duration::from_secs(30);

/// How an exit serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitConfig {
    /// What it forwards to; its `local_networks` are filled in from the
    /// host's interfaces, and kept current.
    pub policy: Policy,
    /// Each client's bytes per second, both ways together, in kbit/s;
    /// 0 for no cap.
    pub client_kbps: u32,
    /// Streams one client may have open at once.
    pub streams_per_client: usize,
    /// Streams open at once, all clients together.
    pub streams_max: usize,
    /// The price per GiB it advertises.
    pub price_per_gib: u64,
    /// Whether it forwards VPN clients' packets too (the node's VPN
    /// gateway does, with [`Exit::lease`] and [`Exit::check`]).
    pub vpn: bool,
}

impl Default for ExitConfig {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            client_kbps: 0,
            streams_per_client: 256,
            streams_max: 4096,
            price_per_gib: 0,
            vpn: false,
        }
    }
}

/// Counters of an exit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExitStats {
    pub streams: u64,
    pub connected: u64,
    pub refused: u64,
    pub failed: u64,
    pub busy: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub clients_now: u64,
    /// UDP datagrams sent for clients, answers passed back, datagrams
    /// refused by the policy, and dropped (malformed, over a limit, a
    /// full queue, an answer from an address not sent to).
    pub udp_sent: u64,
    pub udp_received: u64,
    pub udp_refused: u64,
    pub udp_dropped: u64,
    /// Receipts taken from paying clients, refused (forged, for another
    /// exit, below the price), and clients refused for want of funds.
    pub receipts: u64,
    pub receipts_refused: u64,
    pub refused_unpaid: u64,
}

#[derive(Default)]
struct Counters {
    streams: AtomicU64,
    connected: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
    busy: AtomicU64,
    moved: Moved,
}

struct Inner {
    config: ExitConfig,
    udp: Arc<crate::udp::ExitUdp>,
    payments: Arc<Payments>,
    policy: RwLock<(Policy, Instant)>,
    clients: Arc<Clients>,
    counters: Counters,
}

/// The exit service. Cheap to clone.
#[derive(Clone)]
pub struct Exit {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exit")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// The networks of this host's interfaces, by address and mask.
pub fn local_networks() -> Vec<IpNet> {
    let Ok(interfaces) = if_addrs::get_if_addrs() else {
        return Vec::new();
    };
    interfaces
        .iter()
        .filter_map(|interface| {
            let prefix = match &interface.addr {
                if_addrs::IfAddr::V4(v4) => v4.prefixlen,
                if_addrs::IfAddr::V6(v6) => v6.prefixlen,
            };
            IpNet::new(interface.ip(), prefix)
                .ok()
                .map(|net| net.trunc())
        })
        .collect()
}

/// Why a request was not connected: the status and reason the client is
/// told.
struct Failure(Status, String);

impl Exit {
    pub fn new(config: ExitConfig) -> Self {
        let mut policy = config.policy.clone();
        policy.local_networks = local_networks();
        let payments = Arc::new(Payments::new(config.price_per_gib));
        let clients = Clients::new(
            config.streams_per_client,
            config.client_kbps,
            payments.charging().then(|| payments.clone()),
        );
        Self {
            inner: Arc::new(Inner {
                config,
                udp: Arc::new(crate::udp::ExitUdp::new(payments.clone())),
                payments,
                policy: RwLock::new((policy, Instant::now())),
                clients,
                counters: Counters::default(),
            }),
        }
    }

    /// Offers the exit on `routing`: streams to `exit`, UDP datagrams to
    /// [`crate::udp::DATAGRAM_PORT`], and, if it charges, receipts to
    /// [`crate::pay::PAY_PORT`], with `funds` to read clients' balances
    /// (none: a charging exit refuses everyone, saying why).
    pub fn serve_on(
        &self,
        routing: &fogwire_route::Routing,
        funds: Option<Arc<dyn Funds>>,
    ) -> Result<(), fogwire_route::ServiceError> {
        self.inner.udp.attach(routing.clone());
        self.inner.payments.attach(routing.node_id(), funds);
        routing.accept(self.spec(), Arc::new(self.clone()))?;
        if self.inner.payments.charging() {
            let payments = self.inner.payments.clone();
            let take = move |datagram: fogwire_route::Datagram| {
                payments.receipt(datagram.from, &datagram.data);
            };
            let spec = Spec::datagrams("exit-pay", crate::pay::PAY_PORT, 1024);
            routing.accept(spec, Arc::new(fogwire_route::Datagrams(take)))?;
        }
        Ok(())
    }

    /// The latest receipt of each paying client since the last call, for
    /// the node to redeem in the ledger.
    pub fn take_receipts(&self) -> Vec<Vec<u8>> {
        self.inner.payments.take_receipts()
    }

    fn spec(&self) -> Spec {
        Spec::streams(SERVICE)
            .with_datagrams(crate::udp::DATAGRAM_PORT)
            .with_limits(Limits {
                streams_queued: 64,
                streams_at_once: self.inner.config.streams_max.max(1),
                datagrams_queued: 1024,
            })
    }

    /// What the exit says of itself in adverts.
    pub fn offer(&self) -> Offer {
        Offer {
            service: SERVICE.to_owned(),
            price_per_gib: self.inner.config.price_per_gib,
            terms: self.inner.config.policy.summary(),
        }
    }

    pub fn config(&self) -> &ExitConfig {
        &self.inner.config
    }

    pub fn stats(&self) -> ExitStats {
        let counters = &self.inner.counters;
        let pay = &self.inner.payments.counters;
        ExitStats {
            streams: counters.streams.load(Ordering::Relaxed),
            connected: counters.connected.load(Ordering::Relaxed),
            refused: counters.refused.load(Ordering::Relaxed),
            failed: counters.failed.load(Ordering::Relaxed),
            busy: counters.busy.load(Ordering::Relaxed),
            bytes_out: counters.moved.to_socket.load(Ordering::Relaxed),
            bytes_in: counters.moved.to_stream.load(Ordering::Relaxed),
            clients_now: self.inner.clients.count() as u64,
            udp_sent: self.inner.udp.counters.sent.load(Ordering::Relaxed),
            udp_received: self.inner.udp.counters.received.load(Ordering::Relaxed),
            udp_refused: self.inner.udp.counters.refused.load(Ordering::Relaxed),
            udp_dropped: self.inner.udp.counters.dropped.load(Ordering::Relaxed),
            receipts: pay.receipts.load(Ordering::Relaxed),
            receipts_refused: pay.receipts_refused.load(Ordering::Relaxed),
            refused_unpaid: pay.refused_unpaid.load(Ordering::Relaxed),
        }
    }

    /// Whether the policy forwards to `destination` now (per packet of
    /// the VPN: nothing is copied).
    pub fn check(&self, destination: SocketAddr) -> Result<(), fogwire_exit_proto::Refusal> {
        {
            let current = self.inner.policy.read().unwrap_or_else(|p| p.into_inner());
            if current.1.elapsed() < LOCAL_NETWORKS_REFRESH {
                return current.0.check(destination);
            }
        }
        self.policy().check(destination)
    }

    /// Admits `client` to send packets through this exit (its VPN): a
    /// charging exit checks it can pay, and the lease takes one of the
    /// client's stream slots while it lasts, sharing the client's
    /// bandwidth cap and credit with its streams.
    pub async fn lease(&self, client: fogwire_identity::NodeId) -> Result<crate::Lease, Reply> {
        let refuse = |status: Status, reason: String| Reply { status, reason };
        if let Err(why) = self.inner.payments.admit(client).await {
            tracing::info!(client = %client.short(), %why, "exit: a VPN client that has not paid, refused");
            return Err(refuse(Status::PaymentRequired, why));
        }
        let Some(slot) = self.inner.clients.enter(client) else {
            self.inner.counters.busy.fetch_add(1, Ordering::Relaxed);
            return Err(refuse(
                Status::Busy,
                "too many streams open through this exit at once".to_owned(),
            ));
        };
        Ok(crate::Lease { slot })
    }

    /// The policy, with the host's networks as they are now.
    fn policy(&self) -> Policy {
        {
            let current = self.inner.policy.read().unwrap_or_else(|p| p.into_inner());
            if current.1.elapsed() < LOCAL_NETWORKS_REFRESH {
                return current.0.clone();
            }
        }
        let mut fresh = self.inner.config.policy.clone();
        fresh.local_networks = local_networks();
        let mut current = self.inner.policy.write().unwrap_or_else(|p| p.into_inner());
        *current = (fresh.clone(), Instant::now());
        fresh
    }

    async fn serve(self, mut stream: RouteStream) {
        let counters = &self.inner.counters;
        counters.streams.fetch_add(1, Ordering::Relaxed);
        let peer = stream.peer();

        let request = match tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut stream)).await {
            Ok(Ok(request)) => request,
            Ok(Err(Some(error))) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(client = %peer.short(), %error, "exit: bad request");
                answer(
                    &mut stream,
                    Status::Failed,
                    &format!("bad request: {error}"),
                )
                .await;
                return;
            }
            // The stream ended, or the request did not come in time.
            _ => return,
        };
        if let Err(why) = self.inner.payments.admit(peer).await {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(client = %peer.short(), %why, "exit: not paid for");
            answer(&mut stream, Status::PaymentRequired, &why).await;
            return;
        }
        let Some(slot) = self.inner.clients.enter(peer) else {
            counters.busy.fetch_add(1, Ordering::Relaxed);
            answer(
                &mut stream,
                Status::Busy,
                "too many streams open through this exit at once",
            )
            .await;
            return;
        };
        let socket = match self.connect(&request).await {
            Ok(socket) => socket,
            Err(Failure(status, reason)) => {
                let counter = if status == Status::Refused {
                    &counters.refused
                } else {
                    &counters.failed
                };
                counter.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(client = %peer.short(), ?status, %reason, "exit: not connected");
                answer(&mut stream, status, &reason).await;
                return;
            }
        };
        counters.connected.fetch_add(1, Ordering::Relaxed);
        if stream
            .write_all(Bytes::from(
                Reply {
                    status: Status::Connected,
                    reason: String::new(),
                }
                .encode(),
            ))
            .await
            .is_err()
        {
            return;
        }
        if let Err(error) = splice(
            socket,
            stream,
            Some(slot.client.clone()).filter(|client| client.paced()),
            &[&counters.moved],
        )
        .await
        {
            tracing::debug!(client = %peer.short(), %error, "exit: connection ended early");
        }
        drop(slot);
    }

    /// Resolves (if a name), checks, and connects.
    async fn connect(&self, request: &Request) -> Result<TcpStream, Failure> {
        let port = request.port;
        let candidates: Vec<SocketAddr> = match &request.destination {
            Destination::Address(address) => vec![SocketAddr::new(*address, port)],
            Destination::Host(name) => {
                match tokio::time::timeout(
                    RESOLVE_TIMEOUT,
                    tokio::net::lookup_host((name.as_str(), port)),
                )
                .await
                {
                    Ok(Ok(addresses)) => addresses.collect(),
                    Ok(Err(error)) => {
                        return Err(Failure(
                            Status::NoSuchHost,
                            format!("{name} does not resolve at the exit: {error}"),
                        ));
                    }
                    Err(_) => {
                        return Err(Failure(
                            Status::NoSuchHost,
                            format!("{name} did not resolve within {RESOLVE_TIMEOUT:?}"),
                        ));
                    }
                }
            }
        };
        let policy = self.policy();
        let mut refusal = None;
        let allowed: Vec<SocketAddr> = candidates
            .into_iter()
            .filter(|address| match policy.check(*address) {
                Ok(()) => true,
                Err(why) => {
                    refusal.get_or_insert(why);
                    false
                }
            })
            .take(ADDRESSES_TRIED_MAX)
            .collect();
        if allowed.is_empty() {
            return Err(match refusal {
                Some(why) => Failure(Status::Refused, why.to_string()),
                None => Failure(Status::NoSuchHost, "the name has no addresses".to_owned()),
            });
        }
        let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
        let mut last = Failure(Status::Unreachable, "no address answered".to_owned());
        for (index, address) in allowed.iter().enumerate() {
            // Each address gets an equal share of what time is left.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let share = left / u32::try_from(allowed.len() - index).unwrap_or(1);
            match tokio::time::timeout(share, TcpStream::connect(address)).await {
                Ok(Ok(socket)) => {
                    let _ = socket.set_nodelay(true);
                    return Ok(socket);
                }
                Ok(Err(error)) if error.kind() == ErrorKind::ConnectionRefused => {
                    last = Failure(
                        Status::ConnectionRefused,
                        format!("{address} refused the connection"),
                    );
                }
                Ok(Err(error)) => {
                    last = Failure(Status::Unreachable, format!("{address}: {error}"));
                }
                Err(_) => {
                    last = Failure(
                        Status::Unreachable,
                        format!("{address} did not answer within {share:?}"),
                    );
                }
            }
        }
        Err(last)
    }
}

/// Reads a request from the stream's first bytes, putting back whatever
/// followed it. `Err(None)` when the stream ended or failed first.
async fn read_request(stream: &mut RouteStream) -> Result<Request, Option<DecodeError>> {
    read_head(stream, Request::decode)
        .await
        .map_err(|error| match error {
            HeadError::Malformed(error) => Some(error),
            HeadError::Stream(_) | HeadError::Ended => None,
        })
}

/// Tells the client why, and ends the stream.
async fn answer(stream: &mut RouteStream, status: Status, reason: &str) {
    let reply = Reply {
        status,
        reason: reason.to_owned(),
    };
    if stream.write_all(Bytes::from(reply.encode())).await.is_ok() && stream.finish().await.is_ok()
    {
        // Dropping a stream still open for reading resets it, which could
        // overtake the reply: wait (briefly) for the client to end it.
        let _ = tokio::time::timeout(ANSWER_LINGER, async {
            while let Some(Ok(_)) = stream.read().await {}
        })
        .await;
    }
}

impl Service for Exit {
    fn accept(&self, stream: RouteStream) -> BoxFuture<()> {
        Box::pin(self.clone().serve(stream))
    }

    fn datagram(&self, datagram: fogwire_route::Datagram) {
        self.inner.udp.datagram(datagram, || self.policy());
    }
}
