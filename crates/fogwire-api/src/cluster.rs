//! Clusters: `GET /v1/cluster`, `POST /v1/cluster/init`,
//! `POST /v1/cluster/join`.

use serde::{Deserialize, Serialize};

/// This board's view of its cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The cluster's id (`fwcluster1…`); none: this board is in no cluster.
    pub cluster: Option<String>,
    /// Whether this board holds the cluster key (it made the cluster).
    pub owner: bool,
    pub node_id: String,
    /// How many times this board has started in the cluster.
    pub boot: u64,
    pub incarnation: u32,
    /// Lifeguard's local health multiplier: 0 is healthy, up to 8.
    pub health: u32,
    /// Whether boards are announced and found on the local network.
    pub mdns: bool,
    /// Every member this board knows, itself first.
    pub members: Vec<ClusterMember>,
    pub counters: ClusterCounters,
}

/// One member of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterMember {
    pub node_id: String,
    /// `alive`, `suspect` or `dead`.
    pub state: String,
    /// Seconds since the state last changed.
    pub since_secs: f64,
    pub addrs: Vec<String>,
    pub boot: u64,
    pub incarnation: u32,
    pub cores: u32,
    pub memory_mib: u64,
    pub disk_mib: u64,
    /// Whether this board has a link to it that proved membership.
    pub linked: bool,
    pub this_board: bool,
}

/// What membership has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterCounters {
    pub messages: u64,
    pub refused: u64,
    pub probes: u64,
    pub probes_failed: u64,
    pub refutations: u64,
    /// Boards of this cluster heard on the local network.
    pub discovered: u64,
}

/// `POST /v1/cluster/join`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterJoin {
    /// The join code, `fwjoin1…`.
    pub code: String,
}

/// The answer to `POST /v1/cluster/init`: the new cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterCreated {
    pub cluster: String,
    /// What other boards join with; a secret.
    pub join_code: String,
}
