//! The local control API: HTTP + JSON on a loopback address, every request
//! authenticated with the token in the data directory.
//!
//! | method | path                     | body / answer                          |
//! |--------|--------------------------|----------------------------------------|
//! | GET    | /v1/status               | [`crate::api::Status`]                 |
//! | GET    | /v1/peers                | list of [`crate::api::Peer`]           |
//! | POST   | /v1/peers                | [`crate::api::ConnectRequest`] → Peer  |
//! | DELETE | /v1/peers/{node_id}      | [`crate::api::DisconnectResponse`]     |
//! | GET    | /metrics                 | OpenMetrics text                       |
//!
//! Requests carry `Authorization: Bearer <token>`. Errors answer with a
//! status code and [`crate::api::ErrorBody`].

mod client;
mod server;

pub use client::{Client, ClientError};
pub use server::{ControlError, bind, serve};
