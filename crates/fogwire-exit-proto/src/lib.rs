//! The sans-IO core of fogwire exits: nodes that forward their clients'
//! traffic from routes to the networks they can reach.
//!
//! - [`policy`]: which destinations an exit forwards to — refusing by
//!   default every address that is not public unicast, and the exit
//!   host's own networks — and the short summary it advertises.
//! - [`wire`]: the request that opens a stream to an exit (an address, or
//!   a hostname the exit resolves) and the exit's reply.
//! - [`socks`]: the server's side of SOCKS 5, for the node's proxy.
//! - [`address`]: every node's IPv6 address (and IPv4 address, for traffic
//!   through an exit), derived from its id.
//! - [`packet`]: what the VPN reads of an IP packet (its addresses, and a
//!   TCP or UDP destination port for an exit's policy).
//!
//! No sockets, no clock, no file system: the exit's driver resolves names,
//! opens connections and hands the addresses to [`policy::Policy::check`].

pub mod address;
pub mod packet;
pub mod policy;

pub mod socks;
pub mod wire;

pub use policy::{Policy, PortRange, Refusal};
