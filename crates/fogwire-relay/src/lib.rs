//! How fogwire nodes behind NATs are reached (`docs/protocol/relay.md`).
//!
//! [`reach::Reachable`] is the tokio driver of reachability: it tells every
//! linked peer where it sees it, asks peers to dial this node back, answers
//! their checks by dialing them, and keeps the node's advert naming the
//! addresses others can dial (and `reach:private` while they cannot); as
//! a relay (`[relay] serve`) it answers reservations, and while the node
//! is private it keeps links with reservations at relays. [`punch`] makes
//! direct links between nodes behind NATs (hole punching over QUIC).

pub mod config;
pub mod punch;
pub mod reach;

pub use config::RelaySection;
pub use fogwire_relay_proto as proto;
pub use punch::PunchError;
pub use reach::{Options, PRIVATE_SERVICE, QUIC_SERVICE, Reachable, Status};

use fogwire_link::proto::{ChannelConfig, ChannelId, WINDOW_MIN};

/// The link channels reachability serves: `0x0500`, whose messages are a
/// few bytes each.
pub fn link_channels() -> Vec<ChannelConfig> {
    vec![ChannelConfig::new(ChannelId(proto::CHANNEL_REACH)).with_receive_window(WINDOW_MIN)]
}
