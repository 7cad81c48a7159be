//! The `[compute]` section of a node's configuration file.

use fogwire_compute_proto::agent::Policy;
use fogwire_compute_proto::pay::Terms;
use fogwire_identity::NodeId;
use fogwire_ledger::Coins;
use serde::Deserialize;
use smart_default::SmartDefault;

/// `[compute]`: the compute roles this node takes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct ComputeSection {
    /// Run other nodes' tasks (sold through hubs).
    pub worker: bool,
    /// Take jobs from buyers and schedule them onto workers.
    pub hub: bool,
    /// Tasks a worker runs at once; 0: one per core.
    pub slots: u32,
    /// Offer container tasks, if a Docker daemon is reachable.
    #[default(true)]
    pub docker: bool,
    /// Let container tasks use the network when their job asks.
    pub allow_network: bool,
    /// For demonstrations only: this worker reports wrong results, so
    /// that hubs can be seen catching it.
    pub cheat: bool,
    /// The hub charges for jobs (buyers pay into escrow through the
    /// ledger), at these prices.
    pub charge: bool,
    #[default(Coins(Terms::default().price_per_task))]
    pub price_per_task: Coins,
    #[default(Coins(Terms::default().price_per_gfuel))]
    pub price_per_gfuel: Coins,
    #[default(Terms::default().fee_percent)]
    pub fee_percent: u8,
    /// What a worker caught dissenting loses of its deposit here.
    #[default(Coins(Terms::default().slash))]
    pub slash: Coins,
    /// A worker's agent: it takes bids from hubs' books that pay at least
    /// `min_price` per task, from hubs it can verify in the ledger (or
    /// unverified ones too), never from `avoid`, always from `trust`,
    /// giving no hub more than `hub_share_percent` of its cores when
    /// others have work.
    pub agent: bool,
    #[default(Coins(Policy::default().min_price))]
    pub min_price: Coins,
    pub trust: Vec<NodeId>,
    pub avoid: Vec<NodeId>,
    pub unverified: bool,
    #[default(Policy::default().hub_share_percent)]
    pub hub_share_percent: u8,
}

impl ComputeSection {
    /// The node options these settings give.
    pub fn options(&self) -> crate::roles::ComputeOptions {
        let worker = self.worker.then(|| {
            let mut worker = crate::worker::WorkerConfig {
                network_allowed: self.allow_network,
                cheat: self.cheat,
                ..Default::default()
            };
            if self.slots > 0 {
                worker.slots = self.slots;
            }
            worker
        });
        crate::roles::ComputeOptions {
            worker,
            hub: self.hub.then(|| crate::hub::HubConfig {
                terms: Terms {
                    price_per_task: self.price_per_task.0,
                    price_per_gfuel: self.price_per_gfuel.0,
                    fee_percent: self.fee_percent.min(100),
                    slash: self.slash.0,
                },
                ..Default::default()
            }),
            docker: self.docker,
            charge: self.charge,
            agent: self.agent.then(|| Policy {
                min_price: self.min_price.0,
                trust: self.trust.iter().map(|id| *id.as_bytes()).collect(),
                avoid: self.avoid.iter().map(|id| *id.as_bytes()).collect(),
                unverified: self.unverified,
                hub_share_percent: self.hub_share_percent.clamp(1, 100),
            }),
        }
    }
}
