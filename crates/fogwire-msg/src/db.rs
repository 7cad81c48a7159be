//! The messenger's records in one redb file: every message sent and
//! received (the history), the outbox, each conversation's order, the
//! peers' cards, and the Olm account and sessions (pickled, encrypted
//! with a key derived from the node's key).
//!
//! Every change that follows from the network is one write transaction,
//! committed before the node answers for it: a message is acknowledged
//! only once it is on disk, and a ratchet step is on disk before the
//! ciphertext it made leaves (so a crash never reuses a message key).

use std::path::Path;

use fogwire_identity::NodeId;
use fogwire_msg_proto::{Conversation, MessageId};
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

/// id → [`Record`].
pub(crate) const MESSAGES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("messages");
/// (peer, position) → id: each conversation as it was shown, in order.
pub(crate) const TIMELINE: TableDefinition<(&[u8], u64), &[u8]> = TableDefinition::new("timeline");
/// position → id: messages received and not yet read (the inbox).
pub(crate) const UNREAD: TableDefinition<u64, &[u8]> = TableDefinition::new("unread");
/// (peer, stream) → [`Conversation`]: the order of what a peer sends.
pub(crate) const ORDER: TableDefinition<(&[u8], u64), &[u8]> = TableDefinition::new("order");
/// (peer, stream, seq) → id: messages held behind a gap.
pub(crate) const HELD: TableDefinition<(&[u8], u64, u64), &[u8]> = TableDefinition::new("held");
/// (peer, seq) → id: messages to send, in order.
pub(crate) const OUTBOX: TableDefinition<(&[u8], u64), &[u8]> = TableDefinition::new("outbox");
/// (peer, id) → (): read receipts to send.
pub(crate) const READ_RECEIPTS: TableDefinition<(&[u8], &[u8]), ()> =
    TableDefinition::new("read_receipts");
/// peer → [`Contact`].
pub(crate) const CONTACTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("contacts");
/// peer → signed card.
pub(crate) const CARDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("cards");
/// peer → encrypted Olm session pickles, most recently used first.
pub(crate) const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");
/// (peer, id) → (): delivery receipts to send (for messages picked up
/// from a mailbox: their sender was not on the line).
pub(crate) const DELIVERED_OWED: TableDefinition<(&[u8], &[u8]), ()> =
    TableDefinition::new("delivered_owed");
/// mailbox → (seq, bytes): what this node signed for to each of its
/// mailboxes so far (receipts are cumulative).
pub(crate) const MAILBOX_PAID: TableDefinition<&[u8], (u64, u64)> =
    TableDefinition::new("mailbox_paid");
/// openmls's store (key → value), as openmls names them: the groups'
/// state and keys, and this node's key package's private keys.
pub(crate) const MLS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("mls");
/// group id → `Group`.
pub(crate) const GROUPS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("groups");
/// (group id, position) → `GroupEntry`: each group's history.
pub(crate) const GROUP_LOG: TableDefinition<(&[u8], u64), &[u8]> =
    TableDefinition::new("group_log");
/// (group id, n) → sender and MLS message: messages from an epoch this
/// node has not reached yet.
pub(crate) const GROUP_PENDING: TableDefinition<(&[u8], u64), &[u8]> =
    TableDefinition::new("group_pending");
/// message id → group frame: what the pairwise messages carrying group
/// frames carry (their records' text is empty), both ways, until sealed
/// and delivered, or until their turn comes.
pub(crate) const GROUP_FRAMES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("group_frames");
/// name → value: the Olm account, counters.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

pub(crate) const META_ACCOUNT: &str = "account";
pub(crate) const META_POSITION: &str = "position";
pub(crate) const META_STRANGER_UNREAD: &str = "stranger_unread";

/// Why the messenger's records could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    #[error("messages database: {0}")]
    Redb(String),
    #[error(
        "messages database holds a record it cannot read ({0}); it was written by another version or damaged"
    )]
    Corrupt(String),
}

macro_rules! from_redb {
    ($($error:ty),*) => {$(
        impl From<$error> for DbError {
            fn from(error: $error) -> Self {
                DbError::Redb(error.to_string())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Where a message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Sent by this node, waiting in the outbox.
    Queued,
    /// Sent by this node, and its recipient signed for it.
    Delivered,
    /// Sent by this node, and its recipient signed that it was read; or
    /// received and read here.
    Read,
    /// Sent by this node and given up on (its time to live passed, or the
    /// recipient refused it).
    Failed,
    /// Received, held behind a gap in its conversation.
    Held,
    /// Received and shown, not yet read.
    Unread,
    /// Sent by this node, and held for its recipient by one of the
    /// recipient's mailboxes (still in the outbox: delivered directly if
    /// the recipient is seen before it picks it up).
    Stored,
}

/// One message, either way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: MessageId,
    pub peer: [u8; 32],
    pub outgoing: bool,
    pub text: String,
    pub sent_ms: u64,
    pub stream: u64,
    pub seq: u64,
    pub status: Status,
    /// Where it stands in its conversation (none while held).
    pub position: Option<u64>,
    pub received_ms: Option<u64>,
    pub delivered_ms: Option<u64>,
    pub read_ms: Option<u64>,
    /// Why the last attempt to send it failed, or why it was given up on.
    pub error: Option<String>,
}

impl Record {
    pub fn peer(&self) -> Option<NodeId> {
        NodeId::from_bytes(&self.peer).ok()
    }
}

/// What this node keeps of each peer it exchanged messages with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// The stream this node numbers its messages to the peer in, and the
    /// next number; none until it first writes to the peer (a peer this
    /// node never wrote to is a stranger, with a smaller quota).
    pub out_stream: Option<(u64, u64)>,
    pub messages: u64,
    pub unread: u64,
    /// Messages from the peer held behind a gap.
    pub held: u64,
    pub last_ms: u64,
    pub last_text: String,
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, DbError> {
    postcard::to_stdvec(value).map_err(|error| DbError::Corrupt(error.to_string()))
}

pub(crate) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, DbError> {
    postcard::from_bytes(bytes).map_err(|error| DbError::Corrupt(error.to_string()))
}

/// Opens (or creates) the database and its tables.
pub(crate) fn open(path: &Path) -> Result<redb::Database, DbError> {
    let db = redb::Database::create(path)?;
    let write = db.begin_write()?;
    write.open_table(MESSAGES)?;
    write.open_table(TIMELINE)?;
    write.open_table(UNREAD)?;
    write.open_table(ORDER)?;
    write.open_table(HELD)?;
    write.open_table(OUTBOX)?;
    write.open_table(READ_RECEIPTS)?;
    write.open_table(CONTACTS)?;
    write.open_table(CARDS)?;
    write.open_table(SESSIONS)?;
    write.open_table(META)?;
    write.open_table(DELIVERED_OWED)?;
    write.open_table(MAILBOX_PAID)?;
    write.open_table(MLS)?;
    write.open_table(GROUPS)?;
    write.open_table(GROUP_LOG)?;
    write.open_table(GROUP_PENDING)?;
    write.open_table(GROUP_FRAMES)?;
    crate::mailbox::store::create(&write)?;
    write.open_table(crate::peering::PEERINGS)?;
    write.commit()?;
    Ok(db)
}

/// Reads a table's value, decoded.
pub(crate) fn get<T: for<'a> Deserialize<'a>>(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &[u8],
) -> Result<Option<T>, DbError> {
    match table.get(key)? {
        Some(value) => Ok(Some(decode(value.value())?)),
        None => Ok(None),
    }
}

pub(crate) fn meta_u64(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<u64, DbError> {
    Ok(match table.get(key)? {
        Some(value) => decode(value.value())?,
        None => 0,
    })
}

/// Every contact, with its id.
pub(crate) fn contacts(db: &redb::Database) -> Result<Vec<(NodeId, Contact)>, DbError> {
    let read = db.begin_read()?;
    let table = read.open_table(CONTACTS)?;
    let mut out = Vec::with_capacity(table.len()? as usize);
    for row in table.iter()? {
        let (key, value) = row?;
        let Ok(peer) = NodeId::from_slice(key.value()) else {
            continue;
        };
        out.push((peer, decode(value.value())?));
    }
    Ok(out)
}

/// A conversation's messages as shown, oldest first: the last `limit`
/// (of those whose text contains `search`, ignoring case, if given).
pub(crate) fn history(
    db: &redb::Database,
    peer: &NodeId,
    search: Option<&str>,
    limit: usize,
) -> Result<Vec<Record>, DbError> {
    let read = db.begin_read()?;
    let timeline = read.open_table(TIMELINE)?;
    let messages = read.open_table(MESSAGES)?;
    let needle = search.map(str::to_lowercase);
    let key = peer.as_bytes().as_slice();
    let mut out = Vec::new();
    for row in timeline.range((key, 0)..=(key, u64::MAX))?.rev() {
        if out.len() >= limit {
            break;
        }
        let (_, id) = row?;
        let Some(record) = get::<Record>(&messages, id.value())? else {
            continue;
        };
        if needle
            .as_ref()
            .is_none_or(|needle| record.text.to_lowercase().contains(needle))
        {
            out.push(record);
        }
    }
    out.reverse();
    Ok(out)
}

/// Received messages not yet read, oldest first, at most `limit`.
pub(crate) fn unread(db: &redb::Database, limit: usize) -> Result<Vec<Record>, DbError> {
    let read = db.begin_read()?;
    let unread = read.open_table(UNREAD)?;
    let messages = read.open_table(MESSAGES)?;
    let mut out = Vec::new();
    for row in unread.iter()?.take(limit) {
        let (_, id) = row?;
        if let Some(record) = get::<Record>(&messages, id.value())? {
            out.push(record);
        }
    }
    Ok(out)
}

/// One message by id.
pub(crate) fn message(db: &redb::Database, id: &MessageId) -> Result<Option<Record>, DbError> {
    let read = db.begin_read()?;
    let messages = read.open_table(MESSAGES)?;
    get(&messages, &id.0)
}

/// The peers with messages waiting to go (outbox or read receipts).
pub(crate) fn peers_with_work(db: &redb::Database) -> Result<Vec<NodeId>, DbError> {
    let read = db.begin_read()?;
    let mut peers = std::collections::BTreeSet::new();
    for row in read.open_table(OUTBOX)?.iter()? {
        let (key, _) = row?;
        peers.extend(NodeId::from_slice(key.value().0).ok());
    }
    for row in read.open_table(READ_RECEIPTS)?.iter()? {
        let (key, _) = row?;
        peers.extend(NodeId::from_slice(key.value().0).ok());
    }
    for row in read.open_table(DELIVERED_OWED)?.iter()? {
        let (key, _) = row?;
        peers.extend(NodeId::from_slice(key.value().0).ok());
    }
    Ok(peers.into_iter().collect())
}

/// Loads a conversation's order state.
pub(crate) fn order(
    table: &impl ReadableTable<(&'static [u8], u64), &'static [u8]>,
    peer: &NodeId,
    stream: u64,
) -> Result<Conversation, DbError> {
    Ok(match table.get((peer.as_bytes().as_slice(), stream))? {
        Some(value) => decode(value.value())?,
        None => Conversation::default(),
    })
}
