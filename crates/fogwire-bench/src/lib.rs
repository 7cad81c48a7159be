//! Benchmarks behind `fogwire bench`.
//!
//! Every figure is printed beside a baseline measured in the same run on the
//! same machine, because absolute numbers on a shared, noisy machine mean
//! little; the ratio is the result.
//!
//! Architecture invariant: benchmarks drive the real crates through their
//! public APIs, over real sockets; nothing here is a model of them.

pub mod cluster;
pub mod compute;
pub mod find;
pub mod ledger;
pub mod link;
pub mod market;
pub mod msg;
mod nodes;
pub mod punch;
pub mod route;
pub mod routing;
pub mod rpc;
pub mod socks;

pub mod store;
pub mod transfer;
