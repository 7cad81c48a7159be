//! Each kind of service, started and stopped at run time on the node's
//! subsystems (`docs/protocol/cluster.md` §9):
//!
//! - `exit`: the exit service on routes, with the default policy (the
//!   public internet, SMTP refused), advertised with its offer;
//! - `gateway`: a SOCKS 5 proxy on this board's own address on the
//!   cluster's network, port 1080, through the network's exits;
//! - `worker` and `hub`: the compute roles on the node's RPC, advertised;
//! - `seeder`: every blob the manifest names, fetched and pinned, so the
//!   cluster's cache holds everything it runs (and serves it);
//! - `relay`: when the manifest names relays, the boards without one
//!   advertise `transit:off` and paths no longer pass through them;
//! - `ledger`: refused with the reason (a ledger cannot move its log yet),
//!   so its state never reads "running" for something not done.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use fogwire_cluster_proto::manifest::{Kind, Manifest, Service};
use fogwire_compute::roles::{ComputeOptions, Roles};
use fogwire_exit::{Exit, ExitConfig, Outbound, Proxy, ProxyConfig};
use fogwire_replicate::Replication;
use fogwire_route::Routing;
use fogwire_rpc::Rpc;
use fogwire_store::{Hash, Store};

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
}

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

    async fn start_kind(&self, service: &Service, manifest: &Manifest) -> Result<Handle, String> {
        let name = &service.spec.name;
        let parts = &self.parts;
        match service.kind {
            Kind::Exit => {
                if parts.exit_configured {
                    return Err("this node already serves as an exit by [exit] serve".into());
                }
                let exit = Exit::new(ExitConfig::default());
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
                let config = ProxyConfig::new(SocketAddr::new(ip, GATEWAY_PORT));
                let proxy = Proxy::start(config, parts.outbound.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Handle::Gateway(proxy))
            }
            Kind::Worker | Kind::Hub => {
                let worker = service.kind == Kind::Worker;
                let options = ComputeOptions {
                    worker: worker.then(Default::default),
                    hub: (!worker).then(Default::default),
                    docker: true,
                    ..Default::default()
                };
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
                    .flat_map(|service| service.blobs.iter().copied())
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
            Kind::Ledger => Err(
                "a ledger cannot be started by the cluster yet: it runs where [ledger] serve = \
                 true is set"
                    .into(),
            ),
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
