//! The sans-IO core of fogwire's store.
//!
//! - [`Hash`]: a blob's identity, its BLAKE3 hash (what `b3sum` prints);
//! - [`bao`]: verified streaming over 16 KiB chunk groups (outboards,
//!   verified reads);
//! - [`feed`]: feeds and their signed roots;
//! - [`object`]: directories and their indexes as objects in the store;
//! - [`message`], [`stream`], [`download`]: the replication protocol;
//! - [`providers`]: who holds a blob beyond one's neighbours.
//!
//! Architecture invariant: no sockets, no files, no threads, no clock.
//! Positioned reads and writes come in through traits the caller provides.

pub mod bao;
pub mod download;
pub mod feed;
mod hash;
pub mod message;
pub mod object;
pub mod providers;
pub mod stream;

pub use hash::{Hash, ParseHashError};
