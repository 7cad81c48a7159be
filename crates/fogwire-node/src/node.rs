//! A running node: the links it accepts and dials, and the peers it keeps.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, UNIX_EPOCH};

use fogwire_identity::{Keypair, NodeId};
use fogwire_link::proto::{CloseCode, CloseReason, CloseSide, Config as LinkConfig, LinkIdentity};
use fogwire_link::{Direction, EstablishError, LinkHandle};
use fogwire_route::Routing;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backoff::{Backoff, jitter};
use crate::config::Config;
use crate::metrics::{CLOSED_TOTALS_MAX, Metrics, Totals};
use fogwire_link::PeerAddr;

/// Events a node reports to whoever listens (the demo, later protocols).
#[derive(Debug, Clone)]
pub enum NodeEvent {
    LinkUp { peer: NodeId, link: LinkHandle },
    LinkDown { peer: NodeId, reason: CloseReason },
}

/// Bound of the event queue of each subscriber; one that falls further
/// behind misses events (and is told so by `broadcast`).
const EVENT_QUEUE_LEN: usize = 1024;
/// A link that lived this long resets the reconnect backoff when it drops.
const STABLE_LINK: Duration = Duration::from_secs(10);
/// How long shutdown waits for links to say goodbye.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed accept (for instance out of file descriptors), so
/// the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Connections the kernel may hold for the accept loop. A burst larger than
/// this (a thousand peers redialing after an outage, or a SYN flood) would
/// otherwise overflow the queue, and with SYN cookies the dialers would
/// believe in connections the node never saw. The kernel caps it at
/// `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // Restarting must not wait for the old connections' TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub keypair: Arc<Keypair>,
    pub link_listen: SocketAddr,
    pub link: LinkConfig,
    pub max_links: usize,
    pub max_pending_handshakes: usize,
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    pub peers: Vec<PeerAddr>,
    /// Where routing keeps the graph and receipts; none: in memory only.
    pub routing_store: Option<std::path::PathBuf>,
    /// Addresses named in this node's adverts.
    pub advertise: Vec<String>,
    pub capacity_kbps: u32,
    /// Where the store lives; none: a temporary directory removed with the
    /// node (tests, the demo).
    pub store_dir: Option<std::path::PathBuf>,
    pub store: fogwire_store::Config,
    pub replication: fogwire_replicate::Config,
    /// Compute roles (worker, hub) and where they keep their records.
    pub compute: crate::compute::ComputeOptions,
    pub compute_dir: Option<std::path::PathBuf>,
    /// The ledger this node uses or runs, and where it keeps its log if
    /// it runs it (none: a temporary directory removed with the node).
    pub ledger: crate::LedgerOptions,
    pub ledger_path: Option<std::path::PathBuf>,
    /// The data directory the paths above are in, for reports.
    pub data_dir: Option<std::path::PathBuf>,
}

impl NodeOptions {
    /// Options for a node run from `config`.
    pub fn from_config(config: &Config, keypair: Arc<Keypair>) -> Self {
        let link = &config.link;
        Self {
            keypair: keypair.clone(),
            link_listen: link.listen,
            link: LinkConfig {
                handshake_timeout: link.handshake_timeout(),
                keepalive_interval: link.keepalive_interval(),
                idle_timeout: link.idle_timeout(),
                channels: [
                    fogwire_route::link_channels(),
                    fogwire_replicate::link_channels(),
                    fogwire_rpc::link_channels(),
                ]
                .concat(),
            },
            max_links: link.max_links,
            max_pending_handshakes: link.max_pending_handshakes,
            reconnect_initial: link.reconnect_initial(),
            reconnect_max: link.reconnect_max(),
            peers: config.peers.clone(),
            routing_store: None,
            advertise: config.route.advertise.clone(),
            capacity_kbps: config.route.capacity_kbps,
            store_dir: None,
            store: fogwire_store::Config {
                cache_bytes_max: config.store.cache_bytes_max,
                sync_on_add: config.store.sync_on_add,
            },
            replication: fogwire_replicate::Config {
                serve_bytes_per_sec_max: config.store.serve_bytes_per_sec_max,
                ..fogwire_replicate::Config::default()
            },
            compute: config.compute.options(),
            compute_dir: None,
            ledger: config.ledger.options(keypair.node_id()),
            ledger_path: None,
            data_dir: None,
        }
    }

    /// Defaults, listening on a free loopback port: for tests and the demo.
    pub fn local(keypair: Arc<Keypair>) -> Self {
        let mut config = Config::default();
        config.link.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::from_config(&config, keypair)
    }
}

/// Why a node operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    #[error("cannot listen for links on {addr}: {source}{hint}", hint = listen_hint(source))]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid link settings: {0}")]
    LinkConfig(#[from] fogwire_link::proto::ConfigError),
    #[error("cannot make the link key: {0}")]
    Identity(fogwire_link::proto::HandshakeError),
    #[error("cannot resolve `{address}`: {detail}")]
    Resolve { address: String, detail: String },
    #[error(transparent)]
    Establish(#[from] EstablishError),
    #[error("link to {peer} refused: {reason}")]
    Refused { peer: NodeId, reason: String },
    #[error("that is this node's own id")]
    SelfConnect,
    #[error("the node is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    RoutingStore(#[from] fogwire_route::store::StoreError),
    #[error(transparent)]
    Store(#[from] fogwire_store::StoreError),
    #[error("cannot make a temporary store directory: {0}")]
    TempStore(std::io::Error),
    #[error("ledger: {0}")]
    Ledger(String),
    #[error("compute: {0}")]
    Compute(String),
}

fn listen_hint(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => {
            " (another process, maybe another node, uses this port: set [link] listen to another)"
        }
        std::io::ErrorKind::PermissionDenied => " (ports below 1024 need privileges)",
        _ => "",
    }
}

#[derive(Debug, Clone)]
enum DialStatus {
    Connecting,
    Waiting {
        retry_at: Instant,
        last_error: String,
    },
    Linked,
}

#[derive(Debug)]
struct Wanted {
    addr: PeerAddr,
    status: DialStatus,
    stop: CancellationToken,
}

/// The node's mutable state, behind one lock held only briefly.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) links: HashMap<NodeId, LinkHandle>,
    wanted: HashMap<NodeId, Wanted>,
    pub(crate) closed_totals: HashMap<NodeId, Totals>,
    available_handshake_permits: Option<Arc<Semaphore>>,
}

impl State {
    pub(crate) fn pending_handshakes(&self, max: usize) -> usize {
        self.available_handshake_permits
            .as_ref()
            .map_or(0, |permits| max.saturating_sub(permits.available_permits()))
    }
}

pub(crate) struct Inner {
    identity: Arc<LinkIdentity>,
    link_config: Arc<LinkConfig>,
    local_addr: SocketAddr,
    started: Instant,
    max_links: usize,
    max_pending_handshakes: usize,
    reconnect_initial: Duration,
    reconnect_max: Duration,
    state: Arc<Mutex<State>>,
    handshake_permits: Arc<Semaphore>,
    events: broadcast::Sender<NodeEvent>,
    metrics: Metrics,
    routing: Routing,
    store: Arc<fogwire_store::Store>,
    replication: fogwire_replicate::Replication,
    rpc: fogwire_rpc::Rpc,
    compute: std::sync::OnceLock<crate::compute::Roles>,
    pub(crate) ledger: std::sync::OnceLock<crate::ledger::LedgerParts>,
    pub(crate) agent: std::sync::OnceLock<Arc<crate::agent::Agent>>,
    keypair: Arc<Keypair>,
    data_dir: Option<std::path::PathBuf>,
    /// Hold temporary store and ledger directories for as long as the
    /// node lives.
    _store_dir: Option<tempfile::TempDir>,
    _ledger_dir: Option<tempfile::TempDir>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
}

/// A running node. Cheap to clone; every clone is the same node.
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node_id", &self.node_id())
            .field("local_addr", &self.inner.local_addr)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Binds the link listener, starts accepting, and starts linking to the
    /// configured peers.
    pub async fn start(options: NodeOptions) -> Result<Self, NodeError> {
        options.link.validate()?;
        let identity =
            Arc::new(LinkIdentity::generate(options.keypair.clone()).map_err(NodeError::Identity)?);
        let listener = bind_listener(options.link_listen).map_err(|source| NodeError::Listen {
            addr: options.link_listen,
            source,
        })?;
        let local_addr = listener.local_addr().map_err(|source| NodeError::Listen {
            addr: options.link_listen,
            source,
        })?;
        let mut routing_options = fogwire_route::Options::new(identity.clone());
        routing_options.store_path = options.routing_store.clone();
        routing_options.capacity_kbps = options.capacity_kbps;
        // Without configured addresses, the listen address, unless it is a
        // wildcard (which tells others nothing).
        routing_options.addresses = if options.advertise.is_empty() {
            (!local_addr.ip().is_unspecified())
                .then(|| local_addr.to_string())
                .into_iter()
                .collect()
        } else {
            options.advertise.clone()
        };
        routing_options
            .services
            .push(fogwire_rpc::locator::advertised(
                fogwire_rpc::locator::LOCATOR,
            ));
        if options.compute.worker.is_some() {
            routing_options
                .services
                .push(fogwire_rpc::locator::advertised(fogwire_compute::WORKER));
            // What it has, for anyone reading the graph (`fogwire nodes`);
            // hubs ask `describe` for the details.
            routing_options
                .services
                .push(fogwire_compute::resources::advertised());
        }
        if options.compute.hub.is_some() {
            routing_options
                .services
                .push(fogwire_rpc::locator::advertised(fogwire_compute::HUB));
        }
        if let Some(hub) = &options.compute.hub
            && options.compute.charge
            && let Some(terms) = crate::agent::terms_advert(&hub.terms)
        {
            // A charging hub's terms travel in its signed adverts.
            routing_options.services.push(terms);
        }
        if options.ledger.serve.is_some() {
            routing_options
                .services
                .push(fogwire_rpc::locator::advertised(fogwire_ledger::LEDGER));
        }
        let (ledger_path, ledger_dir) = match &options.ledger_path {
            Some(path) => (path.clone(), None),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("fogwire-ledger-")
                    .tempdir()
                    .map_err(NodeError::TempStore)?;
                (dir.path().join("ledger.redb"), Some(dir))
            }
        };
        let routing = Routing::start(routing_options)?;
        let (store_path, store_dir) = match &options.store_dir {
            Some(path) => (path.clone(), None),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("fogwire-store-")
                    .tempdir()
                    .map_err(NodeError::TempStore)?;
                (dir.path().to_owned(), Some(dir))
            }
        };
        let store_config = options.store.clone();
        let store = tokio::task::spawn_blocking(move || {
            fogwire_store::Store::open(&store_path, store_config)
        })
        .await
        .map_err(|e| NodeError::TempStore(std::io::Error::other(e.to_string())))??;
        let store = Arc::new(store);
        let replication = fogwire_replicate::Replication::start(
            store.clone(),
            options.replication.clone(),
            routing.clone(),
        );
        let handshake_permits = Arc::new(Semaphore::new(options.max_pending_handshakes));
        let state = Arc::new(Mutex::new(State {
            available_handshake_permits: Some(handshake_permits.clone()),
            ..State::default()
        }));
        let (events, _) = broadcast::channel(EVENT_QUEUE_LEN);
        let node = Node {
            inner: Arc::new(Inner {
                identity,
                link_config: Arc::new(options.link),
                local_addr,
                started: Instant::now(),
                max_links: options.max_links,
                max_pending_handshakes: options.max_pending_handshakes,
                reconnect_initial: options.reconnect_initial,
                reconnect_max: options.reconnect_max,
                metrics: Metrics::new(state.clone(), options.max_pending_handshakes),
                routing: routing.clone(),
                store,
                replication,
                rpc: fogwire_rpc::Rpc::builder()
                    .local(options.keypair.node_id())
                    .routing(routing.clone())
                    .build(),
                compute: std::sync::OnceLock::new(),
                ledger: std::sync::OnceLock::new(),
                agent: std::sync::OnceLock::new(),
                keypair: options.keypair.clone(),
                data_dir: options.data_dir.clone(),
                _store_dir: store_dir,
                _ledger_dir: ledger_dir,
                state,
                handshake_permits,
                events,
                shutdown: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        };
        tracing::info!(
            node_id = %node.node_id(),
            listen = %local_addr,
            "node started"
        );
        node.inner.tasks.spawn(node.clone().accept_loop(listener));
        // The ledger first: a paid hub settles through it.
        match crate::ledger::start(&node, &options.ledger, &ledger_path) {
            Ok(parts) => {
                let _ = node.inner.ledger.set(parts);
            }
            Err(error) => {
                node.shutdown().await;
                return Err(error);
            }
        }
        let roles =
            crate::compute::start(&node, &options.compute, options.compute_dir.as_deref()).await;
        let roles = match roles {
            Ok(roles) => roles,
            Err(error) => {
                node.shutdown().await;
                return Err(error);
            }
        };
        let _ = node.inner.compute.set(roles);
        // Earning for forwarding and serving: receipts taken, handed over
        // and redeemed.
        let earnings = Arc::new(crate::earn::Earnings::default());
        node.rpc().serve(
            crate::earn::RECEIPTS,
            Arc::new(crate::earn::ReceiptsService {
                node: node.node_id(),
                earnings: earnings.clone(),
            }),
        );
        node.inner
            .tasks
            .spawn(crate::earn::run(Arc::downgrade(&node.inner), earnings));
        if let (Some(policy), Some(_)) = (&options.compute.agent, node.worker()) {
            let agent = Arc::new(crate::agent::Agent {
                policy: policy.clone(),
                hubs: Default::default(),
            });
            let _ = node.inner.agent.set(agent.clone());
            node.inner
                .tasks
                .spawn(crate::agent::run(Arc::downgrade(&node.inner), agent));
        }
        for peer in options.peers {
            node.want(peer);
        }
        Ok(node)
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.identity.node_id()
    }

    /// Where peers can dial this node.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// This node as a peer address other nodes can be configured with.
    pub fn peer_addr(&self) -> PeerAddr {
        PeerAddr {
            node_id: self.node_id(),
            address: self.inner.local_addr.to_string(),
        }
    }

    /// This node's store. Blocking: call it from a blocking thread.
    pub fn store(&self) -> &Arc<fogwire_store::Store> {
        &self.inner.store
    }

    /// This node's RPC: its services, and calls to its linked peers'.
    pub fn rpc(&self) -> &fogwire_rpc::Rpc {
        &self.inner.rpc
    }

    pub(crate) fn inner_keypair(&self) -> Arc<Keypair> {
        self.inner.keypair.clone()
    }

    /// This node's hub, if it is one.
    pub fn hub(&self) -> Option<&fogwire_compute::hub::Hub> {
        self.inner
            .compute
            .get()
            .and_then(|roles| roles.hub.as_ref())
    }

    /// This node's market, if it is a hub.
    pub fn market(&self) -> Option<&fogwire_compute::market::Market> {
        self.inner
            .compute
            .get()
            .and_then(|roles| roles.market.as_ref())
    }

    /// This node's worker, if it is one.
    pub fn worker(&self) -> Option<&fogwire_compute::worker::Worker> {
        self.inner
            .compute
            .get()
            .and_then(|roles| roles.worker.as_ref())
    }

    /// How compute reaches other nodes from this one.
    pub fn fabric(&self) -> Arc<dyn fogwire_compute::Fabric> {
        Arc::new(crate::compute::NodeFabric {
            inner: Arc::downgrade(&self.inner),
            id: self.node_id(),
            store: self.inner.store.clone(),
        })
    }

    /// This node's replication: fetching from peers, serving them, feeds.
    pub fn replication(&self) -> &fogwire_replicate::Replication {
        &self.inner.replication
    }

    /// This node's routing: the graph, routes, streams.
    pub fn routing(&self) -> &Routing {
        &self.inner.routing
    }

    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// Link events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.inner.events.subscribe()
    }

    /// The link to `peer`, if one is up.
    pub fn link(&self, peer: &NodeId) -> Option<LinkHandle> {
        self.lock().links.get(peer).cloned()
    }

    /// Every link up now.
    pub fn links(&self) -> Vec<LinkHandle> {
        self.lock().links.values().cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug; the state itself
        // stays consistent (every update is a single map operation), so
        // carry on with it rather than take the whole node down.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Links to `addr` now and keeps the link up (redialing with backoff)
    /// until [`Node::disconnect`]. Fails, and keeps nothing, if the first
    /// attempt fails.
    pub async fn connect(&self, addr: PeerAddr) -> Result<LinkHandle, NodeError> {
        if addr.node_id == self.node_id() {
            return Err(NodeError::SelfConnect);
        }
        let link = match self.link(&addr.node_id) {
            Some(link) => link,
            None => self.dial(&addr).await?,
        };
        self.want(addr);
        Ok(link)
    }

    /// Stops keeping `peer` linked and closes its link. Returns whether
    /// there was a link or a wanted peer.
    pub async fn disconnect(&self, peer: &NodeId) -> bool {
        let (wanted, link) = {
            let mut state = self.lock();
            (state.wanted.remove(peer), state.links.get(peer).cloned())
        };
        if let Some(wanted) = &wanted {
            wanted.stop.cancel();
        }
        if let Some(link) = &link {
            link.close(CloseCode::OPERATOR, "disconnected by the operator")
                .await;
        }
        wanted.is_some() || link.is_some()
    }

    /// Adds `addr` to the peers kept linked, with a task that redials it.
    fn want(&self, addr: PeerAddr) {
        if addr.node_id == self.node_id() {
            tracing::warn!(peer = %addr, "ignoring a configured peer with this node's own id");
            return;
        }
        let stop = self.inner.shutdown.child_token();
        {
            let mut state = self.lock();
            if let Some(existing) = state.wanted.get_mut(&addr.node_id) {
                existing.addr = addr;
                return;
            }
            let status = if state.links.contains_key(&addr.node_id) {
                DialStatus::Linked
            } else {
                DialStatus::Connecting
            };
            state.wanted.insert(
                addr.node_id,
                Wanted {
                    addr: addr.clone(),
                    status,
                    stop: stop.clone(),
                },
            );
        }
        self.inner
            .tasks
            .spawn(self.clone().keep_linked(addr.node_id, stop));
    }

    fn set_status(&self, peer: &NodeId, status: DialStatus) {
        if let Some(wanted) = self.lock().wanted.get_mut(peer) {
            wanted.status = status;
        }
    }

    /// Keeps a link to `peer` up until `stop`: waits while linked, redials
    /// with backoff when not.
    async fn keep_linked(self, peer: NodeId, stop: CancellationToken) {
        let mut backoff = Backoff::new(self.inner.reconnect_initial, self.inner.reconnect_max);
        let pause = |delay: Duration| {
            let stop = stop.clone();
            async move {
                tokio::select! {
                    () = tokio::time::sleep(delay) => true,
                    () = stop.cancelled() => false,
                }
            }
        };
        while !stop.is_cancelled() {
            if let Some(link) = self.link(&peer) {
                self.set_status(&peer, DialStatus::Linked);
                tokio::select! {
                    _ = link.closed() => {}
                    () = stop.cancelled() => return,
                }
                let lived = link.established_at().elapsed().unwrap_or_default();
                if lived >= STABLE_LINK {
                    // It worked for a while: redial at once, from the start.
                    backoff.reset();
                } else if !pause(backoff.next_delay(jitter())).await {
                    // A link that dies young (refused, replaced, flapping)
                    // must not make us hammer the peer.
                    return;
                }
                continue;
            }
            let Some(addr) = self.lock().wanted.get(&peer).map(|w| w.addr.clone()) else {
                return;
            };
            self.set_status(&peer, DialStatus::Connecting);
            let attempt = tokio::select! {
                result = self.dial(&addr) => result,
                () = stop.cancelled() => return,
            };
            match attempt {
                Ok(_) => {}
                Err(NodeError::ShuttingDown) => return,
                Err(error) => {
                    let delay = backoff.next_delay(jitter());
                    tracing::warn!(
                        peer = %peer.short(),
                        address = %addr.address,
                        "cannot link to peer: {error}; retrying in {:.1} s",
                        delay.as_secs_f64()
                    );
                    self.set_status(
                        &peer,
                        DialStatus::Waiting {
                            retry_at: Instant::now() + delay,
                            last_error: error.to_string(),
                        },
                    );
                    if !pause(delay).await {
                        return;
                    }
                }
            }
        }
    }

    /// Dials `addr` once: resolves it, connects, handshakes, registers.
    async fn dial(&self, addr: &PeerAddr) -> Result<LinkHandle, NodeError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(NodeError::ShuttingDown);
        }
        let resolved: Vec<SocketAddr> = tokio::time::timeout(
            self.inner.link_config.handshake_timeout,
            tokio::net::lookup_host(addr.address.as_str()),
        )
        .await
        .map_err(|_| NodeError::Resolve {
            address: addr.address.clone(),
            detail: "timed out".into(),
        })?
        .map_err(|error| NodeError::Resolve {
            address: addr.address.clone(),
            detail: error.to_string(),
        })?
        .collect();
        let mut last_error = None;
        for socket_addr in resolved {
            match fogwire_link::connect(
                socket_addr,
                addr.node_id,
                &self.inner.identity,
                self.inner.link_config.clone(),
            )
            .await
            {
                Ok(established) => {
                    self.inner.metrics.handshake("outbound", "ok");
                    return self.register(fogwire_link::spawn(established));
                }
                Err(error) => {
                    self.inner.metrics.handshake("outbound", error.reason());
                    last_error = Some(error);
                }
            }
        }
        Err(match last_error {
            Some(error) => error.into(),
            None => NodeError::Resolve {
                address: addr.address.clone(),
                detail: "no addresses".into(),
            },
        })
    }

    async fn accept_loop(self, listener: TcpListener) {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = self.inner.shutdown.cancelled() => return,
            };
            let (stream, remote) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!("cannot accept a connection: {error}; pausing briefly");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            let Ok(permit) = self.inner.handshake_permits.clone().try_acquire_owned() else {
                self.inner.metrics.handshake("inbound", "overloaded");
                tracing::info!(
                    remote = %remote,
                    "refused connection: {} handshakes already in progress \
                     (link.max_pending_handshakes)",
                    self.inner.max_pending_handshakes
                );
                drop(stream);
                continue;
            };
            let node = self.clone();
            self.inner.tasks.spawn(async move {
                let result = tokio::select! {
                    result = fogwire_link::establish(
                        stream,
                        remote,
                        &node.inner.identity,
                        node.inner.link_config.clone(),
                    ) => result,
                    () = node.inner.shutdown.cancelled() => return,
                };
                drop(permit);
                match result {
                    Ok(established) => {
                        node.inner.metrics.handshake("inbound", "ok");
                        let _ = node.register(fogwire_link::spawn(established));
                    }
                    Err(error) => {
                        node.inner.metrics.handshake("inbound", error.reason());
                        tracing::info!(
                            remote = %remote,
                            reason = error.reason(),
                            "inbound connection closed: {error}"
                        );
                    }
                }
            });
        }
    }

    /// Adds a freshly established link, or closes it if a better link to
    /// the same peer exists or the node is full. Returns the link that
    /// serves the peer.
    fn register(&self, link: LinkHandle) -> Result<LinkHandle, NodeError> {
        let peer = link.peer();
        let local = self.node_id();
        let initiator = |link: &LinkHandle| match link.direction() {
            Direction::Outbound => local,
            Direction::Inbound => link.peer(),
        };
        let mut replaced = None;
        {
            let mut state = self.lock();
            if self.inner.shutdown.is_cancelled() {
                drop(state);
                self.close_in_background(&link, CloseCode::SHUTDOWN, "node shutting down");
                return Err(NodeError::ShuttingDown);
            }
            match state.links.get(&peer) {
                Some(existing) if !existing.is_closed() => {
                    // Both ends apply the same rule, so they keep the same
                    // link: a redial in the same direction replaces the old
                    // link (its owner evidently lost it); between opposite
                    // directions, the link dialed by the smaller id wins.
                    let keep_new = link.direction() == existing.direction()
                        || initiator(&link) == local.min(peer);
                    if !keep_new {
                        let existing = existing.clone();
                        drop(state);
                        self.close_in_background(
                            &link,
                            CloseCode::DUPLICATE,
                            "a link to this node already exists",
                        );
                        return Ok(existing);
                    }
                    replaced = Some(existing.clone());
                }
                Some(_) => {}
                None if state.links.len() >= self.inner.max_links => {
                    drop(state);
                    self.close_in_background(
                        &link,
                        CloseCode::LIMIT,
                        "the node has no room for another link",
                    );
                    return Err(NodeError::Refused {
                        peer,
                        reason: format!("link.max_links ({}) reached", self.inner.max_links),
                    });
                }
                None => {}
            }
            state.links.insert(peer, link.clone());
            if let Some(wanted) = state.wanted.get_mut(&peer) {
                wanted.status = DialStatus::Linked;
            }
        }
        if let Some(old) = replaced {
            self.close_in_background(&old, CloseCode::DUPLICATE, "replaced by a newer link");
        }
        tracing::info!(
            peer = %peer,
            addr = %link.remote_addr(),
            direction = link.direction().as_str(),
            "link up"
        );
        self.inner.routing.link_up(link.clone());
        self.inner.replication.link_up(link.clone());
        self.inner.rpc.link_up(link.clone());
        let _ = self.inner.events.send(NodeEvent::LinkUp {
            peer,
            link: link.clone(),
        });
        self.inner.tasks.spawn(self.clone().watch(link.clone()));
        Ok(link)
    }

    fn close_in_background(&self, link: &LinkHandle, code: CloseCode, message: &'static str) {
        let link = link.clone();
        self.inner.tasks.spawn(async move {
            link.close(code, message).await;
        });
    }

    /// Waits for `link` to close, then forgets it and reports why.
    async fn watch(self, link: LinkHandle) {
        let reason = link.closed().await;
        let peer = link.peer();
        self.inner.routing.link_down(peer, link.id());
        self.inner.replication.link_down(peer, link.id());
        self.inner.rpc.link_down(peer, link.id());
        {
            let mut state = self.lock();
            if state
                .links
                .get(&peer)
                .is_some_and(|current| current.id() == link.id())
            {
                state.links.remove(&peer);
            }
            if state.closed_totals.len() >= CLOSED_TOTALS_MAX
                && !state.closed_totals.contains_key(&peer)
                && let Some(forget) = state.closed_totals.keys().next().copied()
            {
                state.closed_totals.remove(&forget);
            }
            state
                .closed_totals
                .entry(peer)
                .or_default()
                .add(&link.snapshot());
        }
        let side = match reason.side {
            CloseSide::Local => "local",
            CloseSide::Remote => "remote",
            CloseSide::Transport => "transport",
        };
        self.inner.metrics.link_closed(side, reason.code.name());
        let _ = self.inner.events.send(NodeEvent::LinkDown { peer, reason });
    }

    /// Closes every link with a reason, stops every task, and returns once
    /// the links have said goodbye (or a few seconds have passed).
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        if let Some(roles) = self.inner.compute.get() {
            roles.shutdown().await;
        }
        // Routes first, while their links still carry the teardowns.
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, self.inner.routing.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("routing did not stop in time");
        }
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, self.inner.replication.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("replication did not stop in time");
        }
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, self.inner.rpc.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("RPC did not stop in time");
        }
        let links = self.links();
        tracing::info!(links = links.len(), "shutting down: closing links");
        // Close them all at once: a peer that stopped reading must not hold
        // up the goodbyes to the others.
        let mut closing = tokio::task::JoinSet::new();
        for link in links {
            closing
                .spawn(async move { link.close(CloseCode::SHUTDOWN, "node shutting down").await });
        }
        let all_closed = async { while closing.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, all_closed)
            .await
            .is_err()
        {
            tracing::warn!("some links did not close in time; dropping them");
        }
        self.inner.tasks.close();
        let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, self.inner.tasks.wait()).await;
    }

    // ----- reports -----

    pub fn status(&self) -> fogwire_api::Status {
        let state = self.lock();
        fogwire_api::Status {
            node_id: self.node_id().to_string(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            link_listen: self.inner.local_addr,
            uptime_secs: self.uptime().as_secs(),
            links: state.links.len(),
            peers_wanted: state.wanted.len(),
            pending_handshakes: state.pending_handshakes(self.inner.max_pending_handshakes),
            data_dir: self
                .inner
                .data_dir
                .as_ref()
                .map(|dir| dir.display().to_string()),
        }
    }

    /// Every linked or wanted peer, sorted by id.
    pub fn peers(&self) -> Vec<fogwire_api::Peer> {
        let state = self.lock();
        let now = Instant::now();
        let mut ids: Vec<NodeId> = state
            .links
            .keys()
            .chain(state.wanted.keys())
            .copied()
            .collect();
        ids.sort();
        ids.dedup();
        ids.into_iter()
            .map(|id| {
                let link = state.links.get(&id);
                let wanted = state.wanted.get(&id);
                let snapshot = link.map(LinkHandle::snapshot).unwrap_or_default();
                let (state, last_error, retry_in_ms) = match (link, wanted.map(|w| &w.status)) {
                    (Some(_), _) => (fogwire_api::PeerState::Linked, None, None),
                    (
                        None,
                        Some(DialStatus::Waiting {
                            retry_at,
                            last_error,
                        }),
                    ) => (
                        fogwire_api::PeerState::Waiting,
                        Some(last_error.clone()),
                        Some(retry_at.saturating_duration_since(now).as_millis() as u64),
                    ),
                    (None, _) => (fogwire_api::PeerState::Connecting, None, None),
                };
                fogwire_api::Peer {
                    node_id: id.to_string(),
                    state,
                    address: link
                        .map(|l| l.remote_addr().to_string())
                        .or_else(|| wanted.map(|w| w.addr.address.clone())),
                    direction: link.map(|l| l.direction().as_str().to_owned()),
                    wanted: wanted.is_some(),
                    linked_since_unix: link.and_then(|l| {
                        l.established_at()
                            .duration_since(UNIX_EPOCH)
                            .ok()
                            .map(|d| d.as_secs())
                    }),
                    rtt_ms: snapshot.rtt.map(|rtt| rtt.as_secs_f64() * 1000.0),
                    bytes_in: snapshot.bytes_in,
                    bytes_out: snapshot.bytes_out,
                    frames_in: snapshot.records_in,
                    frames_out: snapshot.records_out,
                    messages_in: snapshot.messages_in,
                    messages_out: snapshot.messages_out,
                    last_error,
                    retry_in_ms,
                }
            })
            .collect()
    }

    /// The node's metrics in the OpenMetrics text format.
    pub fn metrics_text(&self) -> String {
        self.inner.metrics.encode()
    }
}
