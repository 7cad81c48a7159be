//! fogwire's content-addressed store.
//!
//! A blob is named by the BLAKE3 hash of its bytes ([`Hash`], exactly what
//! `b3sum` prints). Large blobs are kept as files beside their outboards,
//! which let every 16 KiB chunk group be verified on its own ([`bao`]);
//! small ones live in the database. [`Store`] adds, reads (verified),
//! exports, tags (pins) and collects them, and survives being killed at
//! any moment.
//!
//! Architecture invariant: blocking file and database I/O only; no
//! network, no async runtime. The node calls it from blocking threads.

pub mod bao;
pub mod partial;
pub mod restore;
pub mod store;

pub use fogwire_store_proto::feed::{self, ContentKind, FeedId, FeedRoot};
pub use fogwire_store_proto::{Hash, ParseHashError, object};
pub use partial::{PartialInfo, PartialWriter, Source};
pub use restore::{RestoreLimits, TreeTotals};
pub use store::{
    Config, DirReport, Entry, GcReport, Location, Protection, Stat, Store, StoreError, feed_tag,
};
