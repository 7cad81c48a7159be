//! The sans-IO core of fogwire clusters.
//!
//! - [`manifest`]: the services a cluster runs, decoded and checked from
//!   the TOML its owner publishes.
//! - [`placement`]: which board runs each instance of each service, a pure
//!   function of the services and the live members, so every board
//!   computes the same answer and no leader is needed.
//!
//! - [`key`]: the cluster id, the join code and a board's proof of
//!   membership.
//! - [`member`]: a board's signed membership record.
//! - [`message`]: the membership messages on a link's cluster channel.
//! - [`swim`]: membership itself, SWIM with Lifeguard's suspicion.
//!
//! Wire formats: `docs/protocol/cluster.md`.

pub mod key;
pub mod manifest;
pub mod member;
pub mod message;
pub mod placement;
pub mod swim;

pub use key::{ClusterId, JoinCode, JoinSecret, ParseClusterError};
pub use manifest::{Kind, Manifest, ManifestError, Service};
pub use placement::{Instance, Member, Placement, Resources, ServiceSpec, place};
