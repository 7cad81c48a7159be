//! The sans-IO core of fogwire's store.
//!
//! - [`Hash`]: a blob's identity, its BLAKE3 hash (what `b3sum` prints);
//! - [`bao`]: verified streaming over 16 KiB chunk groups (outboards,
//!   verified reads);
//!
//! Architecture invariant: no sockets, no tasks, no clock. Positioned
//! reads and writes of files come in through traits the caller provides.

pub mod bao;
pub mod download;
mod hash;
pub mod message;
pub mod stream;

pub use hash::{Hash, ParseHashError};
