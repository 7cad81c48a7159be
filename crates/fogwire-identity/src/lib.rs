//! Who a fogwire node is.
//!
//! Every node owns one Ed25519 key pair. Its public half is the node's
//! [`NodeId`]: the name peers dial, the key links are bound to, and the signer
//! of everything the node publishes. This crate owns:
//!
//! - [`NodeId`]: a validated Ed25519 public key with a printable form
//!   (`fw1…`, Bech32m) that round-trips exactly and rejects typos;
//! - [`Keypair`]: the secret half, and domain-separated signing of records;
//! - [`SignedRecord`]: the wire envelope of a signed record;
//! - [`short_form`]: the one short form of every printed id and hash;
//! - [`secret_file`]: key and token files that are written atomically with
//!   mode 0600 and refused when others can read them.
//!
//! Architecture invariant: this crate knows nothing of networks, links or the
//! daemon. It reads and writes files only through [`secret_file`].

mod keypair;
mod node_id;
mod record;
pub mod secret_file;
mod short;

pub use keypair::{KeyFileError, Keypair};
pub use node_id::{NodeId, ParseNodeIdError};
pub use record::{Domain, RecordError, Signature, SignedRecord};
pub use short::{SHORT_CHARS, prefix_of, short_form};
