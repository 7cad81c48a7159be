//! A running node: the composition root. [`Node::start`] builds every
//! subsystem in order, hands each what it needs, and keeps handles on
//! them; nothing here decides anything about a protocol.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fogwire_account::agent::Agent;
use fogwire_account::earn::Earner;
use fogwire_account::ledger::Ledger;
use fogwire_compute::roles::Roles;
use fogwire_identity::{Keypair, NodeId};
use fogwire_link::proto::{Config as LinkConfig, LinkIdentity};
use fogwire_link::slots::SlotPolicy;
use fogwire_link::{LinkHandle, LinkUser, PeerAddr};
use fogwire_replicate::Replication;
use fogwire_route::{Routing, Service, Spec};
use fogwire_rpc::Rpc;
use fogwire_store::Store;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::fabric::NodeFabric;
use crate::links::{LinkError, LinkLimits, Links, NodeEvent, SHUTDOWN_TIMEOUT};

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub keypair: Arc<Keypair>,
    pub link_listen: SocketAddr,
    /// Also accept and dial links over QUIC (UDP), on the listen port's
    /// number: what hole punching through NATs needs.
    pub link_udp: bool,
    pub link: LinkConfig,
    pub limits: LinkLimits,
    pub peers: Vec<PeerAddr>,
    /// Where routing keeps the graph and receipts; none: in memory only.
    pub routing_store: Option<PathBuf>,
    /// Addresses named in this node's adverts.
    pub advertise: Vec<String>,
    pub capacity_kbps: u32,
    /// Where the store lives; none: a temporary directory removed with the
    /// node (tests, the demo).
    pub store_dir: Option<PathBuf>,
    pub store: fogwire_store::Config,
    pub replication: fogwire_replicate::Config,
    /// Compute roles (worker, hub) and where they keep their records.
    pub compute: fogwire_compute::roles::ComputeOptions,
    pub compute_dir: Option<PathBuf>,
    /// The ledger this node uses or runs, and where it keeps its log if
    /// it runs it (none: a temporary directory removed with the node).
    pub ledger: fogwire_account::ledger::LedgerOptions,
    pub ledger_path: Option<PathBuf>,
    /// The data directory the paths above are in, for reports.
    pub data_dir: Option<PathBuf>,
    /// Serve as an exit; offer a SOCKS proxy through one.
    pub exit: Option<fogwire_exit::ExitConfig>,
    pub socks: Option<fogwire_exit::ProxyConfig>,
    pub cluster: fogwire_cluster::config::ClusterSection,
    pub mailboxes: fogwire_msg::Mailboxes,
    /// Serving as a relay, and using relays while peers cannot dial this.
    pub relay: fogwire_relay::RelaySection,
}

impl NodeOptions {
    /// Options for a node run from `config`.
    pub fn from_config(config: &Config, keypair: Arc<Keypair>) -> Self {
        let link = &config.link;
        Self {
            keypair: keypair.clone(),
            link_listen: link.listen,
            link_udp: link.udp,
            link: LinkConfig {
                handshake_timeout: Duration::from_millis(link.handshake_timeout_ms),
                keepalive_interval: Duration::from_millis(link.keepalive_interval_ms),
                idle_timeout: Duration::from_millis(link.idle_timeout_ms),
                channels: [
                    fogwire_route::link_channels(),
                    fogwire_replicate::link_channels(),
                    fogwire_rpc::link_channels(),
                    fogwire_cluster::link_channels(),
                    fogwire_relay::link_channels(),
                ]
                .concat(),
            },
            limits: LinkLimits {
                slots: SlotPolicy {
                    max_links: link.max_links,
                    per_address: link.max_links_per_address,
                    grace: Duration::from_millis(link.silent_link_grace_ms),
                },
                max_pending_handshakes: link.max_pending_handshakes,
                handshakes_per_address: link.max_handshakes_per_address,
                reconnect_initial: Duration::from_millis(link.reconnect_initial_ms),
                reconnect_max: Duration::from_millis(link.reconnect_max_ms),
            },
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
                provide: config.store.provide,
                keep_provider_records: config.store.keep_provider_records,
                ..fogwire_replicate::Config::default()
            },
            compute: config.compute.options(),
            compute_dir: None,
            ledger: config.ledger.options(keypair.node_id()),
            ledger_path: None,
            data_dir: None,
            exit: config.exit.config(),
            socks: config.socks.config(),
            cluster: config.cluster.clone(),
            mailboxes: config.msg.mailboxes(),
            relay: config.relay.clone(),
        }
    }

    /// Defaults, listening on a free loopback port: for tests and the demo.
    pub fn local(keypair: Arc<Keypair>) -> Self {
        let mut config = Config::default();
        config.link.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::from_config(&config, keypair)
    }
}

/// Why a node could not start, or an operation on it failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    #[error("cannot listen for links on {addr}: {source}{hint}", hint = fogwire_link::listen_hint(source))]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} (set [link] udp = false to link over TCP only)")]
    Quic(#[from] fogwire_link::quic::QuicSetupError),
    #[error("invalid link settings: {0}")]
    LinkConfig(#[from] fogwire_link::proto::ConfigError),
    #[error("cannot make the link key: {0}")]
    Identity(fogwire_link::proto::HandshakeError),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    RoutingStore(#[from] fogwire_route::store::StoreError),
    #[error(transparent)]
    Store(#[from] fogwire_store::StoreError),
    #[error("cannot make a temporary directory: {0}")]
    TempDir(std::io::Error),
    #[error("ledger: {0}")]
    Ledger(#[from] fogwire_ledger::service::OpenError),
    #[error("compute: {0}")]
    Compute(#[from] fogwire_compute::roles::RolesError),
    #[error("cannot offer a service: {0}")]
    Service(#[from] fogwire_route::ServiceError),
    #[error(transparent)]
    PeerBook(#[from] fogwire_link::book::BookError),
    #[error(transparent)]
    Socks(#[from] fogwire_exit::ProxyError),
    #[error("[exit] vpn: {0}")]
    Vpn(#[from] fogwire_vpn::VpnError),
    #[error("messenger: {0}")]
    Messenger(#[from] fogwire_msg::MsgError),
    #[error("cluster: {0}")]
    Cluster(#[from] fogwire_cluster::ClusterError),
}

/// `path`, or `name` in a new temporary directory (kept alive by the
/// returned guard) when none is given: tests and the demo.
fn path_or_temp(
    path: &Option<PathBuf>,
    prefix: &str,
    name: &str,
) -> Result<(PathBuf, Option<tempfile::TempDir>), NodeError> {
    match path {
        Some(path) => Ok((path.clone(), None)),
        None => {
            let dir = tempfile::Builder::new()
                .prefix(prefix)
                .tempdir()
                .map_err(NodeError::TempDir)?;
            Ok((dir.path().join(name), Some(dir)))
        }
    }
}

/// The subsystems of a running node, each built before the node and
/// handed what it needs; none holds the node.
struct Subsystems {
    keypair: Arc<Keypair>,
    links: Links,
    routing: Routing,
    store: Arc<Store>,
    replication: Replication,
    rpc: Rpc,
    fabric: NodeFabric,
    ledger: Ledger,
    compute: Roles,
    agent: Option<Arc<Agent>>,
    exit: Option<fogwire_exit::Exit>,
    proxy: Option<fogwire_exit::Proxy>,
    outbound: Arc<fogwire_exit::Outbound>,
    vpn: fogwire_vpn::Switch,
    messenger: fogwire_msg::Messenger,
    cluster: fogwire_cluster::Cluster,
    runner: fogwire_cluster::runners::NodeRunner,
    reach: fogwire_relay::Reachable,
    started: Instant,
    data_dir: Option<PathBuf>,
    /// Hold temporary store and ledger directories for as long as the
    /// node lives.
    _temp_dirs: Vec<tempfile::TempDir>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// A running node. Cheap to clone; every clone is the same node.
#[derive(Clone)]
pub struct Node {
    parts: Arc<Subsystems>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node_id", &self.node_id())
            .field("local_addr", &self.local_addr())
            .finish_non_exhaustive()
    }
}

/// What an app's service is built from: the node's subsystems.
#[derive(Debug)]
pub struct Parts<'a> {
    pub node_id: NodeId,
    pub routing: &'a Routing,
    pub rpc: &'a Rpc,
    pub store: &'a Arc<Store>,
    pub replication: &'a Replication,
    /// How to reach other nodes (RPC that links on demand, fetches).
    pub fabric: Arc<dyn fogwire_compute::Fabric>,
}

type MakeService = Box<dyn FnOnce(&Parts<'_>) -> Arc<dyn Service> + Send>;

/// Builds a node: its options, and the apps it offers over routes.
pub struct NodeBuilder {
    options: NodeOptions,
    services: Vec<(Spec, MakeService)>,
}

impl std::fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeBuilder")
            .field("services", &self.services.len())
            .finish_non_exhaustive()
    }
}

impl NodeBuilder {
    /// Offers an app's service over routes by `spec` (streams to its name,
    /// datagrams to its port); `make` builds it from the node's parts
    /// once they exist.
    pub fn service(
        mut self,
        spec: Spec,
        make: impl FnOnce(&Parts<'_>) -> Arc<dyn Service> + Send + 'static,
    ) -> Self {
        self.services.push((spec, Box::new(make)));
        self
    }

    /// Starts the node; see [`Node::start`].
    pub async fn start(self) -> Result<Node, NodeError> {
        Node::start_built(self).await
    }
}

impl Node {
    /// A node to start with apps of its own ([`NodeBuilder::service`]).
    pub fn builder(options: NodeOptions) -> NodeBuilder {
        NodeBuilder {
            options,
            services: Vec::new(),
        }
    }

    /// Binds the link listener, builds every subsystem, starts accepting
    /// links, and starts linking to the configured peers.
    pub async fn start(options: NodeOptions) -> Result<Self, NodeError> {
        Self::builder(options).start().await
    }

    async fn start_built(builder: NodeBuilder) -> Result<Self, NodeError> {
        let NodeBuilder { options, services } = builder;
        options.link.validate()?;
        let keypair = options.keypair.clone();
        let me = keypair.node_id();
        let identity =
            Arc::new(LinkIdentity::generate(keypair.clone()).map_err(NodeError::Identity)?);
        let listen_error = |source| NodeError::Listen {
            addr: options.link_listen,
            source,
        };
        let (listener, quic) = listen(options.link_listen, options.link_udp)?;
        let local_addr = listener.local_addr().map_err(listen_error)?;
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let mut temp_dirs = Vec::new();

        // Routing first: the others use its routes and its graph.
        let mut routing_options = fogwire_route::Options::new(identity.clone());
        routing_options.store_path = options.routing_store.clone();
        routing_options.capacity_kbps = options.capacity_kbps;
        let reach_options = fogwire_relay::Options {
            identity: identity.clone(),
            link_config: Arc::new(options.link.clone()),
            listen: local_addr,
            configured: options.advertise.clone(),
            serve: options.relay.serving(),
            client: options.relay.client(),
        };
        routing_options.addresses = reach_options.initial_addresses();
        routing_options.services.extend(
            [fogwire_rpc::locator::advertised(
                fogwire_rpc::locator::LOCATOR,
            )]
            .into_iter()
            .chain(options.compute.advertised())
            .chain(options.ledger.advertised())
            .chain(
                options
                    .replication
                    .keep_provider_records
                    .then(|| fogwire_replicate::PROVIDERS_SERVICE.to_owned()),
            )
            .chain(
                quic.is_some()
                    .then(|| fogwire_relay::QUIC_SERVICE.to_owned()),
            ),
        );
        let exit = options.exit.clone().map(fogwire_exit::Exit::new);
        if let Some(exit) = &exit {
            routing_options
                .services
                .push(fogwire_exit::SERVICE.to_owned());
            routing_options.offers.push(exit.offer());
            if exit.config().vpn {
                let service = fogwire_vpn::LEASE_SERVICE.to_owned();
                routing_options.services.push(service.clone());
                routing_options
                    .offers
                    .push(fogwire_route::proto::advert::Offer {
                        service,
                        ..exit.offer()
                    });
            }
        }
        let routing = Routing::start(routing_options)?;
        let outbound = fogwire_exit::Outbound::start(keypair.clone(), routing.clone())?;

        let (store_path, temp) = path_or_temp(&options.store_dir, "fogwire-store-", "store")?;
        temp_dirs.extend(temp);
        let store_config = options.store.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(&store_path, store_config))
            .await
            .map_err(|e| NodeError::TempDir(std::io::Error::other(e.to_string())))??;
        let store = Arc::new(store);
        let replication =
            Replication::start(store.clone(), options.replication.clone(), routing.clone());
        let rpc = Rpc::builder().local(me).routing(routing.clone()).build();
        let dialer = Arc::new(crate::links::ClusterDialer::default());
        let cluster = fogwire_cluster::Cluster::start(
            fogwire_cluster::Options {
                key: keypair.clone(),
                dir: options.data_dir.clone(),
                mdns: options.cluster.mdns,
                link_listen: local_addr,
                advertise: Vec::new(),
                resources: fogwire_cluster::resources(options.data_dir.as_deref()),
                swim: options.cluster.swim(),
            },
            dialer.clone(),
            (store.clone(), replication.clone()),
            shutdown.clone(),
            tasks.clone(),
        );
        let reach = fogwire_relay::Reachable::start(
            reach_options,
            routing.clone(),
            shutdown.clone(),
            tasks.clone(),
        );
        let users: Vec<Arc<dyn LinkUser>> = vec![
            Arc::new(reach.clone()),
            Arc::new(routing.clone()),
            Arc::new(replication.clone()),
            Arc::new(rpc.clone()),
            Arc::new(cluster.clone()),
        ];
        let book_path = options.data_dir.as_ref().map(|dir| dir.join("peers"));
        let (book, kept) = fogwire_link::book::PeerBook::open(book_path)?;
        let payers = fogwire_link::slots::Payers::default();
        let links = Links::start(
            listener,
            quic,
            (identity, book, payers.clone()),
            options.link,
            options.limits,
            users,
            shutdown.clone(),
            tasks.clone(),
        )
        .map_err(listen_error)?;
        dialer.set(links.clone());
        reach.set_links(links.clone());
        tracing::info!(node_id = %me, listen = %local_addr, "node started");
        let fabric = NodeFabric {
            links: links.clone(),
            routing: routing.clone(),
            rpc: rpc.clone(),
            replication: replication.clone(),
            store: store.clone(),
            id: me,
        };

        // What a failed start leaves running is stopped before the error
        // returns.
        let stop_early = async |routing: &Routing, replication: &Replication, rpc: &Rpc| {
            shutdown.cancel();
            routing.shutdown().await;
            replication.shutdown().await;
            rpc.shutdown().await;
            links.close_all().await;
        };
        // A step's value, or what runs stopped and the step's error returned.
        macro_rules! or_stop {
            ($step:expr) => {
                match $step {
                    Ok(value) => value,
                    Err(error) => {
                        stop_early(&routing, &replication, &rpc).await;
                        return Err(error.into());
                    }
                }
            };
        }
        let parts = Parts {
            node_id: me,
            routing: &routing,
            rpc: &rpc,
            store: &store,
            replication: &replication,
            fabric: Arc::new(fabric.clone()),
        };
        for (spec, make) in services {
            or_stop!(routing.accept(spec, make(&parts)));
        }
        // The ledger before compute: a paid hub settles through it.
        let (ledger_path, temp) =
            path_or_temp(&options.ledger_path, "fogwire-ledger-", "ledger.redb")?;
        temp_dirs.extend(temp);
        let fabric_arc = Arc::new(fabric.clone());
        let ledger = or_stop!(Ledger::start(
            &options.ledger,
            &ledger_path,
            &rpc,
            fabric_arc.clone(),
            keypair.clone(),
        ));
        let compute_dir = options.compute_dir.as_deref();
        let payments = Some(ledger.payments());
        let compute =
            or_stop!(Roles::start(&options.compute, compute_dir, fabric_arc, &rpc, payments).await);
        if let Some(exit) = &exit {
            or_stop!(exit.serve_on(&routing, Some(ledger.funds())));
        }
        let messages = options
            .data_dir
            .as_ref()
            .map(|d| d.join(fogwire_msg::DB_FILE));
        let (messages, temp) = path_or_temp(&messages, "fogwire-msg-", fogwire_msg::DB_FILE)?;
        temp_dirs.extend(temp);
        let messenger = or_stop!(fogwire_msg::Messenger::start_with(
            &messages,
            keypair.clone(),
            routing.clone(),
            options.mailboxes.clone()
        ));
        messenger.set_cluster(Arc::new(cluster.clone()));
        // Earning for forwarding, serving, exits and mailboxes: receipts
        // taken, handed over and redeemed.
        let earner = Earner {
            key: keypair.clone(),
            routing: routing.clone(),
            replication: replication.clone(),
            fabric: Arc::new(fabric.clone()),
            wallet: ledger.wallet().clone(),
            payers,
            exit: exit.clone(),
            messenger: Some(messenger.clone()),
        };
        tasks.spawn(earner.run(rpc.clone(), shutdown.clone()));
        let agent = match (&options.compute.agent, &compute.worker) {
            (Some(policy), Some(worker)) => {
                let agent = Arc::new(Agent::new(
                    policy.clone(),
                    worker,
                    Arc::new(fabric.clone()),
                    routing.clone(),
                    Some(ledger.client().clone()),
                ));
                tasks.spawn(agent.clone().run(shutdown.clone()));
                Some(agent)
            }
            _ => None,
        };
        let proxy = match options.socks {
            Some(socks) => Some(or_stop!(
                fogwire_exit::Proxy::start(socks, outbound.clone()).await
            )),
            None => None,
        };
        let vpn = fogwire_vpn::Switch::default();
        if let Some(exit) = exit.as_ref().filter(|exit| exit.config().vpn) {
            or_stop!(
                vpn.up(&routing, fogwire_vpn::Mode::Gateway(exit.clone()))
                    .await
            );
        }
        for peer in options.peers.into_iter().chain(kept) {
            links.want(peer);
        }
        let runner =
            fogwire_cluster::runners::NodeRunner::new(fogwire_cluster::runners::RunnerParts {
                routing: routing.clone(),
                rpc: rpc.clone(),
                outbound: outbound.clone(),
                store: store.clone(),
                replication: replication.clone(),
                fabric: Arc::new(fabric.clone()),
                funds: Some(ledger.funds()),
                payments: Some(ledger.payments()),
                link_listen: local_addr,
                compute_dir: options.compute_dir.as_ref().map(|dir| dir.join("cluster")),
                exit_configured: exit.is_some(),
                node_id: keypair.node_id(),
                ledger_path: ledger_path.clone(),
                ledger_configured: options.ledger.serve.is_some(),
            });
        cluster.set_runner(Arc::new(runner.clone()));
        or_stop!(cluster.resume(options.cluster.join.clone()).await);
        Ok(Node {
            parts: Arc::new(Subsystems {
                keypair,
                links,
                routing,
                store,
                replication,
                rpc,
                fabric,
                ledger,
                compute,
                agent,
                exit,
                proxy,
                outbound,
                vpn,
                messenger,
                cluster,
                runner,
                reach,
                started: Instant::now(),
                data_dir: options.data_dir,
                _temp_dirs: temp_dirs,
                shutdown,
                tasks,
            }),
        })
    }

    pub fn node_id(&self) -> NodeId {
        self.parts.keypair.node_id()
    }

    /// Where peers can dial this node.
    pub fn local_addr(&self) -> SocketAddr {
        self.parts.links.local_addr()
    }

    /// This node as a peer address other nodes can be configured with.
    pub fn peer_addr(&self) -> PeerAddr {
        PeerAddr::tcp(self.node_id(), self.local_addr().to_string())
    }

    /// This node's store. Blocking: call it from a blocking thread.
    pub fn store(&self) -> &Arc<Store> {
        &self.parts.store
    }

    /// This node's RPC: its services, and calls to its linked peers'.
    pub fn rpc(&self) -> &Rpc {
        &self.parts.rpc
    }

    /// This node's replication: fetching from peers, serving them, feeds.
    pub fn replication(&self) -> &Replication {
        &self.parts.replication
    }

    /// This node's routing: the graph, routes, streams.
    pub fn routing(&self) -> &Routing {
        &self.parts.routing
    }

    /// Every link up now.
    pub fn links(&self) -> Vec<LinkHandle> {
        self.parts.links.all()
    }

    /// This node's exit, if it serves as one.
    pub fn exit(&self) -> Option<&fogwire_exit::Exit> {
        self.parts.exit.as_ref()
    }

    /// This node's SOCKS proxy, if it runs one.
    pub fn proxy(&self) -> Option<&fogwire_exit::Proxy> {
        self.parts.proxy.as_ref()
    }

    pub fn messenger(&self) -> &fogwire_msg::Messenger {
        &self.parts.messenger
    }

    /// This node's VPN (`fogwire vpn up`).
    pub fn vpn(&self) -> &fogwire_vpn::Switch {
        &self.parts.vpn
    }

    /// What this node's proxies share: exits' UDP answers, and what each
    /// exit carried for this node (metered and paid by receipts).
    pub fn outbound(&self) -> &Arc<fogwire_exit::Outbound> {
        &self.parts.outbound
    }

    /// This node's hub, if it is one.
    pub fn hub(&self) -> Option<&fogwire_compute::hub::Hub> {
        self.parts.compute.hub.as_ref()
    }

    /// This node's market, if it is a hub.
    pub fn market(&self) -> Option<&fogwire_compute::market::Market> {
        self.parts.compute.market.as_ref()
    }

    /// This node's worker, if it is one.
    pub fn worker(&self) -> Option<&fogwire_compute::worker::Worker> {
        self.parts.compute.worker.as_ref()
    }

    /// How compute reaches other nodes from this one.
    pub fn fabric(&self) -> Arc<dyn fogwire_compute::Fabric> {
        Arc::new(self.parts.fabric.clone())
    }

    /// The ledger: the service if this node runs it, its client and this
    /// node's wallet.
    pub fn ledger(&self) -> &Ledger {
        &self.parts.ledger
    }

    /// The hubs this worker's agent knows and how it rates them (empty
    /// without an agent).
    pub fn hubs(&self) -> Vec<fogwire_account::agent::HubView> {
        self.parts
            .agent
            .as_ref()
            .map(|agent| agent.hubs())
            .unwrap_or_default()
    }

    pub fn uptime(&self) -> Duration {
        self.parts.started.elapsed()
    }

    /// Link events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.parts.links.subscribe()
    }

    /// The link to `peer`, if one is up.
    pub fn link(&self, peer: &NodeId) -> Option<LinkHandle> {
        self.parts.links.link(peer)
    }

    /// Links to `addr` now and keeps the link up (redialing with backoff)
    /// until [`Node::disconnect`]. Fails, and keeps nothing, if the first
    /// attempt fails.
    pub async fn connect(&self, addr: PeerAddr) -> Result<LinkHandle, NodeError> {
        Ok(self.parts.links.connect(addr).await?)
    }

    /// Makes a direct link to `peer`, a node this one reaches over routes
    /// (through a relay, say): over QUIC through both NATs, by asking it
    /// to punch at the same time (relay.md §3).
    pub async fn direct(&self, peer: NodeId) -> Result<LinkHandle, fogwire_relay::PunchError> {
        self.parts.reach.punch(peer).await
    }

    /// Stops keeping `peer` linked and closes its link. Returns whether
    /// there was a link or a wanted peer.
    pub async fn disconnect(&self, peer: &NodeId) -> bool {
        self.parts.links.disconnect(peer).await
    }

    /// Stops every subsystem (routes first, while their links still carry
    /// the teardowns), closes every link with a reason, and returns once
    /// the links have said goodbye (or a few seconds have passed).
    pub async fn shutdown(&self) {
        let parts = &self.parts;
        parts.shutdown.cancel();
        parts.cluster.shutdown();
        if let Some(proxy) = &parts.proxy {
            proxy.stop();
        }
        let _ = parts.vpn.down().await;
        parts.messenger.shutdown().await;
        parts.compute.shutdown().await;
        let bounded =
            async |what: &str, work: std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>>| {
                if tokio::time::timeout(SHUTDOWN_TIMEOUT, work).await.is_err() {
                    tracing::warn!("{what} did not stop in time");
                }
            };
        bounded("routing", Box::pin(parts.routing.shutdown())).await;
        bounded("replication", Box::pin(parts.replication.shutdown())).await;
        bounded("RPC", Box::pin(parts.rpc.shutdown())).await;
        parts.links.close_all().await;
        parts.tasks.close();
        let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, parts.tasks.wait()).await;
    }

    // ----- reports -----

    pub fn status(&self) -> fogwire_api::Status {
        let (links, peers_wanted, pending_handshakes) = self.parts.links.counts();
        fogwire_api::Status {
            node_id: self.node_id().to_string(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            link_listen: self.local_addr(),
            uptime_secs: self.uptime().as_secs(),
            links,
            peers_wanted,
            pending_handshakes,
            data_dir: self
                .parts
                .data_dir
                .as_deref()
                .map(Path::display)
                .map(|dir| dir.to_string()),
            reach: self.parts.reach.status(),
        }
    }

    /// Every linked or wanted peer, sorted by id.
    pub fn peers(&self) -> Vec<fogwire_api::Peer> {
        self.parts.links.peers()
    }

    /// The board's cluster (`fogwire cluster …`).
    pub fn cluster(&self) -> &fogwire_cluster::Cluster {
        &self.parts.cluster
    }

    /// The services the cluster runs on this board (its hub, its worker).
    pub fn cluster_services(&self) -> &fogwire_cluster::runners::NodeRunner {
        &self.parts.runner
    }

    /// The node's metrics in the OpenMetrics text format.
    pub fn metrics_text(&self) -> String {
        self.parts.links.metrics_text()
    }
}

/// Binds the link listener at `addr` and, with `udp`, the QUIC endpoint on
/// the UDP port of the same number. With port 0 the kernel picks a TCP
/// port whose UDP twin may be taken: another is picked then, a few times.
fn listen(
    addr: SocketAddr,
    udp: bool,
) -> Result<(tokio::net::TcpListener, Option<quinn::Endpoint>), NodeError> {
    const TRIES_WITH_ANY_PORT: usize = 8;
    let listen_error = |source| NodeError::Listen { addr, source };
    let mut tries = 0;
    loop {
        tries += 1;
        let listener = fogwire_link::listen(addr).map_err(listen_error)?;
        if !udp {
            return Ok((listener, None));
        }
        let local = listener.local_addr().map_err(listen_error)?;
        match fogwire_link::quic::endpoint(local) {
            Ok(endpoint) => return Ok((listener, Some(endpoint))),
            Err(_) if addr.port() == 0 && tries < TRIES_WITH_ANY_PORT => continue,
            Err(error) => return Err(error.into()),
        }
    }
}
