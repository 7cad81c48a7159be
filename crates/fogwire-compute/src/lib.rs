//! fogwire's compute roles, over the service RPC
//! (`docs/protocol/compute.md`):
//!
//! - [`worker`]: the `worker` service. It reports what the machine has,
//!   fetches a task's program and inputs from the store of the hub that
//!   asks, runs the task in the sandbox, stores its output, commits to
//!   the outcome and reveals it when asked.
//! - [`hub`]: the `hub` service. It takes jobs from buyers, fetches their
//!   program and inputs, and drives the scheduler of
//!   `fogwire-compute-proto`: tasks placed on workers, outcomes compared,
//!   the accepted outputs kept; jobs and reputations persist in redb.
//! - [`client`]: what a buyer's node does: submit, ask, fetch results.
//!
//! This crate knows nothing of links or routes: the node gives it a
//! [`Fabric`] (calls to other nodes, fetches into the store, the nodes
//! that offer a service).

pub mod client;
pub mod config;
pub mod docker;
pub mod guests;
pub mod hub;
pub mod market;
pub mod resources;
pub mod roles;
pub mod runtime;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use fogwire_compute_proto::Digest;
use fogwire_identity::NodeId;
use fogwire_rpc::{BoxFuture, RpcError};
use fogwire_rpc_proto::Value;

pub use fogwire_compute_proto as proto;
/// The wall clock now, in Unix milliseconds.
pub use fogwire_env::unix_ms;

/// The worker service's name, and its methods (index = method id).
pub const WORKER: &str = "worker";
pub const WORKER_METHODS: &[&str] = &["describe", "run", "reveal", "cancel", "tasks"];
/// The hub service's name, and its methods.
pub const HUB: &str = "hub";
pub const HUB_METHODS: &[&str] = &[
    "submit", "status", "logs", "result", "cancel", "workers", "jobs",
];

/// Method ids, by name.
pub mod method {
    pub const DESCRIBE: u64 = 0;
    pub const RUN: u64 = 1;
    pub const REVEAL: u64 = 2;
    pub const CANCEL_TASK: u64 = 3;
    pub const TASKS: u64 = 4;

    pub const SUBMIT: u64 = 0;
    pub const STATUS: u64 = 1;
    pub const LOGS: u64 = 2;
    pub const RESULT: u64 = 3;
    pub const CANCEL: u64 = 4;
    pub const WORKERS: u64 = 5;
    pub const JOBS: u64 = 6;
}

/// What compute needs from the node it runs on.
pub trait Fabric: std::fmt::Debug + Send + Sync + 'static {
    fn node_id(&self) -> NodeId;
    fn store(&self) -> Arc<fogwire_store::Store>;
    /// Calls `method` of `service` on `peer` (this node included), linking
    /// to it first if it is not a neighbour, and gathers every chunk.
    fn call(
        &self,
        peer: NodeId,
        service: &'static str,
        method: u64,
        args: Vec<Value>,
        timeout: Duration,
    ) -> BoxFuture<Result<Vec<Vec<Value>>, RpcError>>;
    /// Gets blob `hash` (verified) into this node's store from `holders`
    /// (linking to them if need be) or any neighbour that has it.
    fn fetch(&self, hash: Digest, holders: Vec<NodeId>) -> BoxFuture<Result<(), FetchFailed>>;
    /// The nodes that advertise `service`, this one included if it does.
    fn locate(&self, service: &'static str) -> BoxFuture<Vec<NodeId>>;
}

/// Why a blob could not be fetched into this node's store.
#[derive(Debug, thiserror::Error)]
#[error("cannot fetch {}: {source}", hash.to_hex())]
pub struct FetchFailed {
    pub hash: Digest,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// An escrow as the ledger holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EscrowView {
    pub owner: [u8; 32],
    pub arbiter: [u8; 32],
    pub amount: u64,
}

/// Why a payment did not go through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayError {
    /// The escrow is gone: it was paid out or refunded already.
    #[error("the escrow is closed (settled already)")]
    Closed,
    /// The ledger refused it (the hub's wallet cannot lock its share, say):
    /// asking again would not help. Its words.
    #[error("the ledger refused: {0}")]
    Refused(String),
    /// The ledger could not be asked: try again later. What went wrong.
    #[error("the ledger cannot be reached: {0}")]
    Unreachable(String),
}

/// How a hub reaches the ledger: reads escrows, pays them out, refunds
/// them, slashes deposits — each signed with the hub's key.
pub trait Payments: Send + Sync + 'static {
    fn escrow(&self, id: [u8; 32]) -> BoxFuture<Result<Option<EscrowView>, PayError>>;
    fn release(
        &self,
        id: [u8; 32],
        payouts: Vec<([u8; 32], u64)>,
    ) -> BoxFuture<Result<(), PayError>>;
    fn refund(&self, id: [u8; 32]) -> BoxFuture<Result<(), PayError>>;
    fn slash(&self, worker: [u8; 32], amount: u64) -> BoxFuture<Result<(), PayError>>;
}

/// Gets every blob of `digests` this node lacks into its store, from
/// `holders` (or any neighbour that has them), each within `timeout`.
pub(crate) async fn fetch_missing(
    fabric: &dyn Fabric,
    digests: &[Digest],
    holders: &[NodeId],
    timeout: Duration,
) -> Result<(), String> {
    let store = fabric.store();
    for digest in digests {
        let held = {
            let store = store.clone();
            let hash = store_hash(digest);
            tokio::task::spawn_blocking(move || store.entry(&hash).ok().flatten())
                .await
                .ok()
                .flatten()
        };
        if held.is_some() {
            continue;
        }
        match tokio::time::timeout(timeout, fabric.fetch(*digest, holders.to_vec())).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(format!("cannot fetch {}: {error}", digest.to_hex())),
            Err(_) => {
                return Err(format!(
                    "{} did not arrive within {timeout:?}",
                    digest.to_hex()
                ));
            }
        }
    }
    Ok(())
}

/// The store's hash of a digest, and back.
pub fn store_hash(digest: &Digest) -> fogwire_store::Hash {
    fogwire_store::Hash::from_bytes(digest.0)
}

pub fn digest_of(hash: &fogwire_store::Hash) -> Digest {
    Digest(*hash.as_bytes())
}

/// The first argument of a call, decoded.
pub(crate) fn arg<T: serde::de::DeserializeOwned>(
    args: &[Value],
    position: usize,
    what: &str,
) -> Result<T, String> {
    let value = args
        .get(position)
        .cloned()
        .ok_or_else(|| format!("missing argument {position}: {what}"))?;
    fogwire_compute_proto::from_value(value)
        .map_err(|e| format!("argument {position} ({what}): {e}"))
}

/// A task's key: its job and index.
pub(crate) fn task_key(job: &fogwire_compute_proto::JobId, index: u32) -> [u8; 36] {
    let mut key = [0u8; 36];
    key[..32].copy_from_slice(job.0.as_bytes());
    key[32..].copy_from_slice(&index.to_be_bytes());
    key
}

/// Why a record could not be written as, or read from, MessagePack.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    #[error(transparent)]
    Value(#[from] fogwire_compute_proto::DecodeError),
    #[error("cannot write MessagePack: {0}")]
    Write(#[from] rmpv::encode::Error),
    #[error("cannot read MessagePack: {0}")]
    Read(#[from] rmpv::decode::Error),
}

/// MessagePack bytes of a serde value (what redb rows hold).
pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let value = fogwire_compute_proto::to_value(value)?;
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &value)?;
    Ok(out)
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(mut bytes: &[u8]) -> Result<T, CodecError> {
    let value = rmpv::decode::read_value_with_max_depth(&mut bytes, 64)?;
    Ok(fogwire_compute_proto::from_value(value)?)
}
