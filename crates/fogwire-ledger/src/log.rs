//! The ledger's ordered log in redb: the genesis, then every applied
//! transaction as it was signed, with the time the ledger gave it. The
//! state is a pure function of the two, rebuilt at every start.
//!
//! Tables:
//! - `meta`: `"genesis"` → the genesis's MessagePack;
//! - `log`: index (u64, from 1) → `time_ms u64 BE | signature 64 | body`;
//! - `by_sender`: `sender 32 | sequence u64 BE` → index, to answer a
//!   resubmitted transaction with its first receipt;
//! - `history`: `account 32 | index u64 BE` → (), every entry that moved
//!   an account's coins, for `history`.

use std::path::{Path, PathBuf};

use fogwire_identity::Signature;
use fogwire_ledger_proto::{Genesis, Id, SignedTransaction, decode_msgpack, encode_msgpack};
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const BY_SENDER: TableDefinition<&[u8], u64> = TableDefinition::new("by_sender");
const HISTORY: TableDefinition<&[u8], ()> = TableDefinition::new("history");

/// Why the log could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("ledger log {path}: {message}")]
pub struct LogError {
    pub path: PathBuf,
    pub message: String,
}

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub index: u64,
    pub time_ms: u64,
    pub signed: SignedEntry,
}

/// A signed transaction as the log keeps it (and `history` returns it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedEntry {
    #[serde(with = "bytes")]
    pub body: Vec<u8>,
    #[serde(with = "bytes")]
    pub signature: Vec<u8>,
}

impl SignedEntry {
    pub fn of(signed: &SignedTransaction) -> SignedEntry {
        SignedEntry {
            body: signed.body.clone(),
            signature: signed.signature.0.to_vec(),
        }
    }

    pub fn to_signed(&self) -> Option<SignedTransaction> {
        Some(SignedTransaction {
            body: self.body.clone(),
            signature: Signature(self.signature.as_slice().try_into().ok()?),
        })
    }
}

/// Vec<u8> as MessagePack bin.
pub(crate) mod bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        rmpv::Value::deserialize(deserializer).and_then(|value| match value {
            rmpv::Value::Binary(bytes) => Ok(bytes),
            _ => Err(serde::de::Error::custom("expected bin")),
        })
    }
}

/// What one appended entry is filed under.
#[derive(Debug, Clone)]
pub struct Append {
    pub time_ms: u64,
    pub signed: SignedTransaction,
    pub sender: Id,
    pub sequence: u64,
    pub touched: Vec<Id>,
}

/// A log entry as the database keeps it: `time ms u64 (big-endian) |
/// signature (64) | the transaction's body`.
pub fn encode_entry(time_ms: u64, signed: &SignedTransaction) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 64 + signed.body.len());
    out.extend_from_slice(&time_ms.to_be_bytes());
    out.extend_from_slice(&signed.signature.0);
    out.extend_from_slice(&signed.body);
    out
}

/// The record [`encode_entry`] writes, as entry `index`; `None` if too
/// short.
pub fn decode_entry(index: u64, bytes: &[u8]) -> Option<Entry> {
    if bytes.len() < 72 {
        return None;
    }
    let time_ms = u64::from_be_bytes(bytes[..8].try_into().ok()?);
    Some(Entry {
        index,
        time_ms,
        signed: SignedEntry {
            signature: bytes[8..72].to_vec(),
            body: bytes[72..].to_vec(),
        },
    })
}

fn key_40(id: &Id, n: u64) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..32].copy_from_slice(&id.0);
    key[32..].copy_from_slice(&n.to_be_bytes());
    key
}

/// The log's database.
#[derive(Debug)]
pub struct Log {
    db: redb::Database,
    path: PathBuf,
}

impl Log {
    /// Opens the log at `path`, creating it with `genesis` if it is new.
    /// Returns the log and the genesis it holds (which wins over the one
    /// given: a ledger's genesis never changes).
    pub fn open(path: &Path, genesis: &Genesis) -> Result<(Log, Genesis), LogError> {
        let error = |message: String| LogError {
            path: path.to_owned(),
            message,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| error(e.to_string()))?;
        }
        let db = redb::Database::create(path).map_err(|e| error(e.to_string()))?;
        let log = Log {
            db,
            path: path.to_owned(),
        };
        let write = log.db.begin_write().map_err(|e| error(e.to_string()))?;
        let stored = {
            let mut meta = write.open_table(META).map_err(|e| error(e.to_string()))?;
            write.open_table(LOG).map_err(|e| error(e.to_string()))?;
            write
                .open_table(BY_SENDER)
                .map_err(|e| error(e.to_string()))?;
            write
                .open_table(HISTORY)
                .map_err(|e| error(e.to_string()))?;
            let stored = meta
                .get("genesis")
                .map_err(|e| error(e.to_string()))?
                .map(|bytes| bytes.value().to_vec());
            match stored {
                Some(bytes) => decode_msgpack::<Genesis>(&bytes)
                    .map_err(|e| error(format!("its genesis does not decode: {e}")))?,
                None => {
                    let bytes = encode_msgpack(genesis).map_err(|e| error(e.to_string()))?;
                    meta.insert("genesis", bytes.as_slice())
                        .map_err(|e| error(e.to_string()))?;
                    genesis.clone()
                }
            }
        };
        write.commit().map_err(|e| error(e.to_string()))?;
        Ok((log, stored))
    }

    fn error(&self, message: impl ToString) -> LogError {
        LogError {
            path: self.path.clone(),
            message: message.to_string(),
        }
    }

    /// Entries in the log.
    pub fn len(&self) -> Result<u64, LogError> {
        let read = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = read.open_table(LOG).map_err(|e| self.error(e))?;
        table.len().map_err(|e| self.error(e))
    }

    pub fn is_empty(&self) -> Result<bool, LogError> {
        Ok(self.len()? == 0)
    }

    /// Every entry in order, for replay, handed to `each` one at a time.
    pub fn replay<E: std::fmt::Display>(
        &self,
        mut each: impl FnMut(Entry) -> Result<(), E>,
    ) -> Result<u64, LogError> {
        let read = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = read.open_table(LOG).map_err(|e| self.error(e))?;
        let mut count = 0;
        for row in table.iter().map_err(|e| self.error(e))? {
            let (index, bytes) = row.map_err(|e| self.error(e))?;
            let index = index.value();
            let entry = decode_entry(index, bytes.value())
                .ok_or_else(|| self.error(format!("entry {index} is cut short")))?;
            each(entry).map_err(|why| self.error(format!("entry {index}: {why}")))?;
            count += 1;
        }
        Ok(count)
    }

    /// Appends `entries` after the last in one durable transaction;
    /// returns the index of the first.
    pub fn append(&self, entries: &[Append]) -> Result<u64, LogError> {
        let write = self.db.begin_write().map_err(|e| self.error(e))?;
        let first = {
            let mut log = write.open_table(LOG).map_err(|e| self.error(e))?;
            let mut by_sender = write.open_table(BY_SENDER).map_err(|e| self.error(e))?;
            let mut history = write.open_table(HISTORY).map_err(|e| self.error(e))?;
            let first = log
                .last()
                .map_err(|e| self.error(e))?
                .map(|(index, _)| index.value() + 1)
                .unwrap_or(1);
            for (offset, entry) in entries.iter().enumerate() {
                let index = first + offset as u64;
                log.insert(index, encode_entry(entry.time_ms, &entry.signed).as_slice())
                    .map_err(|e| self.error(e))?;
                by_sender
                    .insert(key_40(&entry.sender, entry.sequence).as_slice(), index)
                    .map_err(|e| self.error(e))?;
                for id in &entry.touched {
                    history
                        .insert(key_40(id, index).as_slice(), ())
                        .map_err(|e| self.error(e))?;
                }
            }
            first
        };
        write.commit().map_err(|e| self.error(e))?;
        Ok(first)
    }

    pub fn entry(&self, index: u64) -> Result<Option<Entry>, LogError> {
        let read = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = read.open_table(LOG).map_err(|e| self.error(e))?;
        let row = table.get(index).map_err(|e| self.error(e))?;
        Ok(row.and_then(|bytes| decode_entry(index, bytes.value())))
    }

    /// The entry that applied `sender`'s transaction `sequence`.
    pub fn by_sender(&self, sender: &Id, sequence: u64) -> Result<Option<Entry>, LogError> {
        let index = {
            let read = self.db.begin_read().map_err(|e| self.error(e))?;
            let table = read.open_table(BY_SENDER).map_err(|e| self.error(e))?;
            let row = table
                .get(key_40(sender, sequence).as_slice())
                .map_err(|e| self.error(e))?;
            row.map(|index| index.value())
        };
        match index {
            Some(index) => self.entry(index),
            None => Ok(None),
        }
    }

    /// Up to `limit` entries that moved `account`'s coins, newest first,
    /// before index `before` (0: from the newest).
    pub fn history(&self, account: &Id, before: u64, limit: usize) -> Result<Vec<Entry>, LogError> {
        let read = self.db.begin_read().map_err(|e| self.error(e))?;
        let history = read.open_table(HISTORY).map_err(|e| self.error(e))?;
        let log = read.open_table(LOG).map_err(|e| self.error(e))?;
        let end = if before == 0 { u64::MAX } else { before };
        let low = key_40(account, 0);
        let high = key_40(account, end);
        let mut out = Vec::new();
        for row in history
            .range(low.as_slice()..high.as_slice())
            .map_err(|e| self.error(e))?
            .rev()
        {
            if out.len() >= limit {
                break;
            }
            let (key, _) = row.map_err(|e| self.error(e))?;
            let key = key.value();
            let index =
                u64::from_be_bytes(key[32..40].try_into().map_err(|_| self.error("bad key"))?);
            if let Some(bytes) = log.get(index).map_err(|e| self.error(e))?
                && let Some(entry) = decode_entry(index, bytes.value())
            {
                out.push(entry);
            }
        }
        Ok(out)
    }
}
