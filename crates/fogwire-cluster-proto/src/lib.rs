//! The sans-IO core of fogwire clusters (issue 16, in progress).
//!
//! - [`manifest`]: the services a cluster runs, decoded and checked from
//!   the TOML its owner publishes.
//! - [`placement`]: which board runs each instance of each service, a pure
//!   function of the services and the live members, so every board
//!   computes the same answer and no leader is needed.
//!
//! Discovery, membership and the manifest's feed come next; their wire
//! formats will be in `docs/protocol/cluster.md`.

pub mod manifest;
pub mod placement;

pub use manifest::{Kind, Manifest, ManifestError, Service};
pub use placement::{Instance, Member, Placement, Resources, ServiceSpec, place};
