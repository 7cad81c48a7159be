//! Exits and the SOCKS proxy: `GET /v1/exits`, `POST /v1/proxy`.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// One exit the network advertises.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitEntry {
    pub node_id: String,
    /// Price per GiB carried, in units (a coin is 1 000 000).
    pub price_per_gib: u64,
    /// Its policy summary, from its advert.
    pub policy: String,
    /// The best path's advertised one-way latency; none: no path.
    pub latency_ms: Option<f64>,
    pub hops: Option<usize>,
    /// Whether it forwards VPN packets too (`fogwire vpn up --exit`).
    #[serde(default)]
    pub vpn: bool,
}

/// This node as an exit: its terms and counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitServing {
    pub policy: String,
    pub price_per_gib: u64,
    pub client_kbps: u32,
    pub streams: u64,
    pub connected: u64,
    pub refused: u64,
    pub failed: u64,
    pub busy: u64,
    /// Bytes sent to destinations, and received from them.
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub clients_now: u64,
    /// UDP datagrams sent for clients and answers passed back; refused by
    /// the policy; dropped (malformed, over a limit, unsolicited).
    pub udp_sent: u64,
    pub udp_received: u64,
    pub udp_refused: u64,
    pub udp_dropped: u64,
}

/// A SOCKS proxy of this node: where, through what, and its counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyStatus {
    pub listen: SocketAddr,
    /// The exit it uses when a username names none; none: it picks.
    pub exit: Option<String>,
    pub min_hops: usize,
    pub connections: u64,
    pub connected: u64,
    pub failed: u64,
    pub turned_away: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// UDP datagrams relayed to exits and answers passed back; dropped;
    /// too large for a route.
    pub udp_sent: u64,
    pub udp_received: u64,
    pub udp_dropped: u64,
    pub udp_oversized: u64,
    pub routes: Vec<ProxyRoute>,
}

/// A route a proxy keeps for an isolation group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyRoute {
    /// The SOCKS username's group ("" without a username).
    pub group: String,
    /// The exit the username named, as written.
    pub named_exit: Option<String>,
    pub exit: String,
    pub route: u64,
}

/// `GET /v1/exits`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitsReport {
    /// Other nodes' exits, cheapest first, then nearest.
    pub exits: Vec<ExitEntry>,
    /// This node, if it serves as an exit.
    pub serving: Option<ExitServing>,
    /// This node's configured proxy (`[socks]`), if any.
    pub proxy: Option<ProxyStatus>,
    /// What exits carried for this node's proxies, and what it sent them
    /// receipts for (charging exits).
    #[serde(default)]
    pub usage: Vec<ExitUsage>,
}

/// What one exit carried for this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitUsage {
    pub exit: String,
    /// Bytes both ways since this node started.
    pub bytes: u64,
    pub price_per_gib: u64,
    /// Bytes covered by the receipts sent (0 for a free exit).
    pub receipted: u64,
}

/// The body of `POST /v1/proxy`: a proxy that lives as long as the
/// request's answer is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyRequest {
    /// Must be a loopback address unless `public` is set.
    pub listen: SocketAddr,
    /// An exit's node id, or a prefix of one; none: the cheapest, nearest.
    #[serde(default)]
    pub exit: Option<String>,
    #[serde(default)]
    pub min_hops: Option<usize>,
}

/// A line of `POST /v1/proxy`: the proxy's status, at start and then
/// every second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyLine {
    Status(ProxyStatus),
    Error(String),
}

/// `GET /v1/vpn`, and the answer of `POST /v1/vpn/up`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VpnStatus {
    pub up: bool,
    pub device: Option<String>,
    /// This node's address (whether the VPN is up or not).
    pub address: String,
    pub mtu: Option<u16>,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub packets_in: u64,
    pub bytes_in: u64,
    pub dropped_out: u64,
    pub dropped_in: u64,
    /// Datagrams whose source address was not their sender's own.
    pub spoofed: u64,
    pub routes: u64,
    /// This node's IPv4 address on the device, through an exit or as one.
    #[serde(default)]
    pub ipv4: Option<String>,
    /// The exit the default routes go through.
    #[serde(default)]
    pub exit: Option<String>,
    /// Whether the lease on that exit holds now.
    #[serde(default)]
    pub exit_leased: bool,
    /// This node as a VPN exit.
    #[serde(default)]
    pub gateway: Option<VpnGateway>,
}

/// A node's VPN gateway, as an exit: its leased clients and packets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VpnGateway {
    pub clients: u64,
    pub forwarded: u64,
    pub answered: u64,
    pub refused: u64,
    pub dropped: u64,
    pub spoofed: u64,
}

/// The body of `POST /v1/vpn/up`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VpnUpRequest {
    /// Carry IPv4 and IPv6 default routes through this exit (a node id
    /// or name).
    #[serde(default)]
    pub exit: Option<String>,
    /// Links on the route to the exit, at least (default 1).
    #[serde(default)]
    pub min_hops: Option<usize>,
}
