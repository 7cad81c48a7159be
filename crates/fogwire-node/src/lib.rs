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
mod backoff;
pub mod compute;
pub mod config;
mod control_api;
pub mod earn;
pub mod home;
pub mod ledger;
mod metrics;
mod node;

pub use backoff::Backoff;
pub use compute::ComputeOptions;
pub use config::{Config, ConfigError};
pub use fogwire_link::{ParsePeerAddrError, PeerAddr};
pub use ledger::LedgerOptions;
pub use node::{Node, NodeError, NodeEvent, NodeOptions};
