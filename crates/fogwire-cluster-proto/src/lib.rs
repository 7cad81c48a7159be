//! The sans-IO core of fogwire clusters (issue 16, in progress).
//!
//! - [`placement`]: which board runs each instance of each service, a pure
//!   function of the services and the live members, so every board
//!   computes the same answer and no leader is needed.
//!
//! Discovery, membership and the signed manifest come next; their wire
//! formats will be in `docs/protocol/cluster.md`.

pub mod placement;

pub use placement::{Instance, Member, Placement, Resources, ServiceSpec, place};
