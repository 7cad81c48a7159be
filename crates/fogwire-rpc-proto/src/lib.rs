//! Sans-IO core of fogwire's service RPC, in the style of Cocaine: every
//! message is a MessagePack array `[channel, message, args]` (with an
//! optional fourth element of headers); many calls share one connection,
//! each on a channel of its own; replies stream as chunks, then a choke
//! (the end) or an error. `docs/protocol/rpc.md` describes the wire
//! format byte by byte, so that a client needs only a MessagePack library.
//!
//! - [`message`]: encoding and decoding one message, with its bounds.
//! - [`session`]: the calls on one connection, both ways: channel rules,
//!   cancellation, deadlines, and bounds on calls in flight.

pub mod message;
pub mod session;

pub use message::{CHOKE, CHUNK, ERROR, Message, MessageError};
pub use rmpv::Value;
pub use session::{CallError, Config, Event, Role, Session, code};
