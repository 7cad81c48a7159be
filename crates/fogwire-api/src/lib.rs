//! The JSON bodies of the control API (`docs/control-api.md`), one module
//! per domain. Shared by the server that answers with them
//! (`fogwire-control`) and the client that reads them (`fogwire-client`).
//!
//! Architecture invariant: plain data with serde derives, nothing else. It
//! knows no HTTP, no node and no protocol crate; every field is a string,
//! a number or a structure of them, so that the API stays stable when the
//! crates behind it change.

pub mod cluster;
pub mod exits;
pub mod feeds;
pub mod jobs;
pub mod ledger;
pub mod market;
pub mod msg;
pub mod node;
pub mod routes;
pub mod rpc;
pub mod store;

pub use cluster::*;
pub use exits::*;
pub use feeds::*;
pub use jobs::*;
pub use ledger::*;
pub use market::*;
pub use msg::*;
pub use node::*;
pub use routes::*;
pub use rpc::*;
pub use store::*;
