//! The local control API: HTTP + JSON on a loopback address, every request
//! authenticated with the token in the data directory.
//!
//! | method | path                     | body / answer                          |
//! |--------|--------------------------|----------------------------------------|
//! | GET    | /v1/status               | [`crate::api::Status`]                 |
//! | GET    | /v1/peers                | list of [`crate::api::Peer`]           |
//! | POST   | /v1/peers                | [`crate::api::ConnectRequest`] → Peer  |
//! | DELETE | /v1/peers/{node_id}      | [`crate::api::DisconnectResponse`]     |
//! | GET    | /v1/nodes                | list of [`crate::api::GraphNode`]      |
//! | POST   | /v1/routes/find          | [`crate::api::RouteRequest`] → paths   |
//! | GET    | /v1/routes               | [`crate::api::Routes`]                 |
//! | POST   | /v1/routes               | RouteRequest → [`crate::api::OpenedRoute`] |
//! | DELETE | /v1/routes/{id}          | [`crate::api::ClosedRoute`]            |
//! | POST   | /v1/ping                 | RouteRequest → [`crate::api::PingReport`] |
//! | POST   | /v1/routes/send          | RouteRequest → NDJSON [`crate::api::SendLine`]s |
//! | POST   | /v1/store/add            | [`crate::api::StoreAddRequest`] → NDJSON [`crate::api::StoreLine`]s |
//! | POST   | /v1/store/get            | [`crate::api::StoreGetRequest`] → NDJSON [`crate::api::StoreLine`]s |
//! | GET    | /v1/store/blobs          | list of [`crate::api::BlobInfo`]       |
//! | GET    | /v1/store/stat           | [`crate::api::StoreStat`]              |
//! | POST   | /v1/store/pin            | [`crate::api::PinRequest`] → [`crate::api::TagChange`] |
//! | POST   | /v1/store/unpin          | [`crate::api::UnpinRequest`] → [`crate::api::TagChange`] |
//! | POST   | /v1/store/gc             | [`crate::api::GcRequest`] → [`crate::api::GcResult`] |
//! | GET    | /blobs/{hash}            | the blob's bytes (Range supported)     |
//! | GET    | /v1/feeds                | list of [`crate::api::FeedInfo`]       |
//! | POST   | /v1/feeds                | a new feed → [`crate::api::FeedInfo`]  |
//! | GET    | /v1/feeds/{feed}         | [`crate::api::FeedInfo`]               |
//! | POST   | /v1/feeds/publish        | [`crate::api::PublishRequest`] → FeedInfo |
//! | POST   | /v1/feeds/follow         | [`crate::api::FollowRequest`] → FeedInfo |
//! | POST   | /v1/rpc/call             | [`crate::api::RpcCallRequest`] → NDJSON [`crate::api::RpcLine`]s |
//! | POST   | /v1/jobs                 | [`crate::api::JobSubmitRequest`] → [`crate::api::JobSubmitted`] |
//! | GET    | /v1/jobs[?hub=]          | list of [`crate::api::JobInfo`]        |
//! | GET    | /v1/jobs/{job}[?hub=]    | [`crate::api::JobInfo`]                |
//! | GET    | /v1/jobs/{job}/logs[?from=&hub=] | [`crate::api::JobLogs`]        |
//! | GET    | /v1/jobs/{job}/result    | [`crate::api::JobResultInfo`]          |
//! | POST   | /v1/jobs/{job}/fetch     | [`crate::api::JobFetchRequest`] → [`crate::api::JobFetched`] |
//! | POST   | /v1/jobs/{job}/cancel    | [`crate::api::JobCancelled`]           |
//! | GET    | /v1/workers[?hub=]       | list of [`crate::api::WorkerInfo`]     |
//! | GET    | /v1/ledger               | [`crate::api::LedgerInfo`]             |
//! | GET    | /v1/ledger/accounts/{who} | [`crate::api::LedgerAccount`] (`me`, an id or its start) |
//! | GET    | /v1/ledger/accounts/{who}/history[?before=&limit=] | list of [`crate::api::LedgerHistoryLine`] |
//! | POST   | /v1/ledger/ops           | [`crate::api::LedgerOpRequest`] → [`crate::api::LedgerReceipt`] |
//! | POST   | /v1/ledger/submit        | [`crate::api::LedgerSubmitRequest`] → [`crate::api::LedgerReceipt`] |
//! | GET    | /v1/hubs                 | list of [`crate::agent::HubView`] (a worker's agent) |
//! | GET    | /v1/market/asks[?hub=]   | list of [`crate::api::MarketOrder`]    |
//! | GET    | /v1/market/bids[?hub=]   | list of [`crate::api::MarketOrder`]    |
//! | GET    | /v1/market/deals[?hub=&limit=] | list of [`crate::api::MarketDeal`] |
//! | GET    | /v1/market/events[?hub=&limit=] | list of [`crate::api::MarketEvent`] |
//! | POST   | /v1/market/ask           | [`crate::api::MarketAskRequest`] → [`crate::api::MarketPosted`] |
//! | POST   | /v1/market/bid           | [`crate::api::MarketBidRequest`] → [`crate::api::MarketPosted`] |
//! | POST   | /v1/market/cancel        | [`crate::api::MarketCancelRequest`] → true |
//! | GET    | /metrics                 | OpenMetrics text                       |
//!
//! Requests carry `Authorization: Bearer <token>`. Errors answer with a
//! status code and [`crate::api::ErrorBody`].

mod client;
mod feeds;
mod jobs;
mod ledger;
mod market;
mod ndjson;
mod routes;
pub mod rpc;
mod server;
mod store;

pub use client::{Client, ClientError};
pub use server::{ControlError, bind, serve};
