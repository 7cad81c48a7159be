//! Hubs' markets, and the hubs a worker's agent knows.

use serde::{Deserialize, Serialize};

/// What an order offers or needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketResources {
    #[serde(default)]
    pub cores: u32,
    #[serde(default)]
    pub memory_mib: u64,
    #[serde(default)]
    pub gpus: u32,
    /// `wasm`, `docker`.
    #[serde(default)]
    pub runtimes: Vec<String>,
}

/// `POST /v1/market/ask`: this node offers work at a hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketAskRequest {
    /// The hub (id or start of one); default: the first known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<String>,
    pub offer: MarketResources,
    /// Tasks taken at once.
    pub slots: u32,
    /// Ledger units per `unit`.
    pub price: u64,
    pub ttl_secs: u64,
    /// `task` (default), `gfuel`, `cpu_second`, `gb_stored` or
    /// `gb_served`: orders in different units never match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// `POST /v1/market/bid`: this node asks for work at a hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketBidRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<String>,
    pub need: MarketResources,
    /// The most paid per `unit` and worker, in ledger units.
    pub max_price: u64,
    pub replicas: u8,
    pub ttl_secs: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// `POST /v1/market/cancel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketCancelRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<String>,
    pub id: u64,
}

/// A resting order of a hub's book.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketOrder {
    pub hub: String,
    pub id: u64,
    /// `ask` or `bid`.
    pub side: String,
    /// The worker (asks) or buyer (bids).
    pub party: String,
    pub resources: MarketResources,
    /// The ask's price, or the bid's maximum, per `unit` (ledger units).
    pub price: u64,
    /// What the price is per: task, gfuel, cpu_second, gb_stored, gb_served.
    pub unit: String,
    /// Asks: slots offered; bids: replicas wanted.
    pub size: u32,
    /// Asks: slots left; bids: replicas filled so far.
    pub filled_or_left: u32,
    pub expires_ms: u64,
}

/// One worker's slot taken for a bid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketFill {
    pub bid: u64,
    pub ask: u64,
    pub worker: String,
    pub price: u64,
}

/// A bid filled with all its replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketDeal {
    pub hub: String,
    pub bid: u64,
    pub buyer: String,
    pub fills: Vec<MarketFill>,
    /// Per task, all replicas (units).
    pub price: u64,
    pub time_ms: u64,
}

/// What posting an order did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketPosted {
    pub hub: String,
    pub id: u64,
    pub fills: Vec<MarketFill>,
    pub deals: Vec<MarketDeal>,
}

/// Something that happened in a hub's book.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketEvent {
    pub time_ms: u64,
    /// `posted`, `filled`, `dealt`, `cancelled` or `expired`.
    pub kind: String,
    /// The order it concerns (a fill's or deal's bid).
    pub order: u64,
    /// In words.
    pub text: String,
}

/// `GET /v1/hubs`: a hub as a worker's agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubView {
    pub hub: String,
    /// unverified, verified, reliable or avoided.
    pub trust: String,
    /// The terms it advertises: price per task, per 10⁹ fuel, fee %.
    pub terms: Option<(u64, u64, u8)>,
    pub payments_to_me: u32,
    /// Tasks done for it (past a 30-minute grace) that it has not paid
    /// for; at 20 it is avoided until it pays.
    #[serde(default)]
    pub unpaid_tasks: u32,
    /// Bids resting there this worker could serve, and how many it took
    /// on its last look.
    pub bids: usize,
    pub taken: usize,
}
