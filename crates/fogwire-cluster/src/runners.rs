//! Each kind of service, started and stopped at run time on the node's
//! subsystems (`docs/protocol/cluster.md` §9):
//!
//! - `exit`: the exit service on routes, by its config's `[exit]` (the
//!   default policy without one: the public internet, SMTP refused),
//!   advertised with its offer;
//! - `gateway`: a SOCKS 5 proxy on this board's own address on the
//!   cluster's network, port 1080, through the network's exits (its
//!   config's `[socks]` may name the exit and the hops);
//! - `worker` and `hub`: the compute roles on the node's RPC, by their
//!   config's `[compute]`, advertised;
//! - `seeder`: every blob the manifest names (configs too), fetched and
//!   pinned, so the cluster's cache holds everything it runs (and serves
//!   it);
//! - `relay`: when the manifest names relays, the boards without one
//!   advertise `transit:off` and paths no longer pass through them;
//! - `ledger`: the ledger service on the board it is pinned to, its log in
//!   the node's ledger file, created from its config's `[ledger]` genesis
//!   and advertised so that every node finds it (a ledger cannot move its
//!   log yet, so the manifest must pin it).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use fogwire_cluster_proto::manifest::{Kind, Manifest, Service};
use fogwire_compute::hub::Hub;
use fogwire_compute::roles::Roles;
use fogwire_compute::worker::Worker;
use fogwire_exit::{Exit, Outbound, Proxy, ProxyConfig};
use fogwire_identity::NodeId;
use fogwire_ledger::{LEDGER, LedgerService};
use fogwire_replicate::Replication;
use fogwire_route::Routing;
use fogwire_rpc::Rpc;
use fogwire_store::{Hash, Store};
use serde::de::DeserializeOwned;

use crate::supervise::Runner;
use crate::{BoxFuture, lock};

/// The port a gateway serves SOCKS 5 on.
pub const GATEWAY_PORT: u16 = 1080;

/// What the runners start services on: the node's subsystems.
pub struct RunnerParts {
    pub routing: Routing,
    pub rpc: Rpc,
    pub outbound: Arc<Outbound>,
    pub store: Arc<Store>,
    pub replication: Replication,
    pub fabric: Arc<dyn fogwire_compute::Fabric>,
    pub funds: Option<Arc<dyn fogwire_exit::Funds>>,
    pub payments: Option<Arc<dyn fogwire_compute::Payments>>,
    /// The link listener's address: a gateway serves on its IP when it
    /// is a private one, else on the board's first private IPv4 address.
    pub link_listen: SocketAddr,
    /// Where compute roles keep their records (none: in memory).
    pub compute_dir: Option<PathBuf>,
    /// Whether the node already serves as an exit by its configuration.
    pub exit_configured: bool,
    /// This node, the file a ledger run here keeps its log in, and
    /// whether the node already runs one by its configuration.
    pub node_id: NodeId,
    pub ledger_path: PathBuf,
    pub ledger_configured: bool,
}

/// Longest service config read, in bytes.
const CONFIG_LEN_MAX: u64 = 64 * 1024;

/// Runs services on the node's subsystems. Cheap to clone.
#[derive(Clone)]
pub struct NodeRunner {
    parts: Arc<RunnerParts>,
    running: Arc<Mutex<HashMap<String, Handle>>>,
}

enum Handle {
    Relay,
    Exit,
    Gateway(Proxy),
    Compute(Roles, Vec<&'static str>),
    Seeder(Vec<String>),
    Ledger(LedgerService),
}

impl std::fmt::Debug for RunnerParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerParts").finish_non_exhaustive()
    }
}

/// Where a gateway serves: the listener's IP if private, else the first
/// private IPv4 address of an interface. Never a public or wildcard
/// address: the proxy would be open to anyone.
fn lan_address(listen: SocketAddr) -> Option<std::net::IpAddr> {
    let private = |ip: &std::net::IpAddr| matches!(ip, std::net::IpAddr::V4(v4) if v4.is_private());
    if private(&listen.ip()) {
        return Some(listen.ip());
    }
    if_addrs::get_if_addrs()
        .ok()?
        .into_iter()
        .map(|interface| interface.ip())
        .find(private)
}

impl std::fmt::Debug for NodeRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeRunner").finish_non_exhaustive()
    }
}

impl NodeRunner {
    pub fn new(parts: RunnerParts) -> Self {
        Self {
            parts: Arc::new(parts),
            running: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The hub the cluster runs on this board, if it runs one.
    pub fn hub(&self) -> Option<Hub> {
        self.compute_role(|roles| roles.hub.clone())
    }

    /// The worker the cluster runs on this board, if it runs one.
    pub fn worker(&self) -> Option<Worker> {
        self.compute_role(|roles| roles.worker.clone())
    }

    /// The market of the hub the cluster runs on this board, if any.
    pub fn market(&self) -> Option<fogwire_compute::market::Market> {
        self.compute_role(|roles| roles.market.clone())
    }

    /// A compute role the cluster runs on this board.
    fn compute_role<T>(&self, role: impl Fn(&Roles) -> Option<T>) -> Option<T> {
        lock(&self.running)
            .values()
            .find_map(|handle| match handle {
                Handle::Compute(roles, _) => role(roles),
                _ => None,
            })
    }

    /// The service's settings: its kind's section of the TOML its config
    /// blob holds (fetched before the start), or the defaults without one.
    async fn settings<T: DeserializeOwned + Default>(
        &self,
        service: &Service,
    ) -> Result<T, String> {
        let (Some(hash), Some(section)) = (service.config, service.kind.config_section()) else {
            return Ok(T::default());
        };
        let hash = Hash::from_bytes(hash);
        let store = self.parts.store.clone();
        let bytes = tokio::task::spawn_blocking(move || store.read_to_vec(&hash, CONFIG_LEN_MAX))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot read its config {hash}: {e}"))?;
        let text =
            String::from_utf8(bytes).map_err(|_| format!("its config {hash} is not UTF-8 text"))?;
        let mut table: toml::Table =
            toml::from_str(&text).map_err(|e| format!("its config {hash} is not TOML: {e}"))?;
        if let Some(other) = table.keys().find(|key| *key != section) {
            return Err(format!(
                "its config {hash} has [{other}]; kind {} takes [{section}] only",
                service.kind.as_str()
            ));
        }
        table
            .remove(section)
            .unwrap_or_else(|| toml::Value::Table(toml::Table::new()))
            .try_into()
            .map_err(|e| format!("its config {hash}, [{section}]: {e}"))
    }

    /// Opens the ledger's log (created from the config's genesis if it
    /// is new), serves it and advertises it: every node that names no
    /// ledger node finds it by its advert.
    async fn start_ledger(&self, service: &Service) -> Result<Handle, String> {
        let parts = &self.parts;
        if parts.ledger_configured {
            return Err("this node already runs the ledger by [ledger] serve".into());
        }
        let section: fogwire_account::ledger::LedgerSection = self.settings(service).await?;
        if section.node.is_some_and(|node| node != parts.node_id) {
            return Err("its config names another ledger node: remove node from it".into());
        }
        if section.genesis.is_empty() {
            return Err(
                "a ledger needs its genesis accounts: name a config whose [ledger] has genesis"
                    .into(),
            );
        }
        let genesis = fogwire_account::ledger::LedgerSection {
            serve: true,
            ..section
        }
        .options(parts.node_id)
        .serve
        .ok_or("the ledger's config gives no genesis")?;
        let path = parts.ledger_path.clone();
        let ledger = tokio::task::spawn_blocking(move || LedgerService::open(&path, &genesis))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot open the ledger's log: {e}"))?;
        parts.rpc.serve(LEDGER, Arc::new(ledger.clone()));
        let advertised = vec![fogwire_rpc::locator::advertised(LEDGER)];
        if let Err(error) = parts
            .routing
            .advertise(&service.spec.name, advertised, Vec::new())
            .await
        {
            parts.rpc.unserve(LEDGER);
            return Err(error.to_string());
        }
        Ok(Handle::Ledger(ledger))
    }

    async fn start_kind(&self, service: &Service, manifest: &Manifest) -> Result<Handle, String> {
        let name = &service.spec.name;
        let parts = &self.parts;
        match service.kind {
            Kind::Exit => {
                if parts.exit_configured {
                    return Err("this node already serves as an exit by [exit] serve".into());
                }
                let section: fogwire_exit::config::ExitSection = self.settings(service).await?;
                if section.vpn {
                    return Err(
                        "an exit the cluster starts does not serve VPN clients: set vpn in the \
                         board's own [exit] section"
                            .into(),
                    );
                }
                let config = fogwire_exit::config::ExitSection {
                    serve: true,
                    ..section
                }
                .config()
                .unwrap_or_default();
                let exit = Exit::new(config);
                exit.serve_on(&parts.routing, parts.funds.clone())
                    .map_err(|e| e.to_string())?;
                parts
                    .routing
                    .advertise(
                        name,
                        vec![fogwire_exit::SERVICE.to_owned()],
                        vec![exit.offer()],
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Handle::Exit)
            }
            Kind::Gateway => {
                let ip = lan_address(parts.link_listen).ok_or(
                    "this board has no address on a private network to serve SOCKS on".to_owned(),
                )?;
                let section: fogwire_exit::config::SocksSection = self.settings(service).await?;
                if section.listen.is_some() {
                    return Err(format!(
                        "a gateway serves on the board's own address, port {GATEWAY_PORT}: \
                         remove listen from its config"
                    ));
                }
                let config = ProxyConfig {
                    exit: section.exit,
                    min_hops: section.min_hops.max(1),
                    ..ProxyConfig::new(SocketAddr::new(ip, GATEWAY_PORT))
                };
                let proxy = Proxy::start(config, parts.outbound.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Handle::Gateway(proxy))
            }
            Kind::Worker | Kind::Hub => {
                let worker = service.kind == Kind::Worker;
                let section: fogwire_compute::config::ComputeSection =
                    self.settings(service).await?;
                if section.agent {
                    return Err(
                        "a worker's agent runs by the board's own [compute] section, not a \
                         service's config"
                            .into(),
                    );
                }
                let options = fogwire_compute::config::ComputeSection {
                    worker,
                    hub: !worker,
                    ..section
                }
                .options();
                let dir = parts.compute_dir.as_ref().map(|dir| dir.join(name));
                let roles = Roles::start(
                    &options,
                    dir.as_deref(),
                    parts.fabric.clone(),
                    &parts.rpc,
                    parts.payments.clone(),
                )
                .await
                .map_err(|e| e.to_string())?;
                let served: Vec<&'static str> = if worker {
                    vec![fogwire_compute::WORKER]
                } else {
                    vec![fogwire_compute::HUB, fogwire_compute::market::MARKET]
                };
                parts
                    .routing
                    .advertise(name, options.advertised(), Vec::new())
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Handle::Compute(roles, served))
            }
            Kind::Seeder => {
                let mut tags = Vec::new();
                let blobs: Vec<[u8; 32]> = manifest
                    .services
                    .iter()
                    .flat_map(|service| service.blobs.iter().copied().chain(service.config))
                    .collect();
                for blob in blobs {
                    let hash = Hash::from_bytes(blob);
                    let tag = format!("cluster/seed/{hash}");
                    parts
                        .replication
                        .fetch(hash, Some(tag.clone()), None)
                        .await
                        .map_err(|e| format!("cannot fetch {hash}: {e}"))?;
                    tags.push(tag);
                }
                Ok(Handle::Seeder(tags))
            }
            // Carrying others' routes is the node's default; what makes a
            // relay of the manifest is that the boards without one stop
            // (`relaying`).
            Kind::Relay => Ok(Handle::Relay),
            Kind::Ledger => self.start_ledger(service).await,
        }
    }
}

impl Runner for NodeRunner {
    fn relaying(&self, on: bool) -> BoxFuture<()> {
        let routing = self.parts.routing.clone();
        Box::pin(async move {
            let services = if on {
                Vec::new()
            } else {
                vec![fogwire_route::proto::advert::NO_TRANSIT.to_owned()]
            };
            let _ = routing
                .advertise("cluster-transit", services, Vec::new())
                .await;
        })
    }

    fn start(&self, service: &Service, manifest: &Manifest) -> BoxFuture<Result<(), String>> {
        let service = service.clone();
        let manifest = manifest.clone();
        let runner = self.clone();
        Box::pin(async move {
            let handle = runner.start_kind(&service, &manifest).await?;
            lock(&runner.running).insert(service.spec.name.clone(), handle);
            Ok(())
        })
    }

    fn stop(&self, service: &Service) -> BoxFuture<()> {
        let service = service.clone();
        let runner = self.clone();
        Box::pin(async move {
            let handle = lock(&runner.running).remove(&service.spec.name);
            let name = &service.spec.name;
            let parts = &runner.parts;
            match handle {
                Some(Handle::Exit) => {
                    parts.routing.withdraw(fogwire_exit::SERVICE);
                    parts.routing.withdraw("exit-pay");
                    let _ = parts.routing.advertise(name, Vec::new(), Vec::new()).await;
                }
                Some(Handle::Gateway(proxy)) => proxy.stop(),
                Some(Handle::Relay) => {}
                Some(Handle::Ledger(ledger)) => {
                    parts.rpc.unserve(LEDGER);
                    let _ = parts.routing.advertise(name, Vec::new(), Vec::new()).await;
                    // The last handle on its log: closed, so that a later
                    // start on this board opens it again.
                    drop(ledger);
                }
                Some(Handle::Compute(roles, served)) => {
                    for rpc_name in served {
                        parts.rpc.unserve(rpc_name);
                    }
                    let _ = parts.routing.advertise(name, Vec::new(), Vec::new()).await;
                    roles.shutdown().await;
                }
                Some(Handle::Seeder(tags)) => {
                    let store = parts.store.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        for tag in tags {
                            let _ = store.remove_tag(&tag);
                        }
                    })
                    .await;
                }
                None => {}
            }
        })
    }
}
