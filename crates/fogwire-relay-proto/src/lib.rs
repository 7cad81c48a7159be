//! Sans-IO core of how nodes behind NATs are reached (`docs/protocol/relay.md`).
//!
//! - [`wire`]: the messages of the reachability channel (`0x0500`), byte
//!   by byte.
//! - [`reach`]: [`reach::Reach`], one node's view of whether others can
//!   dial it — the addresses its peers see it at, the dial-back checks it
//!   asks of them and answers for them, and what it should advertise.
//! - [`relays`]: a relay's [`relays::Clients`], and the [`relays::Relays`]
//!   a node others cannot dial keeps links to.
//! - [`punch`]: the messages two nodes swap to make a direct link through
//!   their NATs, and the bounds of the punching a node does for others.
//!
//! Time comes in as arguments and bytes go out as buffers: no sockets, no
//! clock reads, no tasks.

pub mod punch;
pub mod reach;
pub mod relays;
pub mod wire;

pub use reach::{Action, AddressState, Reach, Reachability, Report, Settings};
pub use relays::{
    Candidate, ClientSettings, Clients, RelayAction, RelayState, Relays, ServeSettings,
};
pub use wire::{CHANNEL_REACH, DialOutcome, Malformed, Message, ReserveOutcome};
