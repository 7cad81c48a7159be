//! The local control API: HTTP + JSON on a loopback address, every request
//! authenticated with the token in the node's data directory.
//!
//! The server ([`serve`]) knows the node only through the [`NodeApi`]
//! trait, which the node implements; the bodies are `fogwire-api`'s types
//! and the CLI reads them through `fogwire-client`.
//!
//! | method | path                     | body / answer                          |
//! |--------|--------------------------|----------------------------------------|
//! | GET    | /v1/status               | [`fogwire_api::Status`]                 |
//! | GET    | /v1/peers                | list of [`fogwire_api::Peer`]           |
//! | POST   | /v1/peers                | [`fogwire_api::ConnectRequest`] → Peer  |
//! | DELETE | /v1/peers/{node_id}      | [`fogwire_api::DisconnectResponse`]     |
//! | GET    | /v1/nodes                | list of [`fogwire_api::GraphNode`]      |
//! | GET    | /v1/names                | list of [`fogwire_api::NodeName`]       |
//! | POST   | /v1/names                | [`fogwire_api::NameRequest`] → NodeName |
//! | DELETE | /v1/names/{name}         | the NodeName forgotten                  |
//! | POST   | /v1/routes/find          | [`fogwire_api::RouteRequest`] → paths   |
//! | GET    | /v1/routes               | [`fogwire_api::Routes`]                 |
//! | POST   | /v1/routes               | RouteRequest → [`fogwire_api::OpenedRoute`] |
//! | DELETE | /v1/routes/{id}          | [`fogwire_api::ClosedRoute`]            |
//! | POST   | /v1/ping                 | RouteRequest → [`fogwire_api::PingReport`] |
//! | POST   | /v1/routes/send          | RouteRequest → NDJSON [`fogwire_api::SendLine`]s |
//! | GET    | /v1/exits                | [`fogwire_api::ExitsReport`]            |
//! | GET    | /v1/vpn                  | [`fogwire_api::VpnStatus`]              |
//! | POST   | /v1/vpn/up, /v1/vpn/down | [`fogwire_api::VpnUpRequest`] → VpnStatus |
//! | POST   | /v1/proxy                | [`fogwire_api::ProxyRequest`] → NDJSON [`fogwire_api::ProxyLine`]s while read |
//! | POST   | /v1/store/add            | [`fogwire_api::StoreAddRequest`] → NDJSON [`fogwire_api::StoreLine`]s |
//! | POST   | /v1/store/get            | [`fogwire_api::StoreGetRequest`] → NDJSON [`fogwire_api::StoreLine`]s |
//! | GET    | /v1/store/blobs          | list of [`fogwire_api::BlobInfo`]       |
//! | GET    | /v1/store/stat           | [`fogwire_api::StoreStat`]              |
//! | GET    | /v1/store/providers/{hash} | [`fogwire_api::ProvidersReport`]      |
//! | POST   | /v1/store/pin            | [`fogwire_api::PinRequest`] → [`fogwire_api::TagChange`] |
//! | POST   | /v1/store/unpin          | [`fogwire_api::UnpinRequest`] → [`fogwire_api::TagChange`] |
//! | POST   | /v1/store/gc             | [`fogwire_api::GcRequest`] → [`fogwire_api::GcResult`] |
//! | GET    | /blobs/{hash}            | the blob's bytes (Range supported)     |
//! | GET    | /v1/feeds                | list of [`fogwire_api::FeedInfo`]       |
//! | POST   | /v1/feeds                | a new feed → [`fogwire_api::FeedInfo`]  |
//! | GET    | /v1/feeds/{feed}         | [`fogwire_api::FeedInfo`]               |
//! | POST   | /v1/feeds/publish        | [`fogwire_api::PublishRequest`] → FeedInfo |
//! | POST   | /v1/feeds/follow         | [`fogwire_api::FollowRequest`] → FeedInfo |
//! | POST   | /v1/rpc/call             | [`fogwire_api::RpcCallRequest`] → NDJSON [`fogwire_api::RpcLine`]s |
//! | POST   | /v1/jobs                 | [`fogwire_api::JobSubmitRequest`] → [`fogwire_api::JobSubmitted`] |
//! | GET    | /v1/jobs[?hub=]          | list of [`fogwire_api::JobInfo`]        |
//! | GET    | /v1/jobs/{job}[?hub=]    | [`fogwire_api::JobInfo`]                |
//! | GET    | /v1/jobs/{job}/logs[?from=&hub=] | [`fogwire_api::JobLogs`]        |
//! | GET    | /v1/jobs/{job}/result    | [`fogwire_api::JobResultInfo`]          |
//! | POST   | /v1/jobs/{job}/fetch     | [`fogwire_api::JobFetchRequest`] → [`fogwire_api::JobFetched`] |
//! | POST   | /v1/jobs/{job}/cancel    | [`fogwire_api::JobCancelled`]           |
//! | GET    | /v1/workers[?hub=]       | list of [`fogwire_api::WorkerInfo`]     |
//! | GET    | /v1/ledger               | [`fogwire_api::LedgerInfo`]             |
//! | GET    | /v1/ledger/accounts/{who} | [`fogwire_api::LedgerAccount`] (`me`, an id or its start) |
//! | GET    | /v1/ledger/accounts/{who}/history[?before=&limit=] | list of [`fogwire_api::LedgerHistoryLine`] |
//! | POST   | /v1/ledger/ops           | [`fogwire_api::LedgerOpRequest`] → [`fogwire_api::LedgerReceipt`] |
//! | POST   | /v1/ledger/submit        | [`fogwire_api::LedgerSubmitRequest`] → [`fogwire_api::LedgerReceipt`] |
//! | GET    | /v1/hubs                 | list of [`fogwire_api::HubView`] (a worker's agent) |
//! | GET    | /v1/market/asks[?hub=]   | list of [`fogwire_api::MarketOrder`]    |
//! | GET    | /v1/market/bids[?hub=]   | list of [`fogwire_api::MarketOrder`]    |
//! | GET    | /v1/market/deals[?hub=&limit=] | list of [`fogwire_api::MarketDeal`] |
//! | GET    | /v1/market/events[?hub=&limit=] | list of [`fogwire_api::MarketEvent`] |
//! | POST   | /v1/market/ask           | [`fogwire_api::MarketAskRequest`] → [`fogwire_api::MarketPosted`] |
//! | POST   | /v1/market/bid           | [`fogwire_api::MarketBidRequest`] → [`fogwire_api::MarketPosted`] |
//! | POST   | /v1/market/cancel        | [`fogwire_api::MarketCancelRequest`] → true |
//! | POST   | /v1/msg/send             | [`fogwire_api::MsgSendRequest`] → [`fogwire_api::MessageView`] |
//! | GET    | /v1/msg/inbox[?limit=&peek=] | list of [`fogwire_api::MessageView`] (read unless peek) |
//! | GET    | /v1/msg/history/{peer}[?search=&limit=&peek=] | list of [`fogwire_api::MessageView`] |
//! | GET    | /v1/msg/contacts         | list of [`fogwire_api::ContactView`]    |
//! | GET    | /v1/msg/follow           | NDJSON [`fogwire_api::MessageView`]s as they change |
//! | GET    | /metrics                 | OpenMetrics text                       |
//! | GET    | /, /dash                 | 303 to /dash/                          |
//! | GET    | /dash/, /dash/box        | the live dashboard's pages             |
//! | GET    | /dash/events?view=       | server-sent events: a snapshot, then what changed each second |
//! | GET    | /dash/login?token=       | the token for a read-only cookie, then /dash/ |
//!
//! Requests carry `Authorization: Bearer <token>`, or for GET and HEAD the
//! cookie `/dash/login` sets. Errors answer with a status code and
//! [`fogwire_api::ErrorBody`]. `[web]` ([`config::WebSection`]) serves the
//! dashboard, the gateway and `/metrics` read-only to other machines.

mod cluster;
pub mod config;
mod dash;
mod exits;
mod feeds;
mod groups;
mod jobs;
mod ledger;
mod market;
mod metrics;
mod msg;
pub mod names;
mod ndjson;
mod prefix;
mod routes;
pub mod rpc;
mod server;
mod site;
mod stall;
mod store;
mod web;

pub use store::parse_byte_range;
mod token;

pub use server::{ControlError, bind, serve, serve_with_web};
pub use token::ApiToken;
pub use web::bind_web;

use std::sync::Arc;

use fogwire_compute::Fabric;
use fogwire_identity::NodeId;
use fogwire_ledger::client::{LedgerClient, Wallet};
use fogwire_link::PeerAddr;
use fogwire_replicate::Replication;
use fogwire_route::Routing;
use fogwire_rpc::Rpc;
use fogwire_store::Store;

/// A future boxed for the trait object.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why `POST /v1/peers` could not link.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    #[error("that is this node's own id")]
    SelfConnect,
    #[error(transparent)]
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

/// The node as the control API sees it: its own reports and links, and
/// the subsystems the endpoints drive. The node implements it; the server
/// reaches nothing else of the node.
pub trait NodeApi: Send + Sync + 'static {
    fn node_id(&self) -> NodeId;
    /// `GET /v1/status`; `data_dir` is where the node keeps its files.
    fn status(&self) -> fogwire_api::Status;
    /// Every linked or wanted peer.
    fn peers(&self) -> Vec<fogwire_api::Peer>;
    /// Links to a peer now and keeps the link up.
    fn connect(&self, peer: PeerAddr) -> BoxFuture<'_, Result<(), ConnectError>>;
    /// Makes a direct link to a node reached over routes (hole punching
    /// through NATs, relay.md §3).
    fn direct(&self, peer: NodeId) -> BoxFuture<'_, Result<(), ConnectError>>;
    /// Stops keeping `peer` linked and closes its link: `None` if it was
    /// neither linked nor wanted, else whether it was linked.
    fn disconnect(&self, peer: NodeId) -> BoxFuture<'_, Option<bool>>;
    /// The node's metrics in the OpenMetrics text format.
    fn metrics_text(&self) -> String;
    fn routing(&self) -> &Routing;
    /// The store; blocking: call it from blocking threads.
    fn store(&self) -> &Arc<Store>;
    fn replication(&self) -> &Replication;
    fn rpc(&self) -> &Rpc;
    /// How compute reaches other nodes from this one.
    fn fabric(&self) -> Arc<dyn Fabric>;
    /// Reads and raw submissions to the ledger, wherever it runs.
    fn ledger(&self) -> Option<&LedgerClient>;
    /// The node that runs the ledger: the one configured, else the one
    /// that advertises it.
    fn ledger_node(&self) -> BoxFuture<'_, Option<NodeId>>;
    /// Transactions signed with this node's key.
    fn wallet(&self) -> Option<Arc<Wallet>>;
    /// What a worker's agent knows of hubs.
    fn hubs(&self) -> Vec<fogwire_api::HubView>;
    /// This node's exit and its configured SOCKS proxy, if any.
    fn exit(&self) -> Option<&fogwire_exit::Exit>;
    fn proxy(&self) -> Option<&fogwire_exit::Proxy>;
    /// What the node's proxies share (a proxy started here joins it).
    fn outbound(&self) -> &Arc<fogwire_exit::Outbound>;
    /// The node's VPN, up or down.
    fn vpn(&self) -> &fogwire_vpn::Switch;
    /// The board's cluster.
    fn cluster(&self) -> &fogwire_cluster::Cluster;
    /// The node's messenger, if it runs one.
    fn messenger(&self) -> Option<&fogwire_msg::Messenger>;
    /// The compute roles this node runs, configured or placed here by
    /// its cluster.
    fn compute_roles(&self) -> ComputeRoles {
        ComputeRoles::default()
    }
}

/// A node's compute roles, each if it runs it.
#[derive(Clone, Default)]
pub struct ComputeRoles {
    pub worker: Option<fogwire_compute::worker::Worker>,
    pub hub: Option<fogwire_compute::hub::Hub>,
    pub market: Option<fogwire_compute::market::Market>,
}

impl std::fmt::Debug for ComputeRoles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComputeRoles")
            .field("worker", &self.worker.is_some())
            .field("hub", &self.hub.is_some())
            .field("market", &self.market.is_some())
            .finish()
    }
}
