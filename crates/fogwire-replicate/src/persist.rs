//! Per-peer counters kept across restarts: what this node served to and
//! fetched from each peer is what it will be paid on (and pay), so a
//! restart must not forget it.
//!
//! One redb file, one table: peer node id (32 bytes) → `served_bytes u64 |
//! served_requests u64 | fetched_bytes u64 | corrupt u64`, big-endian.
//! Written every [`SAVE_INTERVAL`] while counters change, and at
//! shutdown; a crash loses at most that interval.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fogwire_identity::NodeId;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::{Counters, ReplicationState, lock};

const COUNTERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("peer_counters");
/// How often changed counters are written.
pub(crate) const SAVE_INTERVAL: Duration = Duration::from_secs(5);

/// Why the counters file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("replication counters in {path}: {message}")]
pub struct CountersError {
    pub path: PathBuf,
    pub message: String,
}

pub(crate) struct CountersFile {
    db: Database,
    path: PathBuf,
}

pub type Values = [u64; 4];

fn values(counters: &Counters) -> Values {
    [
        counters.served_bytes.load(Ordering::Relaxed),
        counters.served_requests.load(Ordering::Relaxed),
        counters.fetched_bytes.load(Ordering::Relaxed),
        counters.corrupt.load(Ordering::Relaxed),
    ]
}

/// A peer's counters as the counters file keeps them: four u64, big-endian
/// (served bytes, served requests, fetched bytes, corrupt).
pub fn encode(values: &Values) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (slot, value) in out.chunks_exact_mut(8).zip(values) {
        slot.copy_from_slice(&value.to_be_bytes());
    }
    out
}

/// The record [`encode`] writes; `None` for anything else.
pub fn decode(bytes: &[u8]) -> Option<Values> {
    if bytes.len() != 32 {
        return None;
    }
    let mut out = [0u64; 4];
    for (value, slot) in out.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut array = [0u8; 8];
        array.copy_from_slice(slot);
        *value = u64::from_be_bytes(array);
    }
    Some(out)
}

impl CountersFile {
    /// Opens (or creates) the file and reads what it holds (at most
    /// `max` peers, the busiest).
    pub(crate) fn open(
        path: &Path,
        max: usize,
    ) -> Result<(CountersFile, Vec<(NodeId, Values)>), CountersError> {
        let error = |message: String| CountersError {
            path: path.to_owned(),
            message,
        };
        let db = Database::create(path).map_err(|e| error(e.to_string()))?;
        let write = db.begin_write().map_err(|e| error(e.to_string()))?;
        write
            .open_table(COUNTERS)
            .map_err(|e| error(e.to_string()))?;
        write.commit().map_err(|e| error(e.to_string()))?;
        let read = db.begin_read().map_err(|e| error(e.to_string()))?;
        let table = read
            .open_table(COUNTERS)
            .map_err(|e| error(e.to_string()))?;
        let mut loaded = Vec::new();
        for row in table.iter().map_err(|e| error(e.to_string()))? {
            let (key, value) = row.map_err(|e| error(e.to_string()))?;
            let peer = <[u8; 32]>::try_from(key.value())
                .ok()
                .and_then(|bytes| NodeId::from_bytes(&bytes).ok());
            // A row that does not parse is skipped, not fatal: the others
            // are still worth having.
            if let (Some(peer), Some(values)) = (peer, decode(value.value())) {
                loaded.push((peer, values));
            }
        }
        loaded.sort_by_key(|(_, v)| std::cmp::Reverse(v[0].saturating_add(v[2])));
        loaded.truncate(max);
        Ok((
            CountersFile {
                db,
                path: path.to_owned(),
            },
            loaded,
        ))
    }

    fn save(&self, rows: &[(NodeId, Values)]) -> Result<(), CountersError> {
        let error = |message: String| CountersError {
            path: self.path.clone(),
            message,
        };
        let write = self.db.begin_write().map_err(|e| error(e.to_string()))?;
        {
            let mut table = write
                .open_table(COUNTERS)
                .map_err(|e| error(e.to_string()))?;
            for (peer, values) in rows {
                table
                    .insert(peer.as_bytes().as_slice(), encode(values).as_slice())
                    .map_err(|e| error(e.to_string()))?;
            }
        }
        write.commit().map_err(|e| error(e.to_string()))
    }
}

/// Fills the counters with what the file held.
pub(crate) fn restore(inner: &ReplicationState, loaded: Vec<(NodeId, Values)>) {
    let mut counters = lock(&inner.counters);
    for (peer, [served, requests, fetched, corrupt]) in loaded {
        let entry = counters.entry(peer).or_default();
        entry.served_bytes.store(served, Ordering::Relaxed);
        entry.served_requests.store(requests, Ordering::Relaxed);
        entry.fetched_bytes.store(fetched, Ordering::Relaxed);
        entry.corrupt.store(corrupt, Ordering::Relaxed);
    }
}

/// Writes the counters that changed since the last save.
pub(crate) async fn save_changed(
    inner: &Arc<ReplicationState>,
    saved: &mut HashMap<NodeId, Values>,
) {
    let Some(file) = inner.counters_file.clone() else {
        return;
    };
    let changed: Vec<(NodeId, Values)> = lock(&inner.counters)
        .iter()
        .map(|(peer, counters)| (*peer, values(counters)))
        .filter(|(peer, now)| saved.get(peer) != Some(now))
        .collect();
    if changed.is_empty() {
        return;
    }
    let rows = changed.clone();
    let result = tokio::task::spawn_blocking(move || file.save(&rows)).await;
    match result {
        Ok(Ok(())) => saved.extend(changed),
        Ok(Err(error)) => {
            tracing::warn!(%error, "could not save the per-peer counters; trying again")
        }
        Err(_) => {}
    }
}

/// Saves changed counters every [`SAVE_INTERVAL`], and once more when
/// replication shuts down.
pub(crate) async fn run(inner: Arc<ReplicationState>) {
    let mut saved = HashMap::new();
    let mut tick = tokio::time::interval(SAVE_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => save_changed(&inner, &mut saved).await,
            () = inner.shutdown.cancelled() => break,
        }
    }
    save_changed(&inner, &mut saved).await;
}
