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
    /// The manifest version this board runs by; none: none yet.
    #[serde(default)]
    pub manifest: Option<ClusterManifest>,
    /// Why the newest version was refused, if it was (the board keeps the
    /// one it had).
    #[serde(default)]
    pub manifest_refused: Option<String>,
    /// Where each instance runs, as this board computes it.
    #[serde(default)]
    pub placement: Vec<PlacedInstance>,
    /// Instances no live member can take.
    #[serde(default)]
    pub unplaced: Vec<String>,
    /// The services placed on this board, and how each is doing.
    #[serde(default)]
    pub services: Vec<ClusterServiceState>,
}

/// A manifest version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterManifest {
    pub seq: u64,
    /// The blob holding its text.
    pub content: String,
    pub published_at_unix_ms: u64,
    pub services: Vec<ClusterServiceSpec>,
}

/// One service of the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterServiceSpec {
    pub name: String,
    pub kind: String,
    pub count: u32,
    pub cores: u32,
    pub memory_mib: u64,
    pub disk_mib: u64,
    pub pin: Option<String>,
    pub shares_board: bool,
    pub blobs: Vec<String>,
    /// The blob holding its settings, if it names one.
    #[serde(default)]
    pub config: Option<String>,
}

/// One instance and the board it runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedInstance {
    pub service: String,
    pub replica: u32,
    pub board: String,
}

/// A service on this board.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterServiceState {
    pub name: String,
    pub kind: String,
    /// `starting`, `running` or `failed` (tried again).
    pub state: String,
    pub error: Option<String>,
    pub since_secs: f64,
}

/// `POST /v1/cluster/apply`: a manifest's text, to publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterApply {
    pub manifest: String,
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

/// `POST /v1/cluster/peer` and `POST /v1/cluster/peer/accept`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterPeer {
    /// The other cluster's id, `fwcluster1…`.
    pub cluster: String,
}

/// A peering with another cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterPeering {
    /// The other cluster's id.
    pub cluster: String,
    /// `requested` (this cluster asked), `asked` (the other asked: accept
    /// with `fogwire cluster accept`) or `peered`.
    pub state: String,
    /// The board that asked, on an asked peering.
    pub requester: Option<String>,
    /// The other cluster's boards, as its offer names them.
    pub boards: Vec<String>,
    /// Of those, the ones this board has a link to.
    pub linked: usize,
    pub since_unix_ms: u64,
}

/// `GET /v1/cluster/peers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterPeerings {
    pub peerings: Vec<ClusterPeering>,
}
