//! The sans-IO core of the fogwire messenger.
//!
//! - [`wire`]: what crosses the network, byte for byte — a node's signed
//!   [`wire::Card`] (its Olm identity and fallback keys, its mailboxes),
//!   the sealed [`wire::Envelope`] and the [`wire::Plain`] text inside
//!   it, signed [`wire::Receipt`]s, and the [`wire::Frame`]s of a stream
//!   to the `msg` service.
//! - [`order`]: one conversation's order as the recipient sees it —
//!   duplicates dropped, gaps held, a gap given up after a while.
//! - [`retry`]: when the outbox tries a recipient again.
//! - [`mailbox`]: what a mailbox holds for its owners (quotas per sender,
//!   strangers held to little, a time to live) and how a board chooses
//!   its cluster's mailboxes (rendezvous hashing).
//! - [`peering`]: the signed offers that peer two clusters by public key.
//! - [`group`]: the frames small groups' members send each other (around
//!   MLS's own messages) and the identity a member's MLS credential names.
//!
//! No clocks, no randomness, no I/O: times come in as Unix milliseconds
//! and ids as bytes. The ratchet itself (Olm, from `vodozemac`) runs in
//! `fogwire-msg`, the driver. Wire formats: `docs/protocol/messages.md`.

pub mod group;
pub mod mailbox;
pub mod order;
pub mod peering;
pub mod retry;
pub mod wire;

pub use order::{Arrival, Conversation};
pub use wire::{
    Body, Card, Envelope, Frame, MessageId, Plain, Receipt, ReceiptKind, Refusal, Sealing,
    WireError,
};
