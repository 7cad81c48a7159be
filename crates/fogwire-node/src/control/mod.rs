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
//! | GET    | /metrics                 | OpenMetrics text                       |
//!
//! Requests carry `Authorization: Bearer <token>`. Errors answer with a
//! status code and [`crate::api::ErrorBody`].

mod client;
mod routes;
mod server;

pub use client::{Client, ClientError};
pub use server::{ControlError, bind, serve};
