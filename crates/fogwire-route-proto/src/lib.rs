//! The sans-IO core of fogwire routing.
//!
//! - [`advert`]: signed link-state adverts, their wire form and checks;
//! - [`topology::Topology`]: the adverts a node holds (deduplicated,
//!   rate-limited per origin, aged out) and the graph they make;
//! - [`path`]: constrained shortest paths computed at the source;
//! - [`router`]: label-switched routes, their setup, forwarding, end-to-end
//!   sessions and streams, repair and receipts;
//! - [`control_plane`]: the adverts a node holds, issues (rate-limited)
//!   and floods;
//! - [`repair`]: the routes a node opened, and how a broken one moves to a
//!   path that avoids what broke.
//!
//! Architecture invariant: like `fogwire-link-proto`, no sockets, no tasks,
//! no clock: time comes in as arguments (`now_ms`, Unix milliseconds, since
//! adverts carry wall-clock times).

pub mod advert;
pub mod control_plane;
pub mod graph;
pub mod path;
mod rates;
pub mod repair;
pub mod router;
pub mod topology;
mod wire;

pub use advert::{Advert, AdvertError, AdvertLink};
pub use graph::Graph;
pub use path::{Path, PathError, Query};
pub use topology::{Accepted, Refused, Topology};
