//! The sans-IO core of a fogwire link.
//!
//! A link is one TCP connection between two nodes, encrypted and
//! authenticated with Noise (`Noise_XX_25519_ChaChaPoly_SHA256`), whose static
//! keys are certified by the nodes' Ed25519 identities. On top of it, several
//! logical channels are multiplexed, each with credit-based flow control, plus
//! keepalives and an idle timeout.
//!
//! This crate contains no networking code and never reads the clock: bytes
//! and the current time go in through `handle_*` methods, bytes to send and
//! events come out through `poll_*` methods. That makes every behaviour
//! testable deterministically, with virtual time, in memory. The tokio driver
//! lives in `fogwire-link`.
//!
//! - [`Handshake`]: the three-message Noise XX handshake; yields a [`Link`].
//! - [`Link`]: framing, multiplexing, flow control, keepalive, close.
//! - [`frame`]: the plaintext frame codec.
//! - [`record`]: the length-prefixed records both phases are carried in.
//! - [`puzzle`]: the work a listener under load asks before any X25519.
//!
//! The byte layout of everything here is specified in `docs/protocol/link.md`.

mod cipher;
mod config;
mod error;
pub mod frame;
mod handshake;
mod link;
mod message;
pub mod puzzle;
pub mod record;
#[cfg(test)]
mod tests;

pub use config::{ChannelConfig, ChannelId, Config, ConfigError};
pub use error::{CloseCode, CloseReason, CloseSide, HandshakeError, ProtocolError, SendError};
pub use handshake::{
    Handshake, LinkIdentity, handshake_in_memory,
    payload::{AnnouncedChannel, HandshakePayload},
};
pub use link::{Event, Link, LinkStats};
pub use message::{Message, PREFIX_LEN_MAX};

/// The Noise protocol name: pattern, DH, cipher, hash.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_SHA256";
/// Mixed into the handshake hash, so a handshake with a different protocol
/// that happens to use the same Noise pattern fails.
pub const PROLOGUE: &[u8] = b"fogwire-link";
/// The link protocol version carried in the first handshake message.
pub const VERSION: u8 = 2;

/// Length of the AEAD tag on every encrypted Noise message.
pub const TAG_LEN: usize = 16;
/// Largest record body (a Noise message): the Noise limit.
pub const RECORD_LEN_MAX: usize = 65_535;
/// Largest handshake record body; handshake messages are a few hundred bytes.
pub const HANDSHAKE_RECORD_LEN_MAX: usize = 1_024;
/// Largest clear body after a SEALED_DATA frame: one largest message.
pub const CLEAR_BODY_LEN_MAX: usize = MESSAGE_LEN_MAX;
/// Largest transport record on the wire, header included: a SEALED_DATA
/// frame and tag around a largest message (a DATA record is 2 bytes less).
pub const TRANSPORT_RECORD_LEN_MAX: usize =
    record::TRANSPORT_HEADER_LEN + frame::SEALED_DATA_HEADER_LEN + TAG_LEN + MESSAGE_LEN_MAX;
/// Largest plaintext frame: a record minus its tag.
pub const FRAME_LEN_MAX: usize = RECORD_LEN_MAX - TAG_LEN;
/// Largest message on a channel: a frame minus the 3-byte DATA header.
pub const MESSAGE_LEN_MAX: usize = FRAME_LEN_MAX - frame::DATA_HEADER_LEN;
/// Flow-control credit charged per message on top of its length, so that a
/// flood of empty messages is bounded by the window like any other.
pub const MESSAGE_CREDIT_OVERHEAD: u32 = 32;
/// Smallest receive window a channel may announce: one largest message.
pub const WINDOW_MIN: u32 = MESSAGE_LEN_MAX as u32 + MESSAGE_CREDIT_OVERHEAD;
/// Largest receive window a channel may announce, and the most credit a
/// sender may ever hold on one channel.
pub const WINDOW_MAX: u32 = 1 << 30;
/// Most channels one side may announce.
pub const CHANNELS_MAX: usize = 64;

/// The flow-control credit a message of `len` bytes costs.
pub fn message_cost(len: usize) -> u32 {
    // len is at most MESSAGE_LEN_MAX, so this cannot overflow.
    len.min(MESSAGE_LEN_MAX) as u32 + MESSAGE_CREDIT_OVERHEAD
}
