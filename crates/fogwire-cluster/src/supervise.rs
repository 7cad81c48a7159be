//! Running what the placement gives this board (`docs/protocol/cluster.md`
//! §9): every time the manifest or the live members change, the board
//! computes the placement (the same on every board), stops the services
//! it no longer holds, and starts the ones it now holds — after fetching
//! the blobs they need from the cluster — through a [`Runner`] the node
//! provides. A start that fails is tried again, 1 s, 2 s, 4 s… up to 30 s
//! apart, and reported meanwhile.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fogwire_cluster_proto::manifest::{Kind, Manifest, Service};
use fogwire_cluster_proto::placement::{Member, Placement, place};
use fogwire_identity::NodeId;
use fogwire_replicate::Replication;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::BoxFuture;
use crate::manifest::Applied;

/// How long a service's blobs may take to arrive before its start fails.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// What runs a service of a given kind on this board: the node's
/// subsystems, started and stopped at run time.
pub trait Runner: Send + Sync + 'static {
    /// Starts `service` (its blobs are in the store) under `manifest`.
    fn start(&self, service: &Service, manifest: &Manifest) -> BoxFuture<Result<(), String>>;
    /// Stops `service`.
    fn stop(&self, service: &Service) -> BoxFuture<()>;
    /// Whether this board carries routes for others: off when the
    /// manifest names relays and none is placed here.
    fn relaying(&self, on: bool) -> BoxFuture<()>;
}

/// A service placed on this board, and how it is doing.
#[derive(Debug, Clone, PartialEq)]
pub struct Running {
    pub service: Service,
    pub state: RunState,
    pub since: Instant,
    attempts: u32,
    retry_at: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    Starting,
    Running,
    /// The start failed; it is tried again.
    Failed(String),
}

impl RunState {
    pub fn as_str(&self) -> &'static str {
        match self {
            RunState::Starting => "starting",
            RunState::Running => "running",
            RunState::Failed(_) => "failed",
        }
    }
}

/// What the supervisor publishes: the placement it ran by and this
/// board's services.
#[derive(Debug, Clone, Default)]
pub struct Supervision {
    pub placement: Option<Placement>,
    pub services: Vec<Running>,
}

pub(crate) struct Supervisor {
    pub me: NodeId,
    pub runner: Arc<dyn Runner>,
    pub replication: Replication,
    pub applied: watch::Receiver<Option<Arc<Applied>>>,
    pub live: watch::Receiver<Vec<Member>>,
    pub report: watch::Sender<Supervision>,
    pub stop: CancellationToken,
}

impl Supervisor {
    pub(crate) async fn run(mut self) {
        let mut running: BTreeMap<String, Running> = BTreeMap::new();
        let mut relaying = true;
        loop {
            let applied = self.applied.borrow_and_update().clone();
            let live = self.live.borrow_and_update().clone();
            let placement = applied
                .as_ref()
                .map(|applied| place(&applied.manifest.specs(), &live));
            let wanted: BTreeMap<String, Service> = match (&applied, &placement) {
                (Some(applied), Some(placement)) => placement
                    .on(&self.me)
                    .filter_map(|instance| {
                        applied
                            .manifest
                            .services
                            .iter()
                            .find(|service| service.spec.name == instance.service)
                            .map(|service| (service.spec.name.clone(), service.clone()))
                    })
                    .collect(),
                _ => BTreeMap::new(),
            };
            // A manifest that names relays makes only their boards carry
            // others' routes; one that names none leaves every board to.
            let relays_named = applied.as_ref().is_some_and(|applied| {
                applied
                    .manifest
                    .services
                    .iter()
                    .any(|service| service.kind == Kind::Relay)
            });
            let relay_here = wanted.values().any(|service| service.kind == Kind::Relay);
            let relay_now = !relays_named || relay_here;
            if relay_now != relaying {
                relaying = relay_now;
                tracing::info!(
                    "cluster: this board {} routes for others",
                    if relaying {
                        "carries"
                    } else {
                        "no longer carries"
                    }
                );
                self.runner.relaying(relaying).await;
            }
            // Stop what this board no longer holds, or holds changed.
            let stale: Vec<String> = running
                .iter()
                .filter(|(name, held)| wanted.get(*name) != Some(&held.service))
                .map(|(name, _)| name.clone())
                .collect();
            for name in stale {
                if let Some(held) = running.remove(&name) {
                    tracing::info!(service = %name, kind = held.service.kind.as_str(), "cluster: stopping a service this board no longer holds");
                    self.runner.stop(&held.service).await;
                }
            }
            // Start what it holds now (and retry what failed, when due).
            let now = Instant::now();
            for (name, service) in &wanted {
                let due = match running.get(name) {
                    None => true,
                    Some(held) => held.retry_at.is_some_and(|at| at <= now),
                };
                if !due {
                    continue;
                }
                let attempts = running.get(name).map_or(0, |held| held.attempts);
                running.insert(
                    name.clone(),
                    Running {
                        service: service.clone(),
                        state: RunState::Starting,
                        since: now,
                        attempts,
                        retry_at: None,
                    },
                );
                self.publish(&placement, &running);
                let manifest = applied
                    .as_ref()
                    .map(|applied| applied.manifest.clone())
                    .unwrap_or_else(|| Manifest { services: vec![] });
                let result = self.start(service, &manifest).await;
                let Some(held) = running.get_mut(name) else {
                    continue;
                };
                held.since = Instant::now();
                match result {
                    Ok(()) => {
                        tracing::info!(service = %name, kind = service.kind.as_str(), "cluster: service running on this board");
                        held.state = RunState::Running;
                        held.attempts = 0;
                    }
                    Err(why) => {
                        let wait = RETRY_FIRST
                            .saturating_mul(1 << held.attempts.min(5))
                            .min(RETRY_MAX);
                        tracing::warn!(service = %name, kind = service.kind.as_str(), "cluster: service did not start: {why}; trying again in {wait:?}");
                        held.state = RunState::Failed(why);
                        held.attempts += 1;
                        held.retry_at = Some(Instant::now() + wait);
                    }
                }
            }
            self.publish(&placement, &running);
            let retry = running.values().filter_map(|held| held.retry_at).min();
            let sleep = async {
                match retry {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.stop.cancelled() => {
                    for held in running.values() {
                        self.runner.stop(&held.service).await;
                    }
                    return;
                }
                changed = self.applied.changed() => if changed.is_err() { return },
                changed = self.live.changed() => if changed.is_err() { return },
                () = sleep => {}
            }
        }
    }

    /// Fetches the service's blobs and config from the cluster (pinned
    /// under `cluster/<service>/<hash>`), then starts it.
    async fn start(&self, service: &Service, manifest: &Manifest) -> Result<(), String> {
        for blob in service.blobs.iter().chain(&service.config) {
            let hash = fogwire_store::Hash::from_bytes(*blob);
            let tag = format!("cluster/{}/{}", service.spec.name, hash);
            let fetch = self.replication.fetch(hash, Some(tag), None);
            match tokio::time::timeout(FETCH_TIMEOUT, fetch).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => return Err(format!("cannot fetch its blob {hash}: {error}")),
                Err(_) => {
                    return Err(format!(
                        "its blob {hash} did not arrive within {FETCH_TIMEOUT:?}"
                    ));
                }
            }
        }
        self.runner.start(service, manifest).await
    }

    fn publish(&self, placement: &Option<Placement>, running: &BTreeMap<String, Running>) {
        self.report.send_replace(Supervision {
            placement: placement.clone(),
            services: running.values().cloned().collect(),
        });
    }
}
