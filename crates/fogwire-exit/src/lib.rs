//! The tokio driver of fogwire exits.
//!
//! - [`Exit`]: the `exit` service a node offers over routes when it serves
//!   as an exit. A client's route stream starts with a request (an address
//!   or a hostname, and a port; `docs/protocol/exit.md` §5); the exit
//!   resolves the name itself, checks every address against its policy,
//!   connects, answers, and then splices the stream and the connection.
//! - [`Proxy`]: a SOCKS 5 server on a local address that sends each
//!   connection through an exit over a route kept open per isolation
//!   group (the SOCKS username).
//! - [`exits`]: the exits the network advertises, and the choice of one.
//!
//! Architecture invariant: which destinations are refused, and the bytes
//! of every message, are decided in `fogwire-exit-proto`; this crate
//! resolves names, opens sockets, keeps routes and moves bytes.

pub mod choose;
pub mod client;

mod clients;
pub mod config;
mod outbound;
pub mod pay;

pub mod proxy;
mod proxy_udp;
pub mod service;
mod splice;
pub mod udp;

pub use choose::{ExitInfo, exits, pick};
pub use clients::Lease;
pub use outbound::{ExitUsage, Meter, Outbound};
pub use pay::Funds;
pub use proxy::{Proxy, ProxyConfig, ProxyError, ProxyStats};
pub use service::{Exit, ExitConfig, ExitStats, SERVICE, VPN_SERVICE};
