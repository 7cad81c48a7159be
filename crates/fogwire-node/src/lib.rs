//! The fogwire daemon.
//!
//! Composes identity and links into a running node: reads the
//! configuration, keeps the data directory, accepts and dials links
//! (reconnecting to configured peers with backoff), serves the local control
//! API and metrics, and shuts down cleanly. Later pillars (routes, store,
//! compute) plug into the [`Node`] here.
//!
//! Architecture invariant: no protocol logic lives here. The node decides
//! *which* links exist and *who* may use them; how bytes cross a link is
//! `fogwire-link`'s business.

pub mod agent;
pub mod api;
mod backoff;
pub mod compute;
pub mod config;
pub mod control;
pub mod earn;
pub mod home;
pub mod ledger;
pub mod locator;
mod metrics;
mod node;
mod peer_addr;

pub use backoff::Backoff;
pub use compute::ComputeOptions;
pub use config::{Config, ConfigError};
pub use ledger::LedgerOptions;
pub use node::{Node, NodeError, NodeEvent, NodeOptions, StoreRoute, StoreRouteError};
pub use peer_addr::{ParsePeerAddrError, PeerAddr};
