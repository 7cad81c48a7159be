//! The tokio driver of fogwire links.
//!
//! All protocol decisions live in `fogwire-link-proto`; this crate only moves
//! bytes between a stream (TCP, or QUIC over UDP: [`quic`]) and the sans-IO core, reads the clock, and
//! hands messages to and from the application through bounded channels:
//!
//! - [`establish`] runs a handshake on a connected stream (dialer or
//!   listener side) within the handshake timeout;
//! - [`spawn`] starts the task that drives an established link and returns
//!   a [`LinkHandle`];
//! - [`ChannelSender`] / [`ChannelReceiver`] carry one channel's messages.
//!   Receiving returns flow-control credit to the peer, so a slow consumer
//!   slows its sender down instead of growing any buffer.
//!
//! Architecture invariant: no protocol logic here. If a behaviour can be
//! decided without a socket or a clock, it belongs in the core.

pub mod admission;
pub mod book;
mod channel;
mod driver;
mod establish;
pub mod manager;
pub mod metrics;
mod peer_addr;
pub mod quic;
pub mod refusals;
pub mod slots;
mod transport;

pub use channel::{ChannelReceiver, ChannelSendError, ChannelSender};
pub use driver::{LinkCounters, LinkHandle, LinkSnapshot, NoAnswer, spawn};
pub use establish::{
    Direction, EstablishError, Established, HUNG_UP, SOCKET_MARK, connect, connect_quic,
    connect_stream, dial, establish, establish_asking, establish_within, listen, listen_hint, mark,
    probe,
};
pub use fogwire_link_proto as proto;
pub use peer_addr::{ParsePeerAddrError, PeerAddr};
pub use transport::{LinkStream, QuicStream, Transport};

/// A subsystem that runs over links (routing, replication, RPC): the link
/// manager tells it of every link that comes up and goes down.
pub trait LinkUser: Send + Sync {
    /// A link came up; the user takes its channels.
    fn link_up(&self, link: LinkHandle);
    /// The link `link_id` (from [`LinkHandle::id`]) to `peer` is gone.
    fn link_down(&self, peer: fogwire_identity::NodeId, link_id: u64);
    /// A connection from `remote` reached the node's listener, before any
    /// handshake or admission (what reachability checks count on). Must
    /// not block.
    fn accepted(&self, remote: std::net::SocketAddr) {
        let _ = remote;
    }
}
