//! Routing: the known graph, paths, routes, pings, transfer checks.

use serde::{Deserialize, Serialize};

/// One node of `GET /v1/nodes`: what its latest advert says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphNode {
    pub node_id: String,
    /// This is the node answering.
    pub this_node: bool,
    /// Linked to the node answering.
    pub neighbour: bool,
    pub seq: u64,
    pub issued_at_unix_ms: u64,
    pub expires_at_unix_ms: u64,
    pub addresses: Vec<String>,
    pub services: Vec<String>,
    pub links: Vec<GraphLink>,
}

/// A link a node advertises.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphLink {
    pub node_id: String,
    /// One-way estimate: half the link's round-trip time.
    pub latency_ms: f64,
    pub capacity_kbps: u32,
}

/// What a path must respect; the body of `POST /v1/routes/find`,
/// `POST /v1/routes`, `POST /v1/ping` and `POST /v1/routes/send`, each
/// taking the fields it needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RouteRequest {
    /// The destination: a node id, or a prefix of one that names a single
    /// known node.
    pub node: String,
    /// Exactly this many links (sets both bounds).
    pub hops: Option<usize>,
    pub min_hops: Option<usize>,
    pub max_hops: Option<usize>,
    /// Nodes (ids or unique prefixes) the path must not pass through.
    pub avoid: Vec<String>,
    /// The node the path must reach the destination from.
    pub exit: Option<String>,
    /// `find`: how many node-disjoint paths (default 1, at most 8).
    pub alternatives: Option<usize>,
    /// `ping`: how many pings (default 4, at most 100).
    pub count: Option<u32>,
    /// `ping`: pause between pings (default 200 ms).
    pub interval_ms: Option<u64>,
    /// `send`: bytes to send (default 64 MiB).
    pub bytes: Option<u64>,
}

/// A path of `POST /v1/routes/find`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoundPath {
    /// From this node to the destination.
    pub nodes: Vec<String>,
    pub hops: usize,
    /// Sum of the advertised one-way latencies.
    pub latency_ms: f64,
}

/// `POST /v1/routes`: a route that is up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenedRoute {
    pub id: u64,
    /// Hops after this node; the last is the destination.
    pub path: Vec<String>,
    pub setup_ms: f64,
    pub latency_ms: f64,
}

/// Where a route this node opened stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteStatus {
    SettingUp,
    Up,
    Repairing,
}

/// Bytes and packets, each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteCounters {
    pub bytes_forward: u64,
    pub bytes_backward: u64,
    pub packets_forward: u64,
    pub packets_backward: u64,
}

/// A route of `GET /v1/routes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteEntry {
    pub id: u64,
    pub path: Vec<String>,
    pub status: RouteStatus,
    /// Everything it carried, across repairs.
    pub counters: RouteCounters,
    pub repairs: u32,
    pub setup_ms: Option<f64>,
    pub streams: usize,
}

/// A route this node relays for others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransitEntry {
    pub label: u32,
    /// The neighbour towards the route's source.
    pub prev: Option<String>,
    /// The neighbour towards its destination.
    pub next: Option<String>,
    pub counters: RouteCounters,
}

/// Counters of a node's routing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingStats {
    pub adverts_sent: u64,
    pub adverts_accepted: u64,
    pub adverts_refused: u64,
    pub adverts_dropped: u64,
    pub data_dropped: u64,
    pub control_dropped: u64,
    pub routes_broken: u64,
    pub routes_repaired: u64,
    /// Of those, moved onto a shorter path that appeared.
    #[serde(default)]
    pub routes_moved: u64,
    pub receipts_received: u64,
    pub receipts_stored: u64,
    /// Datagrams for a port no service holds, or a full service queue.
    #[serde(default)]
    pub datagrams_dropped: u64,
    /// Session packets that failed to open at this end (altered on the
    /// way, or replayed) and were dropped.
    #[serde(default)]
    pub session_packets_rejected: u64,
}

/// `GET /v1/routes`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Routes {
    pub routes: Vec<RouteEntry>,
    pub transit: Vec<TransitEntry>,
    pub stats: RoutingStats,
}

/// `DELETE /v1/routes/{id}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosedRoute {
    pub id: u64,
}

/// `POST /v1/ping`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PingReport {
    pub path: Vec<String>,
    pub setup_ms: f64,
    /// One per ping; none for a ping that got no answer in time.
    pub rtts_ms: Vec<Option<f64>>,
}

/// A line of `POST /v1/routes/send`'s answer, which streams one JSON
/// object per line: progress, then the result (or an error).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SendLine {
    /// The route is up.
    Route(OpenedRoute),
    /// Bytes written so far.
    Progress(u64),
    Result(SendReport),
    Error(String),
}

/// What a transfer to the destination's `sink` showed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendReport {
    pub path: Vec<String>,
    pub bytes: u64,
    pub secs: f64,
    pub mbit_per_sec: f64,
    /// The sink received exactly what was sent (count and BLAKE3).
    pub intact: bool,
    pub sent_blake3: String,
    pub received_blake3: String,
    pub received_bytes: u64,
    /// Times the route moved to a new path during the transfer.
    pub repairs: u32,
}
