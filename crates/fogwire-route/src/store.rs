//! The routing state a node keeps on disk (redb): the adverts it holds, so
//! that a restart does not start blind; its own advert sequence number, so
//! that its next advert outranks those of its previous run; and the
//! receipts relays were given, which forwarding will be paid on.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use fogwire_identity::NodeId;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

/// Origin NodeId → the advert's wire form.
const ADVERTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("adverts");
/// Route tag → the latest receipt's wire form.
const RECEIPTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("receipts");
/// Named numbers.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_SEQ: &str = "advert_seq";

/// Most receipts kept. Past it, receipts of new routes are not stored
/// (and a warning says so) until the ledger takes them.
pub const RECEIPTS_MAX: u64 = 1_000_000;

/// A failure of the routing store.
#[derive(Debug, thiserror::Error)]
#[error("routing store {path}: {detail}")]
pub struct StoreError {
    path: PathBuf,
    detail: String,
}

/// Changes waiting to be written, merged until they are.
#[derive(Debug, Default)]
pub struct Batch {
    pub adverts: HashMap<NodeId, Vec<u8>>,
    pub removed: Vec<NodeId>,
    pub receipts: HashMap<[u8; 16], Vec<u8>>,
    pub seq: Option<u64>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.adverts.is_empty()
            && self.removed.is_empty()
            && self.receipts.is_empty()
            && self.seq.is_none()
    }

    pub fn put_advert(&mut self, origin: NodeId, bytes: &[u8]) {
        self.removed.retain(|removed| *removed != origin);
        self.adverts.insert(origin, bytes.to_vec());
    }

    pub fn remove_advert(&mut self, origin: NodeId) {
        self.adverts.remove(&origin);
        self.removed.push(origin);
    }
}

/// What a node finds on disk when it starts.
#[derive(Debug, Default)]
pub struct Loaded {
    pub adverts: Vec<Vec<u8>>,
    pub seq: u64,
    pub receipts: u64,
}

#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    db: Database,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let error = |detail: String| StoreError {
            path: path.to_owned(),
            detail,
        };
        let db = Database::create(path).map_err(|e| {
            error(format!(
                "{e} (if the file is damaged, move it away: the node rebuilds it from its peers)"
            ))
        })?;
        let store = Store {
            path: path.to_owned(),
            db,
        };
        // Create the tables, so that reading an empty store works.
        store.write(Batch::default())?;
        Ok(store)
    }

    fn error(&self, error: impl std::fmt::Display) -> StoreError {
        StoreError {
            path: self.path.clone(),
            detail: error.to_string(),
        }
    }

    pub fn load(&self) -> Result<Loaded, StoreError> {
        let read = self.db.begin_read().map_err(|e| self.error(e))?;
        let adverts_table = read.open_table(ADVERTS).map_err(|e| self.error(e))?;
        let mut adverts = Vec::new();
        for entry in adverts_table.iter().map_err(|e| self.error(e))? {
            let (_, value) = entry.map_err(|e| self.error(e))?;
            adverts.push(value.value().to_vec());
        }
        let meta = read.open_table(META).map_err(|e| self.error(e))?;
        let seq = meta
            .get(META_SEQ)
            .map_err(|e| self.error(e))?
            .map_or(0, |value| value.value());
        let receipts = read
            .open_table(RECEIPTS)
            .map_err(|e| self.error(e))?
            .len()
            .map_err(|e| self.error(e))?;
        Ok(Loaded {
            adverts,
            seq,
            receipts,
        })
    }

    /// Writes a batch in one transaction.
    pub fn write(&self, batch: Batch) -> Result<(), StoreError> {
        let write = self.db.begin_write().map_err(|e| self.error(e))?;
        {
            let mut adverts = write.open_table(ADVERTS).map_err(|e| self.error(e))?;
            for (origin, bytes) in &batch.adverts {
                adverts
                    .insert(origin.as_bytes().as_slice(), bytes.as_slice())
                    .map_err(|e| self.error(e))?;
            }
            for origin in &batch.removed {
                adverts
                    .remove(origin.as_bytes().as_slice())
                    .map_err(|e| self.error(e))?;
            }
            let mut receipts = write.open_table(RECEIPTS).map_err(|e| self.error(e))?;
            let mut stored = receipts.len().map_err(|e| self.error(e))?;
            for (tag, bytes) in &batch.receipts {
                let known = receipts
                    .get(tag.as_slice())
                    .map_err(|e| self.error(e))?
                    .is_some();
                if !known {
                    if stored >= RECEIPTS_MAX {
                        tracing::warn!(
                            "{RECEIPTS_MAX} receipts stored: new routes' receipts are not kept"
                        );
                        continue;
                    }
                    stored += 1;
                }
                receipts
                    .insert(tag.as_slice(), bytes.as_slice())
                    .map_err(|e| self.error(e))?;
            }
            let mut meta = write.open_table(META).map_err(|e| self.error(e))?;
            if let Some(seq) = batch.seq {
                meta.insert(META_SEQ, seq).map_err(|e| self.error(e))?;
            }
        }
        write.commit().map_err(|e| self.error(e))
    }

    /// Every receipt kept, in wire form.
    pub fn receipts(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let read = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = read.open_table(RECEIPTS).map_err(|e| self.error(e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.error(e))? {
            let (_, value) = entry.map_err(|e| self.error(e))?;
            out.push(value.value().to_vec());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fogwire_identity::Keypair;

    #[test]
    fn what_is_written_is_read_back_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.redb");
        let origin = Keypair::from_seed(&[1; 32]).node_id();
        let gone = Keypair::from_seed(&[2; 32]).node_id();
        {
            let store = Store::open(&path).unwrap();
            let mut batch = Batch::default();
            batch.put_advert(origin, b"advert one");
            batch.put_advert(gone, b"advert two");
            batch.receipts.insert([7; 16], b"receipt".to_vec());
            batch.seq = Some(42);
            store.write(batch).unwrap();
            let mut batch = Batch::default();
            batch.remove_advert(gone);
            store.write(batch).unwrap();
        }
        let store = Store::open(&path).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.adverts, vec![b"advert one".to_vec()]);
        assert_eq!(loaded.seq, 42);
        assert_eq!(loaded.receipts, 1);
        assert_eq!(store.receipts().unwrap(), vec![b"receipt".to_vec()]);
    }

    #[test]
    fn a_damaged_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.redb");
        std::fs::write(&path, b"not a database at all, just some bytes").unwrap();
        let error = Store::open(&path).unwrap_err().to_string();
        assert!(error.contains("routes.redb"), "{error}");
        assert!(error.contains("move it away"), "{error}");
    }
}
