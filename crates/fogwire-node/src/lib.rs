//! The fogwire daemon: the composition root.
//!
//! Reads the configuration ([`config`]), keeps the data directory
//! ([`home`]), builds every subsystem in order and hands each what it
//! needs ([`Node::start`]), manages the links it accepts and dials
//! ([`Links`]: reconnecting to configured peers with backoff), and
//! implements the control API's [`NodeApi`](fogwire_control::NodeApi).
//!
//! Architecture invariant: no protocol logic lives here, and no subsystem
//! holds the node: each owns its state and is handed what it needs when
//! it is built. The node decides *which* links exist and *who* may use
//! them; what crosses them is the subsystems' business.

pub mod config;
mod control_api;
mod fabric;
pub mod home;
mod links;
mod node;

pub use config::{Config, ConfigError};
pub use fogwire_account::ledger::LedgerOptions;
pub use fogwire_compute::roles::ComputeOptions;
pub use fogwire_link::{ParsePeerAddrError, PeerAddr};
pub use links::{LinkError, LinkLimits, Links, NodeEvent};
pub use node::{Node, NodeBuilder, NodeError, NodeOptions, Parts};
