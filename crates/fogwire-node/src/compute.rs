//! The node's compute roles: a worker and/or a hub (`fogwire-compute`),
//! and the [`Fabric`] they reach other nodes through — RPC calls that
//! link on demand to nodes that are not neighbours (by the addresses in
//! their signed adverts), and fetches into this node's store.

use std::sync::{Arc, Weak};
use std::time::Duration;

use fogwire_compute::hub::{Hub, HubConfig};
use fogwire_compute::worker::{Worker, WorkerConfig};
use fogwire_compute::{Fabric, store_hash};
use fogwire_compute_proto::Digest;
use fogwire_identity::NodeId;
use fogwire_rpc::{BoxFuture, RpcError};
use fogwire_rpc_proto::Value;

use crate::node::Inner;
use crate::{Node, PeerAddr};

/// Which compute roles a node takes.
#[derive(Debug, Clone, Default)]
pub struct ComputeOptions {
    pub worker: Option<WorkerConfig>,
    pub hub: Option<HubConfig>,
    /// Offer container tasks (needs a reachable Docker daemon).
    pub docker: bool,
    /// The hub charges for jobs, by its `HubConfig::terms`: buyers must
    /// hold an escrow for it in the ledger.
    pub charge: bool,
    /// A worker's agent takes bids from hubs' books by this policy.
    pub agent: Option<fogwire_compute_proto::agent::Policy>,
}

/// The node as compute sees it.
pub(crate) struct NodeFabric {
    pub(crate) inner: Weak<Inner>,
    pub(crate) id: NodeId,
    pub(crate) store: Arc<fogwire_store::Store>,
}

impl NodeFabric {
    fn node(&self) -> Result<Node, RpcError> {
        self.inner
            .upgrade()
            .map(|inner| Node { inner })
            .ok_or(RpcError::Stopped)
    }
}

impl Node {
    /// A link to `peer`: the one up, else a new one to an address its
    /// advert names.
    pub async fn link_to(&self, peer: NodeId) -> Result<(), String> {
        if peer == self.node_id() || self.link(&peer).is_some() {
            return Ok(());
        }
        let nodes = self.routing().nodes().await.map_err(|e| e.to_string())?;
        let Some(info) = nodes.into_iter().find(|info| info.advert.origin == peer) else {
            return Err(format!(
                "{} is not linked, and no advert of it names an address",
                peer.short()
            ));
        };
        let mut last = format!("{} advertises no address", peer.short());
        for address in &info.advert.addresses {
            let addr = PeerAddr {
                node_id: peer,
                address: address.clone(),
            };
            match self.connect(addr).await {
                Ok(_) => return Ok(()),
                Err(error) => last = format!("{address}: {error}"),
            }
        }
        Err(last)
    }
}

impl Fabric for NodeFabric {
    fn node_id(&self) -> NodeId {
        self.id
    }

    fn store(&self) -> Arc<fogwire_store::Store> {
        self.store.clone()
    }

    fn call(
        &self,
        peer: NodeId,
        service: &'static str,
        method: u64,
        args: Vec<Value>,
        timeout: Duration,
    ) -> BoxFuture<Result<Vec<Vec<Value>>, RpcError>> {
        let node = self.node();
        Box::pin(async move {
            let node = node?;
            if let Err(why) = node.link_to(peer).await
                && !node.rpc().is_connected(&peer)
            {
                // No direct link: over a route, if one can be set up.
                tracing::debug!(%peer, %why, "no link for an RPC call: trying a route");
                if let Err(error) = node.rpc().open_route(peer).await {
                    tracing::debug!(%peer, %error, "no route for an RPC call either");
                    return Err(RpcError::NotLinked(peer));
                }
            }
            node.rpc()
                .request(peer, service, method, args, Some(timeout))
                .await
        })
    }

    fn fetch(&self, hash: Digest, holders: Vec<NodeId>) -> BoxFuture<Result<(), String>> {
        let node = self.node();
        Box::pin(async move {
            let node = node.map_err(|e| e.to_string())?;
            for holder in &holders {
                if let Err(why) = node.link_to(*holder).await {
                    tracing::debug!(%holder, %why, "cannot link to a holder");
                }
            }
            node.replication()
                .fetch(store_hash(&hash), None, None)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }

    fn locate(&self, service: &'static str) -> BoxFuture<Vec<NodeId>> {
        let node = self.node();
        Box::pin(async move {
            let Ok(node) = node else {
                return Vec::new();
            };
            let (endpoints, _) = node.rpc().locate(service).await;
            endpoints
        })
    }
}

/// The roles running on a node.
#[derive(Debug, Default)]
pub(crate) struct Roles {
    pub(crate) worker: Option<Worker>,
    pub(crate) hub: Option<Hub>,
    pub(crate) market: Option<fogwire_compute::market::Market>,
}

impl Roles {
    pub(crate) async fn shutdown(&self) {
        if let Some(hub) = &self.hub {
            hub.shutdown().await;
        }
        if let Some(market) = &self.market {
            market.shutdown();
        }
        if let Some(worker) = &self.worker {
            worker.shutdown().await;
        }
    }
}

/// Starts the roles `options` asks for and serves them over RPC.
pub(crate) async fn start(
    node: &Node,
    options: &ComputeOptions,
    dir: Option<&std::path::Path>,
) -> Result<Roles, crate::NodeError> {
    let mut roles = Roles::default();
    if options.worker.is_none() && options.hub.is_none() {
        return Ok(roles);
    }
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| crate::NodeError::Compute(format!("{}: {e}", dir.display())))?;
    }
    if let Some(config) = &options.worker {
        let mut config = config.clone();
        if config.db_path.is_none() {
            config.db_path = dir.map(|dir| dir.join("worker.redb"));
        }
        let wasm = fogwire_sandbox::WasmRuntime::new()
            .map_err(|e| crate::NodeError::Compute(format!("the WebAssembly runtime: {e}")))?;
        let docker = if options.docker {
            match fogwire_compute::docker::Docker::connect().await {
                Ok(docker) => {
                    Some(Arc::new(docker) as Arc<dyn fogwire_compute::runtime::ContainerRuntime>)
                }
                Err(error) => {
                    tracing::warn!(%error, "no Docker daemon: this worker offers WebAssembly tasks only");
                    None
                }
            }
        } else {
            None
        };
        let runtimes = fogwire_compute::runtime::Runtimes::new(Arc::new(wasm), docker);
        let worker = Worker::start(node.fabric(), runtimes, config)
            .map_err(|e| crate::NodeError::Compute(e.to_string()))?;
        node.rpc()
            .serve(fogwire_compute::WORKER, Arc::new(worker.clone()));
        roles.worker = Some(worker);
    }
    if let Some(config) = &options.hub {
        let mut config = config.clone();
        if config.db_path.is_none() {
            config.db_path = dir.map(|dir| dir.join("hub.redb"));
        }
        if options.charge
            && let Some(parts) = node.inner.ledger.get()
        {
            config.payments = Some(Arc::new(crate::ledger::NodePayments {
                wallet: parts.wallet.clone(),
                client: parts.client.clone(),
            }));
        }
        let hub = Hub::start(node.fabric(), config)
            .map_err(|e| crate::NodeError::Compute(e.to_string()))?;
        node.rpc()
            .serve(fogwire_compute::HUB, Arc::new(hub.clone()));
        roles.hub = Some(hub);
        // A hub keeps an order book too.
        let market_path = dir.map(|dir| dir.join("market.redb"));
        let market = fogwire_compute::market::Market::start(market_path.as_deref())
            .map_err(|e| crate::NodeError::Compute(format!("the market: {e}")))?;
        node.rpc()
            .serve(fogwire_compute::market::MARKET, Arc::new(market.clone()));
        roles.market = Some(market);
    }
    Ok(roles)
}
