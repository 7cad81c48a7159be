//! Accounting, the fifth pillar in motion: how a node's work turns into
//! ledger entries and how its economic agents act.
//!
//! - [`ledger`]: the ledger service if this node runs it, and the client
//!   and [`Wallet`](fogwire_ledger::client::Wallet) every node has,
//!   reaching the ledger's node through the node's fabric; a hub's
//!   payments signed with the node's key.
//! - [`earn`]: relay and serving receipts taken, signed, handed over and
//!   redeemed, so forwarding and serving are paid.
//! - [`agent`]: a worker's agent, which rates hubs by their record in the
//!   ledger and takes the bids that earn the most.
//!
//! Architecture invariant: no rule of the ledger lives here (those are in
//! `fogwire-ledger-proto`), and nothing of links: other nodes are reached
//! through the [`Fabric`](fogwire_compute::Fabric) the node gives.

pub mod agent;
pub mod earn;
pub mod ledger;
