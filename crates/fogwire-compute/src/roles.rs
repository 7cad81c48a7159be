//! The compute roles a node takes — a worker, a hub (with its market) —
//! started from the node's options and served over its RPC.

use std::path::Path;
use std::sync::Arc;

use fogwire_rpc::Rpc;

use crate::hub::{Hub, HubConfig};
use crate::market::Market;
use crate::worker::{Worker, WorkerConfig};
use crate::{Fabric, HUB, Payments, WORKER};

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

impl ComputeOptions {
    /// What the node's advert says of its roles: the RPC services it
    /// serves, a worker's resources, a charging hub's terms.
    pub fn advertised(&self) -> Vec<String> {
        let rpc = fogwire_rpc::locator::advertised;
        let mut services = Vec::new();
        if self.worker.is_some() {
            services.push(rpc(WORKER));
            // What it has, for anyone reading the graph (`fogwire nodes`);
            // hubs ask `describe` for the details.
            services.push(crate::resources::advertised());
        }
        if let Some(hub) = &self.hub {
            services.push(rpc(HUB));
            if self.charge
                && let Some(terms) = terms_advert(&hub.terms)
            {
                // A charging hub's terms travel in its signed adverts.
                services.push(terms);
            }
        }
        services
    }
}

/// The hub's terms from its advert's `terms:<task>:<gfuel>:<fee>`.
pub fn terms_of(services: &[String]) -> Option<(u64, u64, u8)> {
    let text = services.iter().find_map(|s| s.strip_prefix("terms:"))?;
    let mut parts = text.split(':');
    Some((
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    ))
}

/// The advert entry of a hub's terms, if it fits an advert.
pub fn terms_advert(terms: &fogwire_compute_proto::pay::Terms) -> Option<String> {
    let text = format!(
        "terms:{}:{}:{}",
        terms.price_per_task, terms.price_per_gfuel, terms.fee_percent
    );
    (text.len() <= 32).then_some(text)
}

/// Why a compute role could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RolesError {
    #[error("cannot make the compute directory {}: {source}", path.display())]
    Dir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the WebAssembly runtime: {0}")]
    Wasm(#[from] fogwire_sandbox::WasmError),
    #[error("the worker: {0}")]
    Worker(#[source] crate::worker::WorkerError),
    #[error("the hub: {0}")]
    Hub(#[source] crate::hub::HubError),
    #[error("the market: {0}")]
    Market(#[source] crate::market::MarketError),
}

/// The roles running on a node.
#[derive(Debug, Default)]
pub struct Roles {
    pub worker: Option<Worker>,
    pub hub: Option<Hub>,
    pub market: Option<Market>,
}

impl Roles {
    /// Starts the roles `options` asks for and serves them on `rpc`;
    /// records go in `dir` (none: in memory). A charging hub settles
    /// through `payments`.
    pub async fn start(
        options: &ComputeOptions,
        dir: Option<&Path>,
        fabric: Arc<dyn Fabric>,
        rpc: &Rpc,
        payments: Option<Arc<dyn Payments>>,
    ) -> Result<Roles, RolesError> {
        let mut roles = Roles::default();
        if options.worker.is_none() && options.hub.is_none() {
            return Ok(roles);
        }
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir).map_err(|source| RolesError::Dir {
                path: dir.to_owned(),
                source,
            })?;
        }
        if let Some(config) = &options.worker {
            let mut config = config.clone();
            if config.db_path.is_none() {
                config.db_path = dir.map(|dir| dir.join("worker.redb"));
            }
            let wasm = fogwire_sandbox::WasmRuntime::new()?;
            let docker = if options.docker {
                match crate::docker::Docker::connect().await {
                    Ok(docker) => {
                        Some(Arc::new(docker) as Arc<dyn crate::runtime::ContainerRuntime>)
                    }
                    Err(error) => {
                        tracing::warn!(%error, "no Docker daemon: this worker offers WebAssembly tasks only");
                        None
                    }
                }
            } else {
                None
            };
            let runtimes = crate::runtime::Runtimes::new(Arc::new(wasm), docker);
            let worker =
                Worker::start(fabric.clone(), runtimes, config).map_err(RolesError::Worker)?;
            rpc.serve(WORKER, Arc::new(worker.clone()));
            roles.worker = Some(worker);
        }
        if let Some(config) = &options.hub {
            let mut config = config.clone();
            if config.db_path.is_none() {
                config.db_path = dir.map(|dir| dir.join("hub.redb"));
            }
            if options.charge {
                config.payments = payments;
            }
            let hub = Hub::start(fabric, config).map_err(RolesError::Hub)?;
            rpc.serve(HUB, Arc::new(hub.clone()));
            roles.hub = Some(hub);
            // A hub keeps an order book too.
            let market_path = dir.map(|dir| dir.join("market.redb"));
            let market = Market::start(market_path.as_deref()).map_err(RolesError::Market)?;
            rpc.serve(crate::market::MARKET, Arc::new(market.clone()));
            roles.market = Some(market);
        }
        Ok(roles)
    }

    pub async fn shutdown(&self) {
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
