//! What this node holds as a mailbox: sealed envelopes for its owners,
//! in the messenger's database, counted against the quotas of
//! `fogwire_msg_proto::mailbox`.

use fogwire_identity::NodeId;
use fogwire_msg_proto::mailbox::{self, KNOWN_MAX, OwnerUsage};
use fogwire_msg_proto::{Envelope, MessageId, Refusal};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::db::{self, DbError};

/// (owner, number) → [`Held`]: envelopes held, in the order they came.
const HELD: TableDefinition<(&[u8], u64), &[u8]> = TableDefinition::new("mailbox_held");
/// (owner, id) → number: so a sender depositing again is a duplicate.
const IDS: TableDefinition<(&[u8], &[u8]), u64> = TableDefinition::new("mailbox_ids");
/// (owner, sender) → envelopes held from the sender.
const SENDERS: TableDefinition<(&[u8], &[u8]), u64> = TableDefinition::new("mailbox_senders");
/// owner → [`OwnerUsage`].
const OWNERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("mailbox_owners");
/// (owner, sender) → (): the owner's contacts, as it last told.
const KNOWN: TableDefinition<(&[u8], &[u8]), ()> = TableDefinition::new("mailbox_known");

/// One envelope held.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Held {
    id: MessageId,
    sender: [u8; 32],
    stored_ms: u64,
    /// Whether it counted as a stranger's.
    stranger: bool,
    envelope: Vec<u8>,
}

pub(crate) fn create(write: &WriteTransaction) -> Result<(), DbError> {
    write.open_table(HELD)?;
    write.open_table(IDS)?;
    write.open_table(SENDERS)?;
    write.open_table(OWNERS)?;
    write.open_table(KNOWN)?;
    Ok(())
}

/// What became of one envelope handed to the mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Deposit {
    /// Held (now or before).
    Stored(MessageId),
    Refused(MessageId, Refusal),
    /// Not an envelope.
    Malformed,
}

/// Holds the envelopes `sender` hands over, in one transaction, for the
/// owners `serves` accepts.
pub(crate) fn deposit(
    database: &redb::Database,
    sender: &NodeId,
    envelopes: &[Vec<u8>],
    serves: impl Fn(&NodeId) -> bool,
    now_ms: u64,
) -> Result<Vec<Deposit>, DbError> {
    let write = database.begin_write()?;
    let mut outcomes = Vec::with_capacity(envelopes.len());
    {
        let mut held = write.open_table(HELD)?;
        let mut ids = write.open_table(IDS)?;
        let mut senders = write.open_table(SENDERS)?;
        let mut owners = write.open_table(OWNERS)?;
        let known = write.open_table(KNOWN)?;
        for bytes in envelopes {
            let Ok(envelope) = Envelope::decode(bytes) else {
                outcomes.push(Deposit::Malformed);
                continue;
            };
            let id = envelope.id;
            // A sender deposits only its own mail.
            if envelope.sender != *sender {
                outcomes.push(Deposit::Refused(id, Refusal::Misaddressed));
                continue;
            }
            let owner = envelope.recipient;
            if !serves(&owner) {
                outcomes.push(Deposit::Refused(id, Refusal::NotServed));
                continue;
            }
            let owner_key = owner.as_bytes().as_slice();
            if ids.get((owner_key, id.0.as_slice()))?.is_some() {
                outcomes.push(Deposit::Stored(id));
                continue;
            }
            let pair = (owner_key, sender.as_bytes().as_slice());
            let mut usage: OwnerUsage = db::get(&owners, owner_key)?.unwrap_or_default();
            let from_sender = senders.get(pair)?.map_or(0, |count| count.value());
            let is_known = known.get(pair)?.is_some();
            if let Err(refusal) = usage.admit(from_sender, is_known, bytes.len()) {
                outcomes.push(Deposit::Refused(id, refusal));
                continue;
            }
            let number = usage.next;
            usage.next += 1;
            usage.count(is_known, bytes.len(), false);
            let record = Held {
                id,
                sender: *sender.as_bytes(),
                stored_ms: now_ms,
                stranger: !is_known,
                envelope: bytes.clone(),
            };
            held.insert((owner_key, number), db::encode(&record)?.as_slice())?;
            ids.insert((owner_key, id.0.as_slice()), number)?;
            senders.insert(pair, from_sender + 1)?;
            owners.insert(owner_key, db::encode(&usage)?.as_slice())?;
            outcomes.push(Deposit::Stored(id));
        }
    }
    write.commit()?;
    Ok(outcomes)
}

/// Up to `max` envelopes held for `owner`, oldest first, and how many
/// more it holds.
pub(crate) fn pickup(
    database: &redb::Database,
    owner: &NodeId,
    max: usize,
) -> Result<(Vec<Vec<u8>>, u64), DbError> {
    let read = database.begin_read()?;
    let held = read.open_table(HELD)?;
    let owners = read.open_table(OWNERS)?;
    let key = owner.as_bytes().as_slice();
    let usage: OwnerUsage = db::get(&owners, key)?.unwrap_or_default();
    let mut envelopes = Vec::new();
    for row in held.range((key, 0)..=(key, u64::MAX))?.take(max) {
        let (_, value) = row?;
        let record: Held = db::decode(value.value())?;
        envelopes.push(record.envelope);
    }
    let remaining = usage.messages.saturating_sub(envelopes.len() as u64);
    Ok((envelopes, remaining))
}

/// Drops what `owner` took: the bytes of the envelopes dropped.
pub(crate) fn taken(
    database: &redb::Database,
    owner: &NodeId,
    taken: &[MessageId],
) -> Result<u64, DbError> {
    let write = database.begin_write()?;
    let bytes = {
        let mut ids = write.open_table(IDS)?;
        let owner_key = owner.as_bytes().as_slice();
        let mut numbers = Vec::with_capacity(taken.len());
        for id in taken {
            if let Some(number) = ids.remove((owner_key, id.0.as_slice()))? {
                numbers.push(number.value());
            }
        }
        drop(ids);
        drop_held(&write, owner, &numbers)?
    };
    if bytes > 0 {
        write.commit()?;
    } else {
        // Nothing matched (a repeat): no disk write for it.
        write.abort()?;
    }
    Ok(bytes)
}

/// Removes held envelopes by number, with their counts: their bytes.
fn drop_held(write: &WriteTransaction, owner: &NodeId, numbers: &[u64]) -> Result<u64, DbError> {
    let owner_key = owner.as_bytes().as_slice();
    let mut held = write.open_table(HELD)?;
    let mut senders = write.open_table(SENDERS)?;
    let mut owners = write.open_table(OWNERS)?;
    let mut usage: OwnerUsage = db::get(&owners, owner_key)?.unwrap_or_default();
    let mut bytes = 0;
    for number in numbers {
        let Some(value) = held.remove((owner_key, *number))? else {
            continue;
        };
        let record: Held = db::decode(value.value())?;
        drop(value);
        let pair = (owner_key, record.sender.as_slice());
        let count = senders.get(pair)?.map_or(0, |count| count.value());
        if count <= 1 {
            senders.remove(pair)?;
        } else {
            senders.insert(pair, count - 1)?;
        }
        usage.count(!record.stranger, record.envelope.len(), true);
        bytes += record.envelope.len() as u64;
    }
    owners.insert(owner_key, db::encode(&usage)?.as_slice())?;
    Ok(bytes)
}

/// Sets (with `replace`) or adds to `owner`'s contacts, as it tells them;
/// at most [`KNOWN_MAX`] are kept.
pub(crate) fn know(
    database: &redb::Database,
    owner: &NodeId,
    contacts: &[NodeId],
    replace: bool,
) -> Result<(), DbError> {
    let write = database.begin_write()?;
    {
        let mut known = write.open_table(KNOWN)?;
        let owner_key = owner.as_bytes().as_slice();
        if replace {
            let old: Vec<[u8; 32]> = known
                .range((owner_key, [0u8; 0].as_slice())..)?
                .map_while(|row| {
                    let (key, _) = row.ok()?;
                    let (row_owner, sender) = key.value();
                    (row_owner == owner_key)
                        .then(|| <[u8; 32]>::try_from(sender).ok())
                        .flatten()
                })
                .collect();
            for sender in old {
                known.remove((owner_key, sender.as_slice()))?;
            }
        }
        let mut count = known
            .range((owner_key, [0u8; 0].as_slice())..)?
            .take_while(|row| {
                row.as_ref()
                    .is_ok_and(|(key, _)| key.value().0 == owner_key)
            })
            .count();
        for contact in contacts {
            if count >= KNOWN_MAX {
                break;
            }
            if known
                .insert((owner_key, contact.as_bytes().as_slice()), ())?
                .is_none()
            {
                count += 1;
            }
        }
    }
    write.commit()?;
    Ok(())
}

/// Drops what was held past its time: how many envelopes.
pub(crate) fn sweep(database: &redb::Database, now_ms: u64) -> Result<usize, DbError> {
    let expired: Vec<(NodeId, u64, MessageId)> = {
        let read = database.begin_read()?;
        let held = read.open_table(HELD)?;
        let mut expired = Vec::new();
        for row in held.iter()? {
            let (key, value) = row?;
            let record: Held = db::decode(value.value())?;
            if mailbox::expired(record.stored_ms, now_ms) {
                let (owner, number) = key.value();
                if let Ok(owner) = NodeId::from_slice(owner) {
                    expired.push((owner, number, record.id));
                }
            }
        }
        expired
    };
    if expired.is_empty() {
        return Ok(0);
    }
    let write = database.begin_write()?;
    for (owner, number, id) in &expired {
        write
            .open_table(IDS)?
            .remove((owner.as_bytes().as_slice(), id.0.as_slice()))?;
        drop_held(&write, owner, &[*number])?;
    }
    write.commit()?;
    Ok(expired.len())
}

/// What this node holds for `owner`.
pub(crate) fn usage(database: &redb::Database, owner: &NodeId) -> Result<OwnerUsage, DbError> {
    let read = database.begin_read()?;
    let owners = read.open_table(OWNERS)?;
    Ok(db::get(&owners, owner.as_bytes())?.unwrap_or_default())
}
