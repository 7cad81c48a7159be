//! The node itself: status, peers, links, and the error body.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// `GET /v1/status`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub node_id: String,
    pub version: String,
    /// Address peers dial.
    pub link_listen: SocketAddr,
    pub uptime_secs: u64,
    /// Links up now.
    pub links: usize,
    /// Peers the node keeps linked (configured or connected by an operator).
    pub peers_wanted: usize,
    pub pending_handshakes: usize,
    pub data_dir: Option<String>,
    /// Whether others can dial this node.
    #[serde(default)]
    pub reach: Reach,
}

/// Whether others can dial this node, and at which addresses (relay.md
/// §1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reach {
    /// `public` (dialed at a public address), `private` (peers on public
    /// addresses cannot dial it: behind a NAT or firewall), `local` (only
    /// peers on private networks know it, and dialed it), or `unknown`.
    pub reachability: String,
    /// Each IP address peers see this node at, with its listening port.
    pub addresses: Vec<ReachAddress>,
    /// Checks this node is running for peers now.
    pub checks_for_peers: usize,
    /// The relays this node keeps while it is private.
    pub relays: Vec<RelayUse>,
    /// What this node carries as a relay, if it is one.
    pub relay: Option<RelayServing>,
}

/// A relay a private node keeps a link to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayUse {
    pub node_id: String,
    /// `linking`, `reserving` (linked, the reservation asked for) or
    /// `reserved` (it carries for this node).
    pub state: String,
    /// Its price per GiB, in the ledger's smallest unit.
    pub price_per_gib: u64,
}

/// A relay's clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayServing {
    /// The nodes it carries for now.
    pub clients: Vec<String>,
    pub clients_max: usize,
    pub price_per_gib: u64,
}

/// One address peers see a node at, and how its check went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReachAddress {
    pub address: SocketAddr,
    /// Outside the private, shared, loopback and link-local ranges.
    pub public: bool,
    /// `checking`, `confirmed` or `refuted`.
    pub state: String,
    /// Linked peers that see the node at this IP address.
    pub seen_by: usize,
    /// Peers whose dial reached the node there (this round of checks).
    pub confirmed_by: Vec<String>,
    /// Peers that could not dial it there (this round).
    pub refuted_by: Vec<String>,
}

/// Where a wanted or linked peer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerState {
    /// A link is up.
    Linked,
    /// Dialing now.
    Connecting,
    /// The last attempt failed; the next is scheduled.
    Waiting,
}

/// One entry of `GET /v1/peers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Peer {
    pub node_id: String,
    pub state: PeerState,
    /// The remote socket address of the link, or the configured address.
    pub address: Option<String>,
    /// "outbound" (we dialed) or "inbound", when linked.
    pub direction: Option<String>,
    /// "tcp" or "quic" (UDP), when linked.
    #[serde(default)]
    pub transport: Option<String>,
    /// Whether the node redials this peer when the link drops.
    pub wanted: bool,
    /// Whether the peer paid this node within the last hour (a receipt of
    /// its redeemed): its link keeps its slot before others'.
    #[serde(default)]
    pub pays: bool,
    pub linked_since_unix: Option<u64>,
    pub rtt_ms: Option<f64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub last_error: Option<String>,
    pub retry_in_ms: Option<u64>,
}

/// `POST /v1/peers`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectRequest {
    /// `<node id>@<host>:<port>` (`@quic:<host>:<port>` over QUIC), or a
    /// node id (or name) alone: a direct link to a node reached over
    /// routes, punched through NATs.
    pub peer: String,
}

/// `DELETE /v1/peers/{node_id}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisconnectResponse {
    pub node_id: String,
    pub was_linked: bool,
}

/// Body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// A name the operator gave a node (`GET /v1/names`, and the answer to
/// `POST /v1/names` and `DELETE /v1/names/{name}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeName {
    pub name: String,
    pub node_id: String,
}

/// `POST /v1/names`: give `node` (an id, a unique start of a known
/// node's id, or another name) the name `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRequest {
    pub name: String,
    pub node: String,
}
