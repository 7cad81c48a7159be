//! The tokio driver of fogwire routing.
//!
//! [`Routing`] runs one router task per node (see `actor`): it floods
//! link-state adverts over the node's links, keeps the network graph (on
//! disk too, see [`store`]), opens routes by computing paths at the
//! source, moves broken routes to new paths, forwards other nodes' routes,
//! and carries [`RouteStream`]s, datagrams and pings over routes. Incoming
//! streams name a service in their first bytes; [`Routing::serve`] takes a
//! service's streams, and `echo` and `sink` are built in.
//!
//! Architecture invariant: no protocol logic here. Route setup, forwarding,
//! sessions, streams, adverts and paths are decided in
//! `fogwire-route-proto`; this crate reads the clock, moves bytes between
//! links and the core, and writes the store.

mod actor;
pub mod services;
pub mod store;
mod stream;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fogwire_identity::NodeId;
use fogwire_link::LinkHandle;
use fogwire_link::proto::{ChannelConfig, ChannelId, LinkIdentity};
use fogwire_route_proto::advert::Advert;
use fogwire_route_proto::path::{HOPS_MAX, Path, PathError, Query};
use fogwire_route_proto::router::{
    self, Counters, OpenError, RouteEnd, RouteId, RouteInfo, RuleInfo, SendError, SessionId,
    SetupError,
};
use tokio::sync::{mpsc, oneshot};

pub use actor::describe_path;
use actor::{Actor, Command, INBOX_LEN, Input};
pub use fogwire_route_proto as proto;
pub use services::{Datagram, Datagrams, Limits, Service, ServiceError, Spec};
pub use stream::{RouteStream, RouteStreamReader, RouteStreamWriter};

/// Link channel of adverts (beside the router's control and data
/// channels), so that a flood of adverts never delays a route setup.
pub const CHANNEL_ADVERT: u16 = 0x0102;

/// The link channels routing uses, for the node's link configuration.
pub fn link_channels() -> Vec<ChannelConfig> {
    vec![
        // Setups come in bursts (a node opening many routes at once).
        ChannelConfig::new(ChannelId(router::CHANNEL_CONTROL))
            .with_send_queue_bytes_max(4 * 1024 * 1024),
        // Data gets deep queues: a stream's whole window may be in flight
        // on one link, and a full queue drops packets.
        // Its packets' bodies are session packets, sealed and checked end
        // to end, so they cross links as sealed bodies (link.md §4).
        ChannelConfig::new(ChannelId(router::CHANNEL_DATA))
            .with_receive_window(8 * 1024 * 1024)
            .with_send_queue_bytes_max(8 * 1024 * 1024)
            .with_sealed_bodies(),
        ChannelConfig::new(ChannelId(CHANNEL_ADVERT))
            .with_receive_window(1024 * 1024)
            .with_send_queue_bytes_max(4 * 1024 * 1024),
    ]
}

/// Incoming streams queued for the service dispatcher.
const INCOMING_LEN: usize = 256;
/// Services this node offers by default.
pub const BUILTIN_SERVICES: [&str; 3] = [services::ECHO, services::SINK, services::DISCARD];

/// Everything routing needs to start.
#[derive(Debug, Clone)]
pub struct Options {
    pub identity: Arc<LinkIdentity>,
    /// The redb file for the graph and receipts; none keeps them in memory.
    pub store_path: Option<PathBuf>,
    /// Addresses (`host:port`) other nodes may dial this node at.
    pub addresses: Vec<String>,
    /// Services named in this node's advert.
    pub services: Vec<String>,
    /// Paid services offered in this node's advert (an exit, say).
    pub offers: Vec<fogwire_route_proto::advert::Offer>,
    /// Capacity offered to others' traffic on each link.
    pub capacity_kbps: u32,
    /// How long this node's adverts stay valid; they are refreshed at a
    /// third of it.
    pub advert_lifetime: Duration,
    pub router: router::Config,
}

impl Options {
    pub fn new(identity: Arc<LinkIdentity>) -> Self {
        Self {
            identity,
            store_path: None,
            addresses: Vec::new(),
            services: BUILTIN_SERVICES.iter().map(|s| (*s).to_owned()).collect(),
            offers: Vec::new(),
            capacity_kbps: 1_000_000,
            advert_lifetime: Duration::from_secs(600),
            router: router::Config::default(),
        }
    }
}

/// What a path must respect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraints {
    pub min_hops: usize,
    pub max_hops: usize,
    pub avoid: Vec<NodeId>,
    /// The node the path must reach the destination from.
    pub exit: Option<NodeId>,
}

impl Default for Constraints {
    fn default() -> Self {
        Self {
            min_hops: 1,
            max_hops: HOPS_MAX,
            avoid: Vec::new(),
            exit: None,
        }
    }
}

impl Constraints {
    /// Exactly `hops` links.
    pub fn hops(hops: usize) -> Self {
        Self {
            min_hops: hops,
            max_hops: hops,
            ..Self::default()
        }
    }

    pub(crate) fn query(&self, source: NodeId, destination: NodeId) -> Query {
        Query {
            min_hops: self.min_hops,
            max_hops: self.max_hops,
            avoid: self.avoid.clone(),
            last_hop: self.exit,
            ..Query::new(source, destination)
        }
    }
}

/// Why a routing operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    #[error("{0}")]
    NoPath(#[from] PathError),
    #[error("no route found")]
    NoRoute,
    #[error("{0} has not advertised itself (see `fogwire nodes`)")]
    Unknown(NodeId),
    #[error("route setup failed: {0}")]
    Setup(SetupError),
    #[error("cannot open the route: {0}")]
    Open(OpenError),
    #[error("{0}")]
    Send(SendError),
    #[error("no such route")]
    UnknownRoute,
    #[error("the route is not up yet")]
    NotUp,
    #[error("too many pings in flight")]
    Busy,
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("the route is gone: {0}")]
    Down(RouteEnd),
    #[error("stream: {0}")]
    Stream(#[from] router::stream::StreamError),
    #[error("routing has stopped")]
    Stopped,
}

/// A node of the known graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub advert: Advert,
    pub this_node: bool,
    /// Linked to this node directly.
    pub neighbour: bool,
}

/// A route that came up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub route: RouteId,
    /// Hops after this node; the last is the destination.
    pub path: Vec<NodeId>,
    pub setup_time: Duration,
    /// The path's advertised one-way latency.
    pub latency_us: u64,
}

/// Counters of a node's routing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingStats {
    pub adverts_sent: u64,
    pub adverts_accepted: u64,
    pub adverts_refused: u64,
    pub adverts_dropped: u64,
    pub data_dropped: u64,
    pub control_dropped: u64,
    pub routes_broken: u64,
    pub routes_repaired: u64,
    /// Routes moved onto a shorter path that appeared (also counted as
    /// repaired: the session resumed there).
    pub routes_moved: u64,
    pub receipts_received: u64,
    pub receipts_stored: u64,
    /// Datagrams that came for a port no service holds, or whose
    /// service's queue was full.
    pub datagrams_dropped: u64,
    /// Session packets that failed to open at this end (altered on the
    /// way, or replayed) and were dropped.
    pub session_packets_rejected: u64,
}

/// Routes this node opened, routes it relays, and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub routes: Vec<RouteInfo>,
    pub transit: Vec<RuleInfo>,
    pub stats: RoutingStats,
}

impl Listing {
    /// Everything this node relayed for others, in total.
    pub fn transit_total(&self) -> Counters {
        let mut total = Counters::default();
        for rule in &self.transit {
            total.packets_forward += rule.counters.packets_forward;
            total.bytes_forward += rule.counters.bytes_forward;
            total.packets_backward += rule.counters.packets_backward;
            total.bytes_backward += rule.counters.bytes_backward;
        }
        total
    }
}

/// A node's routing. Cheap to clone; every clone is the same task.
#[derive(Clone)]
pub struct Routing {
    node_id: NodeId,
    inputs: mpsc::Sender<Input>,
    services: services::Services,
    direct_wanted: tokio::sync::watch::Receiver<Vec<NodeId>>,
}

/// Where a datagram goes: over a route this node opened, or back on a
/// session another node opened to this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Route(RouteId),
    Session(SessionId),
}

impl std::fmt::Debug for Routing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routing")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Routing {
    /// Opens the store (if any), restores the graph from it, and starts
    /// the router task with the built-in services.
    pub fn start(options: Options) -> Result<Routing, store::StoreError> {
        let (store, loaded) = match &options.store_path {
            Some(path) => {
                let store = store::Store::open(path)?;
                let loaded = store.load()?;
                (Some(Arc::new(store)), loaded)
            }
            None => (None, store::Loaded::default()),
        };
        let node_id = options.identity.node_id();
        let (inputs, inbox) = mpsc::channel(INBOX_LEN);
        let (incoming, incoming_queue) = mpsc::channel(INCOMING_LEN);
        let services = services::Services::default();
        let (direct_sender, direct_wanted) = tokio::sync::watch::channel(Vec::new());
        let actor = Actor::new(
            options,
            inputs.clone(),
            incoming,
            services.clone(),
            store,
            loaded.adverts,
            loaded.seq,
            loaded.receipts,
            direct_sender,
        );
        tokio::spawn(actor.run(inbox));
        let routing = Routing {
            node_id,
            inputs,
            services,
            direct_wanted,
        };
        tokio::spawn(services::dispatch(incoming_queue, routing.services.clone()));
        for (spec, service) in services::builtin() {
            // Their names are valid and they take no datagrams.
            let _ = routing.accept(spec, service);
        }
        Ok(routing)
    }

    /// The destinations of this node's routes that run over relays and
    /// would take a direct link (`repair::Sources::direct_wanted`),
    /// updated each second.
    pub fn direct_wanted(&self) -> tokio::sync::watch::Receiver<Vec<NodeId>> {
        self.direct_wanted.clone()
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// A link came up: routing uses it (if the peer routes too).
    pub fn link_up(&self, link: LinkHandle) {
        self.post(Input::LinkUp(link));
    }

    /// The link `link` (an id from [`LinkHandle::id`]) to `peer` is gone.
    pub fn link_down(&self, peer: NodeId, link: u64) {
        self.post(Input::LinkDown { peer, link });
    }

    fn post(&self, input: Input) {
        if let Err(mpsc::error::TrySendError::Full(input)) = self.inputs.try_send(input) {
            let inputs = self.inputs.clone();
            tokio::spawn(async move {
                let _ = inputs.send(input).await;
            });
        }
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, RouteError> {
        let (reply, answer) = oneshot::channel();
        self.inputs
            .send(Input::Command(make(reply)))
            .await
            .map_err(|_| RouteError::Stopped)?;
        answer.await.map_err(|_| RouteError::Stopped)
    }

    /// The known graph: every node with a valid advert, this node first,
    /// then its neighbours.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, RouteError> {
        self.ask(Command::Nodes).await
    }

    /// The nodes (this one too) whose advert lists `service`: their ids
    /// only, cheaper than [`Routing::nodes`] in a large network.
    pub async fn serving(&self, service: &str) -> Result<Vec<NodeId>, RouteError> {
        let service = service.to_owned();
        self.ask(|reply| Command::Serving { service, reply }).await
    }

    /// The relay receipts (wire form, signed by each route's source) this
    /// node received since the last call: the latest of each route, for
    /// the node to redeem in the ledger.
    pub async fn take_receipts(&self) -> Result<Vec<Vec<u8>>, RouteError> {
        self.ask(Command::TakeReceipts).await
    }

    /// Paths to `destination` (up to `alternatives`, node-disjoint).
    pub async fn find(
        &self,
        destination: NodeId,
        constraints: Constraints,
        alternatives: usize,
    ) -> Result<Vec<Path>, RouteError> {
        self.ask(|reply| Command::Find {
            destination,
            constraints,
            alternatives,
            reply,
        })
        .await?
    }

    /// Opens a route to `destination` and waits until it is up. It stays
    /// up (repaired when it breaks) until [`Routing::close`].
    pub async fn open(
        &self,
        destination: NodeId,
        constraints: Constraints,
    ) -> Result<Opened, RouteError> {
        self.ask(|reply| Command::Open {
            destination,
            constraints,
            reply,
        })
        .await?
    }

    /// Closes a route this node opened; false if there was none.
    pub async fn close(&self, route: RouteId) -> Result<bool, RouteError> {
        self.ask(|reply| Command::Close { route, reply }).await
    }

    pub async fn routes(&self) -> Result<Listing, RouteError> {
        self.ask(Command::Routes).await
    }

    /// One end-to-end ping over a route; its round-trip time.
    pub async fn ping(&self, route: RouteId, timeout: Duration) -> Result<Duration, RouteError> {
        let (reply, answer) = oneshot::channel();
        self.inputs
            .send(Input::Command(Command::Ping { route, reply }))
            .await
            .map_err(|_| RouteError::Stopped)?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(RouteError::Stopped),
            Err(_) => Err(RouteError::Timeout(timeout)),
        }
    }

    /// Sends a datagram over a route this node opened to the service on
    /// `port` at its destination (unreliable, unordered).
    pub async fn send_datagram(
        &self,
        route: RouteId,
        port: u16,
        data: Bytes,
    ) -> Result<(), RouteError> {
        self.datagram(Via::Route(route), port, data).await
    }

    /// Answers a datagram: sends one back on the session it came on.
    pub async fn reply_datagram(
        &self,
        session: SessionId,
        port: u16,
        data: Bytes,
    ) -> Result<(), RouteError> {
        self.datagram(Via::Session(session), port, data).await
    }

    async fn datagram(&self, via: Via, port: u16, data: Bytes) -> Result<(), RouteError> {
        self.ask(|reply| Command::Datagram {
            via,
            port,
            data,
            reply,
        })
        .await?
    }

    /// Opens a raw stream on a route.
    pub async fn open_stream(&self, route: RouteId) -> Result<RouteStream, RouteError> {
        self.ask(|reply| Command::OpenStream { route, reply })
            .await?
    }

    /// Opens a stream on a route to `service` at its destination.
    pub async fn connect(&self, route: RouteId, service: &str) -> Result<RouteStream, RouteError> {
        let mut stream = self.open_stream(route).await?;
        stream.write_all(services::header(service)?).await?;
        Ok(stream)
    }

    /// Offers `service` on this node by `spec`: streams opened to its
    /// name, and datagrams to its port (replacing whoever served that
    /// name).
    pub fn accept(&self, spec: Spec, service: Arc<dyn Service>) -> Result<(), ServiceError> {
        services::offer(&self.services, spec, service)
    }

    /// Stops offering the service `name`; whether it was offered.
    pub fn withdraw(&self, name: &str) -> bool {
        services::withdraw(&self.services, name)
    }

    /// Sets what `owner` (a service started at run time) adds to this
    /// node's advert — services and offers — and floods the new advert
    /// soon; empty lists take its part out again.
    pub async fn advertise(
        &self,
        owner: &str,
        services: Vec<String>,
        offers: Vec<fogwire_route_proto::advert::Offer>,
    ) -> Result<(), RouteError> {
        let owner = owner.to_owned();
        self.ask(|reply| Command::Advertise {
            owner,
            services,
            offers,
            reply,
        })
        .await
    }

    /// Sets the addresses this node's advert names (at most 8; what
    /// reachability checks found others can dial) and floods the new
    /// advert soon.
    pub async fn set_addresses(&self, addresses: Vec<String>) -> Result<(), RouteError> {
        self.ask(|reply| Command::SetAddresses { addresses, reply })
            .await
    }

    /// Closes this node's routes, writes the store, and stops the task.
    pub async fn shutdown(&self) {
        let _ = self.ask(Command::Shutdown).await;
        // Services often hold a way back to routing; dropping them breaks
        // that cycle, so a stopped node's files and sockets are released.
        services::clear(&self.services);
    }
}

impl fogwire_link::LinkUser for Routing {
    fn link_up(&self, link: LinkHandle) {
        Routing::link_up(self, link);
    }

    fn link_down(&self, peer: NodeId, link_id: u64) {
        Routing::link_down(self, peer, link_id);
    }
}
