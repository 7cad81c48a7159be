//! The messenger's state: the database, the node's Olm account and the
//! sessions with its peers, and every change to them. All of it is
//! synchronous (Olm is computation, redb blocks on its commits); the
//! driver calls it from blocking threads, one change at a time.

use std::collections::HashMap;
use std::sync::Arc;

use fogwire_identity::{Keypair, NodeId};
use fogwire_msg_proto::order::Arrival;
use fogwire_msg_proto::wire::Sealing;
use fogwire_msg_proto::{Body, Card, Envelope, MessageId, Plain, Receipt, ReceiptKind, Refusal};
use redb::{ReadableTable, WriteTransaction};
use vodozemac::Curve25519PublicKey;
use vodozemac::olm::{Account, AccountPickle, OlmMessage, Session, SessionConfig, SessionPickle};

use crate::db::{self, Contact, DbError, Record, Status};

mod group;
pub use group::{Group, GroupEntry, GroupError, GroupEvent, Standing};

/// Olm sessions kept per peer: a new one starts when both ends begin a
/// conversation at once, or when a peer lost its own.
const SESSIONS_PER_PEER: usize = 4;
/// Peers whose sessions are kept in memory; beyond, the cache starts over
/// (the sessions are on disk).
const SESSION_CACHE_MAX: usize = 1_024;
/// Unread (and held) messages one stranger may leave — a node this one
/// never wrote to — and all strangers together.
pub const STRANGER_UNREAD_MAX: u64 = 1_000;
pub const STRANGERS_UNREAD_MAX: u64 = 20_000;
/// Unread (and held) messages one contact may leave.
pub const CONTACT_UNREAD_MAX: u64 = 1_000_000;

/// What became of one envelope a peer handed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// On disk (shown, held, or a duplicate): acknowledge it.
    Taken(MessageId),
    /// Never to be taken (or not now, for [`Refusal::OverQuota`]).
    Refused(MessageId, Refusal),
    /// Not even an envelope: nothing to answer.
    Malformed(String),
}

/// The messenger's state (see the module's documentation).
pub struct State {
    db: redb::Database,
    key: Arc<Keypair>,
    me: NodeId,
    account: Account,
    pickle_key: [u8; 32],
    card: Vec<u8>,
    /// What the card says (re-signed when the mailboxes change).
    card_body: Card,
    sessions: HashMap<NodeId, Vec<Session>>,
    /// Small groups' MLS state (`group.rs`).
    mls: group::Mls,
    /// Peers with new messages in the outbox from work the network
    /// caused (a member asking to leave a group): the driver wakes their
    /// delivery ([`State::take_wakes`]).
    wakes: Vec<NodeId>,
    /// Group frames whose turn came in this transaction, applied at its
    /// end, once no table is open (sender, frame, when).
    group_inbox: Vec<(NodeId, Vec<u8>, u64)>,
}

/// What a queued message carries.
pub(crate) enum Outgoing {
    /// A text, shown in the conversation.
    Text(String),
    /// A group frame: not in the conversation's history (its record's
    /// text is empty; the frame waits in `group_frames`).
    Group(Vec<u8>),
}

/// What waits to go to one peer.
#[derive(Debug, Default)]
pub struct Pending {
    /// Messages in the outbox, in order.
    pub records: Vec<Record>,
    /// Read receipts owed.
    pub reads: Vec<MessageId>,
    /// Delivery receipts owed (for mail picked up from a mailbox).
    pub delivered: Vec<MessageId>,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.reads.is_empty() && self.delivered.is_empty()
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("me", &self.me)
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The OS's generator failing is not something to carry on past.
    if getrandom::fill(&mut bytes).is_err() {
        std::process::abort();
    }
    bytes
}

impl State {
    /// Opens the database at `path`, creating the Olm account on first use.
    pub fn load(path: &std::path::Path, key: Arc<Keypair>, now_ms: u64) -> Result<Self, DbError> {
        let db = db::open(path)?;
        let pickle_key = key.derive_secret("fogwire msg v1 olm pickle key");
        let write = db.begin_write()?;
        let account = {
            let mut meta = write.open_table(db::META)?;
            let stored = meta
                .get(db::META_ACCOUNT)?
                .map(|value| value.value().to_vec());
            match stored {
                Some(bytes) => {
                    let text = std::str::from_utf8(&bytes)
                        .map_err(|error| DbError::Corrupt(error.to_string()))?;
                    let pickle = AccountPickle::from_encrypted(text, &pickle_key)
                        .map_err(|error| DbError::Corrupt(format!("Olm account: {error}")))?;
                    Account::from_pickle(pickle)
                }
                None => {
                    let mut account = Account::new();
                    // Never marked published: vodozemac shows only an
                    // unpublished fallback key, and the card, made at each
                    // start, is how this one is published.
                    account.generate_fallback_key();
                    let pickle = account.pickle().encrypt(&pickle_key);
                    meta.insert(db::META_ACCOUNT, pickle.as_bytes())?;
                    account
                }
            }
        };
        write.commit()?;
        let me = key.node_id();
        let fallback_key = account
            .fallback_key()
            .values()
            .next()
            .map(Curve25519PublicKey::to_bytes)
            .ok_or_else(|| DbError::Corrupt("the Olm account has no fallback key".to_owned()))?;
        let card_body = Card {
            node: me,
            identity_key: account.curve25519_key().to_bytes(),
            fallback_key,
            issued_ms: now_ms,
            mailboxes: Vec::new(),
        };
        let mls = group::Mls::load(&key, &db)?;
        Ok(Self {
            mls,
            wakes: Vec::new(),
            group_inbox: Vec::new(),
            db,
            card: card_body.sign(&key),
            card_body,
            key,
            me,
            account,
            pickle_key,
            sessions: HashMap::new(),
        })
    }

    pub fn db(&self) -> &redb::Database {
        &self.db
    }

    /// This node's signed card.
    pub fn card(&self) -> &[u8] {
        &self.card
    }

    /// Names `mailboxes` (at most four) in this node's card, re-signing it
    /// if they changed: whether they did.
    pub fn set_mailboxes(&mut self, mailboxes: &[NodeId], now_ms: u64) -> bool {
        let mailboxes: Vec<NodeId> = mailboxes
            .iter()
            .filter(|mailbox| **mailbox != self.me)
            .take(fogwire_msg_proto::wire::MAILBOXES_MAX)
            .copied()
            .collect();
        if mailboxes == self.card_body.mailboxes {
            return false;
        }
        self.card_body.mailboxes = mailboxes;
        // A newer card replaces an older one wherever it is kept.
        self.card_body.issued_ms = now_ms.max(self.card_body.issued_ms + 1);
        self.card = self.card_body.sign(&self.key);
        true
    }

    /// The mailboxes this node's card names.
    pub fn mailboxes(&self) -> &[NodeId] {
        &self.card_body.mailboxes
    }

    /// Queues `texts` to `peer` in one transaction: their records, as
    /// queued, in order.
    pub fn queue(
        &mut self,
        peer: &NodeId,
        texts: Vec<String>,
        now_ms: u64,
    ) -> Result<Vec<Record>, DbError> {
        let write = self.db.begin_write()?;
        let texts = texts.into_iter().map(Outgoing::Text).collect();
        let records = enqueue(&write, peer, texts, now_ms)?;
        write.commit()?;
        Ok(records)
    }

    /// Peers whose outbox grew from work the network caused.
    pub fn take_wakes(&mut self) -> Vec<NodeId> {
        std::mem::take(&mut self.wakes)
    }

    /// Applies the group frames whose turn came in `write`.
    fn apply_group_inbox(&mut self, write: &WriteTransaction) -> Result<(), DbError> {
        for (from, frame, at_ms) in std::mem::take(&mut self.group_inbox) {
            self.group_receive(write, &from, &frame, at_ms)?;
        }
        Ok(())
    }

    /// Up to `limit` messages waiting for `peer`, in order, and the
    /// receipts owed to it.
    pub fn pending(&self, peer: &NodeId, limit: usize) -> Result<Pending, DbError> {
        use redb::ReadableDatabase;
        let records = self.outbox_after(peer, None, limit)?;
        let read = self.db.begin_read()?;
        let key = peer.as_bytes().as_slice();
        let owed = |table: redb::TableDefinition<(&[u8], &[u8]), ()>| -> Result<_, DbError> {
            let receipts = read.open_table(table)?;
            let mut ids = Vec::new();
            for row in receipts
                .range((key, [0u8; 0].as_slice())..)?
                .take(fogwire_msg_proto::wire::RECEIPT_IDS_MAX)
            {
                let (row_key, _) = row?;
                let (row_peer, id) = row_key.value();
                if row_peer != key {
                    break;
                }
                if let Ok(id) = <[u8; 16]>::try_from(id) {
                    ids.push(MessageId(id));
                }
            }
            Ok(ids)
        };
        Ok(Pending {
            records,
            reads: owed(db::READ_RECEIPTS)?,
            delivered: owed(db::DELIVERED_OWED)?,
        })
    }

    /// Up to `limit` messages waiting for `peer`, in order, after number
    /// `after` (from the first if none).
    pub fn outbox_after(
        &self,
        peer: &NodeId,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Record>, DbError> {
        use redb::ReadableDatabase;
        let read = self.db.begin_read()?;
        let outbox = read.open_table(db::OUTBOX)?;
        let messages = read.open_table(db::MESSAGES)?;
        let key = peer.as_bytes().as_slice();
        let Some(first) = after.map_or(Some(0), |after| after.checked_add(1)) else {
            return Ok(Vec::new());
        };
        let mut records = Vec::new();
        for row in outbox.range((key, first)..=(key, u64::MAX))?.take(limit) {
            let (_, id) = row?;
            if let Some(record) = db::get::<Record>(&messages, id.value())? {
                records.push(record);
            }
        }
        Ok(records)
    }

    /// Whether this node can seal for `peer` without its card.
    pub fn can_seal(&mut self, peer: &NodeId) -> Result<bool, DbError> {
        if !self.sessions_of(peer)?.is_empty() {
            return Ok(true);
        }
        Ok(self.card_of(peer)?.is_some())
    }

    /// The peer's card this node keeps, if any.
    pub fn card_of(&self, peer: &NodeId) -> Result<Option<Card>, DbError> {
        use redb::ReadableDatabase;
        let read = self.db.begin_read()?;
        let cards = read.open_table(db::CARDS)?;
        Ok(cards
            .get(peer.as_bytes().as_slice())?
            .and_then(|bytes| Card::verify(bytes.value()).ok()))
    }

    /// Keeps a peer's card if it is valid, its own, and newer than the one
    /// kept.
    pub fn remember_card(&mut self, peer: &NodeId, bytes: &[u8]) -> Result<bool, DbError> {
        let Ok(card) = Card::verify(bytes) else {
            return Ok(false);
        };
        if card.node != *peer {
            return Ok(false);
        }
        let newer = self
            .card_of(peer)?
            .is_none_or(|kept| card.issued_ms > kept.issued_ms);
        if newer {
            let write = self.db.begin_write()?;
            write
                .open_table(db::CARDS)?
                .insert(peer.as_bytes().as_slice(), bytes)?;
            write.commit()?;
        }
        Ok(true)
    }

    fn sessions_of(&mut self, peer: &NodeId) -> Result<&mut Vec<Session>, DbError> {
        if !self.sessions.contains_key(peer) {
            if self.sessions.len() >= SESSION_CACHE_MAX {
                self.sessions.clear();
            }
            use redb::ReadableDatabase;
            let read = self.db.begin_read()?;
            let table = read.open_table(db::SESSIONS)?;
            let pickles: Vec<String> = db::get(&table, peer.as_bytes())?.unwrap_or_default();
            let mut sessions = Vec::with_capacity(pickles.len());
            for pickle in pickles {
                let pickle = SessionPickle::from_encrypted(&pickle, &self.pickle_key)
                    .map_err(|error| DbError::Corrupt(format!("Olm session: {error}")))?;
                sessions.push(Session::from_pickle(pickle));
            }
            self.sessions.insert(*peer, sessions);
        }
        Ok(self.sessions.entry(*peer).or_default())
    }

    fn save_sessions(&mut self, write: &WriteTransaction, peer: &NodeId) -> Result<(), DbError> {
        let pickle_key = self.pickle_key;
        let sessions = self.sessions_of(peer)?;
        sessions.truncate(SESSIONS_PER_PEER);
        let pickles: Vec<String> = sessions
            .iter()
            .map(|session| session.pickle().encrypt(&pickle_key))
            .collect();
        write
            .open_table(db::SESSIONS)?
            .insert(peer.as_bytes().as_slice(), db::encode(&pickles)?.as_slice())?;
        Ok(())
    }

    /// Seals `records` for `peer` with the newest session (a new one from
    /// the peer's card if there is none), stores the ratchet's new state,
    /// and returns the envelopes, encoded. Fails without a session or card.
    pub fn seal(&mut self, peer: &NodeId, records: &[Record]) -> Result<Vec<Vec<u8>>, SealError> {
        if self.sessions_of(peer)?.is_empty() {
            let card = self.card_of(peer)?.ok_or(SealError::NoCard)?;
            let session = self
                .account
                .create_outbound_session(
                    SessionConfig::version_1(),
                    Curve25519PublicKey::from_bytes(card.identity_key),
                    Curve25519PublicKey::from_bytes(card.fallback_key),
                )
                .map_err(|error| SealError::Olm(error.to_string()))?;
            self.sessions_of(peer)?.insert(0, session);
        }
        let me = self.me;
        let card = self.card.clone();
        let bodies = self.bodies(records)?;
        let sessions = self.sessions_of(peer)?;
        let session = &mut sessions[0];
        let mut envelopes = Vec::with_capacity(records.len());
        for (record, body) in records.iter().zip(bodies) {
            let plain = Plain {
                id: record.id,
                stream: record.stream,
                seq: record.seq,
                sent_ms: record.sent_ms,
                body,
            };
            let message = session
                .encrypt(plain.encode())
                .map_err(|error| SealError::Olm(error.to_string()))?;
            let (kind, ciphertext) = message.to_parts();
            let sealing = if kind == 0 {
                Sealing::PreKey
            } else {
                Sealing::Normal
            };
            envelopes.push(
                Envelope {
                    sender: me,
                    recipient: *peer,
                    id: record.id,
                    sent_ms: record.sent_ms,
                    sealing,
                    card: (sealing == Sealing::PreKey).then(|| card.clone()),
                    ciphertext,
                }
                .encode(),
            );
        }
        // The ratchet moved: on disk before any of these bytes leave.
        let write = self.db.begin_write()?;
        self.save_sessions(&write, peer)?;
        write.commit()?;
        Ok(envelopes)
    }

    /// What each record carries: its text, or the group frame kept for it.
    fn bodies(&self, records: &[Record]) -> Result<Vec<Body>, DbError> {
        use redb::ReadableDatabase;
        if records.iter().all(|record| !record.text.is_empty()) {
            return Ok(records.iter().map(|r| Body::Text(r.text.clone())).collect());
        }
        let read = self.db.begin_read()?;
        let frames = read.open_table(db::GROUP_FRAMES)?;
        records
            .iter()
            .map(|record| {
                if !record.text.is_empty() {
                    return Ok(Body::Text(record.text.clone()));
                }
                let frame = frames.get(record.id.0.as_slice())?.ok_or_else(|| {
                    DbError::Corrupt(format!("the group frame of message {}", record.id))
                })?;
                Ok(Body::Group(frame.value().to_vec()))
            })
            .collect()
    }

    /// Opens envelopes that `from` handed over, in one transaction: what
    /// became of each, and the records now shown (for the live stream).
    ///
    /// `from` is the stream's peer, whom every envelope must be from; none
    /// for mail picked up from a mailbox, whose senders are proved by
    /// their sessions (Olm authenticates the sender's identity key, which
    /// a signed card ties to its node id) and are owed delivery receipts.
    pub fn open(
        &mut self,
        from: Option<&NodeId>,
        envelopes: &[Vec<u8>],
        now_ms: u64,
    ) -> Result<(Vec<Outcome>, Vec<Record>), DbError> {
        // What an earlier transaction that failed left is not to be
        // applied: its messages come again.
        self.group_inbox.clear();
        let write = self.db.begin_write()?;
        let mut outcomes = Vec::with_capacity(envelopes.len());
        let mut shown = Vec::new();
        let mut sessions_changed = std::collections::BTreeSet::new();
        for bytes in envelopes {
            let envelope = match Envelope::decode(bytes) {
                Ok(envelope) => envelope,
                Err(error) => {
                    outcomes.push(Outcome::Malformed(error.to_string()));
                    continue;
                }
            };
            let id = envelope.id;
            let sender = envelope.sender;
            if envelope.recipient != self.me || from.is_some_and(|from| sender != *from) {
                outcomes.push(Outcome::Refused(id, Refusal::Misaddressed));
                continue;
            }
            let owe = |outcome: &Outcome| -> Result<(), DbError> {
                if from.is_none()
                    && let Outcome::Taken(id) = outcome
                {
                    write
                        .open_table(db::DELIVERED_OWED)?
                        .insert((sender.as_bytes().as_slice(), id.0.as_slice()), ())?;
                }
                Ok(())
            };
            // A message seen before is acknowledged again, never opened
            // again (a replay, or a retry whose receipt was lost).
            let seen = write
                .open_table(db::MESSAGES)?
                .get(id.0.as_slice())?
                .is_some();
            if seen {
                let outcome = Outcome::Taken(id);
                owe(&outcome)?;
                outcomes.push(outcome);
                continue;
            }
            let plain = match self.decrypt(&write, &envelope) {
                Ok(plain) => plain,
                Err(refusal) => {
                    outcomes.push(Outcome::Refused(id, refusal));
                    continue;
                }
            };
            sessions_changed.insert(sender);
            let outcome = match self.take(&write, &sender, plain, now_ms, &mut shown)? {
                None => Outcome::Taken(id),
                Some(refusal) => Outcome::Refused(id, refusal),
            };
            owe(&outcome)?;
            outcomes.push(outcome);
        }
        for sender in sessions_changed {
            self.save_sessions(&write, &sender)?;
        }
        self.apply_group_inbox(&write)?;
        write.commit()?;
        Ok((outcomes, shown))
    }

    /// Opens one envelope with the sender's sessions, or starts a session
    /// from a pre-key envelope whose card ties its key to the sender.
    fn decrypt(&mut self, write: &WriteTransaction, envelope: &Envelope) -> Result<Plain, Refusal> {
        let sender = envelope.sender;
        let kind = match envelope.sealing {
            Sealing::PreKey => 0,
            Sealing::Normal => 1,
        };
        let message = OlmMessage::from_parts(kind, &envelope.ciphertext)
            .map_err(|_| Refusal::Undecryptable)?;
        let sessions = self
            .sessions_of(&sender)
            .map_err(|_| Refusal::Undecryptable)?;
        let mut opened = None;
        for (index, session) in sessions.iter_mut().enumerate() {
            if let OlmMessage::PreKey(pre_key) = &message
                && pre_key.session_id() != session.session_id()
            {
                continue;
            }
            if let Ok(bytes) = session.decrypt(&message) {
                opened = Some((index, bytes));
                break;
            }
        }
        let bytes = match (opened, &message) {
            (Some((index, bytes)), _) => {
                // The session that works comes first: replies use it.
                let session = sessions.remove(index);
                sessions.insert(0, session);
                bytes
            }
            (None, OlmMessage::PreKey(pre_key)) => {
                let card = envelope
                    .card
                    .as_deref()
                    .and_then(|card| Card::verify(card).ok())
                    .filter(|card| card.node == sender)
                    .ok_or(Refusal::Undecryptable)?;
                let created = self
                    .account
                    .create_inbound_session(
                        SessionConfig::version_1(),
                        Curve25519PublicKey::from_bytes(card.identity_key),
                        pre_key,
                    )
                    .map_err(|_| Refusal::Undecryptable)?;
                if let (Some(card_bytes), Ok(mut cards)) =
                    (envelope.card.as_deref(), write.open_table(db::CARDS))
                {
                    let _ = cards.insert(sender.as_bytes().as_slice(), card_bytes);
                }
                self.sessions_of(&sender)
                    .map_err(|_| Refusal::Undecryptable)?
                    .insert(0, created.session);
                created.plaintext
            }
            (None, OlmMessage::Normal(_)) => return Err(Refusal::Undecryptable),
        };
        let plain = Plain::decode(&bytes).map_err(|_| Refusal::Tampered)?;
        if plain.id != envelope.id || plain.sent_ms != envelope.sent_ms {
            return Err(Refusal::Tampered);
        }
        Ok(plain)
    }

    /// Stores an opened message in its conversation's order: shown (with
    /// what it unblocks), held, or a duplicate. Refuses it past the
    /// sender's quota.
    fn take(
        &mut self,
        write: &WriteTransaction,
        from: &NodeId,
        plain: Plain,
        now_ms: u64,
        shown: &mut Vec<Record>,
    ) -> Result<Option<Refusal>, DbError> {
        let mut contacts = write.open_table(db::CONTACTS)?;
        let mut contact: Contact = db::get(&contacts, from.as_bytes())?.unwrap_or_default();
        let stranger = contact.out_stream.is_none();
        let strangers_unread =
            db::meta_u64(&write.open_table(db::META)?, db::META_STRANGER_UNREAD)?;
        let waiting = contact.unread + contact.held;
        let over = if stranger {
            waiting >= STRANGER_UNREAD_MAX || strangers_unread >= STRANGERS_UNREAD_MAX
        } else {
            waiting >= CONTACT_UNREAD_MAX
        };
        let mut orders = write.open_table(db::ORDER)?;
        let mut order = db::order(&orders, from, plain.stream)?;
        let arrival = if over {
            // A duplicate is still known as one, over quota or not.
            if plain.seq < order.next || order.held.contains_key(&plain.seq) {
                Arrival::Duplicate
            } else {
                return Ok(Some(Refusal::OverQuota));
            }
        } else {
            order.arrive(plain.seq, now_ms)
        };
        let text = match plain.body {
            Body::Text(text) => text,
            Body::Group(frame) => {
                // Kept until its turn comes (now, or once a gap fills).
                write
                    .open_table(db::GROUP_FRAMES)?
                    .insert(plain.id.0.as_slice(), frame.as_slice())?;
                String::new()
            }
        };
        let record = Record {
            id: plain.id,
            peer: *from.as_bytes(),
            outgoing: false,
            text,
            sent_ms: plain.sent_ms,
            stream: plain.stream,
            seq: plain.seq,
            status: Status::Held,
            position: None,
            received_ms: Some(now_ms),
            delivered_ms: None,
            read_ms: None,
            error: None,
        };
        let mut messages = write.open_table(db::MESSAGES)?;
        let mut added = 0;
        let mut consumed = 0;
        match arrival {
            Arrival::Duplicate => return Ok(None),
            Arrival::Refuse => return Ok(Some(Refusal::OverQuota)),
            Arrival::Hold => {
                write.open_table(db::HELD)?.insert(
                    (from.as_bytes().as_slice(), plain.stream, plain.seq),
                    record.id.0.as_slice(),
                )?;
                messages.insert(record.id.0.as_slice(), db::encode(&record)?.as_slice())?;
                contact.held += 1;
                added += 1;
            }
            Arrival::Deliver { released } => {
                let mut to_show = vec![record];
                let stream = (from, plain.stream);
                to_show.extend(unhold(write, &messages, &mut contact, stream, released)?);
                added += 1;
                // Group frames are applied, never left unread.
                consumed = self.show(write, &mut messages, &mut contact, to_show, shown)?;
            }
        }
        orders.insert(
            (from.as_bytes().as_slice(), plain.stream),
            db::encode(&order)?.as_slice(),
        )?;
        if stranger {
            write.open_table(db::META)?.insert(
                db::META_STRANGER_UNREAD,
                db::encode(&(strangers_unread + added).saturating_sub(consumed))?.as_slice(),
            )?;
        }
        contact.last_ms = now_ms;
        contacts.insert(from.as_bytes().as_slice(), db::encode(&contact)?.as_slice())?;
        Ok(None)
    }

    /// Shows received records, in order: each gets the next position in
    /// the history and joins the inbox. A record that carries a group
    /// frame is not shown: its frame goes to the group inbox, applied at
    /// the end of the transaction. Returns how many did.
    fn show(
        &mut self,
        write: &WriteTransaction,
        messages: &mut redb::Table<&[u8], &[u8]>,
        contact: &mut Contact,
        records: Vec<Record>,
        shown: &mut Vec<Record>,
    ) -> Result<u64, DbError> {
        let mut meta = write.open_table(db::META)?;
        let mut position = db::meta_u64(&meta, db::META_POSITION)?;
        let mut timeline = write.open_table(db::TIMELINE)?;
        let mut unread = write.open_table(db::UNREAD)?;
        // Opened only for records that carry group frames: most do not.
        let mut frames = None;
        let mut group_frames = 0;
        for mut record in records {
            if record.text.is_empty() {
                let frames = match &mut frames {
                    Some(frames) => frames,
                    None => frames.insert(write.open_table(db::GROUP_FRAMES)?),
                };
                let frame = frames
                    .remove(record.id.0.as_slice())?
                    .map(|frame| frame.value().to_vec());
                record.status = Status::Read;
                messages.insert(record.id.0.as_slice(), db::encode(&record)?.as_slice())?;
                if let (Some(frame), Some(from)) = (frame, record.peer()) {
                    let at_ms = record.received_ms.unwrap_or(record.sent_ms);
                    self.group_inbox.push((from, frame, at_ms));
                }
                group_frames += 1;
                continue;
            }
            position += 1;
            record.status = Status::Unread;
            record.position = Some(position);
            messages.insert(record.id.0.as_slice(), db::encode(&record)?.as_slice())?;
            timeline.insert((record.peer.as_slice(), position), record.id.0.as_slice())?;
            unread.insert(position, record.id.0.as_slice())?;
            contact.messages += 1;
            contact.unread += 1;
            contact.last_text = preview(&record.text);
            shown.push(record);
        }
        meta.insert(db::META_POSITION, db::encode(&position)?.as_slice())?;
        Ok(group_frames)
    }

    /// Shows what gaps held back for too long (their messages given up
    /// on), in every conversation: the records now shown.
    pub fn release_overdue(&mut self, now_ms: u64) -> Result<Vec<Record>, DbError> {
        use redb::ReadableDatabase;
        let waiting: Vec<(NodeId, u64)> = {
            let read = self.db.begin_read()?;
            let orders = read.open_table(db::ORDER)?;
            let mut waiting = Vec::new();
            for row in orders.iter()? {
                let (key, value) = row?;
                let order: fogwire_msg_proto::Conversation = db::decode(value.value())?;
                if order
                    .next_deadline()
                    .is_some_and(|deadline| deadline <= now_ms)
                {
                    let (peer, stream) = key.value();
                    if let Ok(peer) = NodeId::from_slice(peer) {
                        waiting.push((peer, stream));
                    }
                }
            }
            waiting
        };
        let mut shown = Vec::new();
        if waiting.is_empty() {
            return Ok(shown);
        }
        self.group_inbox.clear();
        let write = self.db.begin_write()?;
        for (peer, stream) in waiting {
            let mut orders = write.open_table(db::ORDER)?;
            let mut order = db::order(&orders, &peer, stream)?;
            let released = order.overdue(now_ms);
            orders.insert(
                (peer.as_bytes().as_slice(), stream),
                db::encode(&order)?.as_slice(),
            )?;
            drop(orders);
            let mut contacts = write.open_table(db::CONTACTS)?;
            let mut contact: Contact = db::get(&contacts, peer.as_bytes())?.unwrap_or_default();
            let mut messages = write.open_table(db::MESSAGES)?;
            let to_show = unhold(&write, &messages, &mut contact, (&peer, stream), released)?;
            if !to_show.is_empty() {
                let frames = self.show(&write, &mut messages, &mut contact, to_show, &mut shown)?;
                if frames > 0 && contact.out_stream.is_none() {
                    let mut meta = write.open_table(db::META)?;
                    let strangers = db::meta_u64(&meta, db::META_STRANGER_UNREAD)?;
                    let left = strangers.saturating_sub(frames);
                    meta.insert(db::META_STRANGER_UNREAD, db::encode(&left)?.as_slice())?;
                }
            }
            contacts.insert(peer.as_bytes().as_slice(), db::encode(&contact)?.as_slice())?;
        }
        self.apply_group_inbox(&write)?;
        write.commit()?;
        Ok(shown)
    }

    /// Applies a receipt from `peer` for messages this node sent it: the
    /// ids it names and the records whose status changed.
    pub fn receipt(
        &mut self,
        peer: &NodeId,
        bytes: &[u8],
    ) -> Result<(Vec<MessageId>, Vec<Record>), ReceiptError> {
        let receipt = Receipt::verify(bytes).map_err(ReceiptError::Invalid)?;
        if receipt.by != *peer || receipt.to != self.me {
            return Err(ReceiptError::NotOurs);
        }
        let mut write = self.db.begin_write()?;
        let mut changed = Vec::new();
        let mut dirty = false;
        {
            let mut messages = write.open_table(db::MESSAGES)?;
            let mut outbox = write.open_table(db::OUTBOX)?;
            let mut frames = write.open_table(db::GROUP_FRAMES)?;
            for id in &receipt.ids {
                let Some(mut record) = db::get::<Record>(&messages, &id.0)? else {
                    continue;
                };
                if !record.outgoing || record.peer != *peer.as_bytes() {
                    continue;
                }
                let before = record.status;
                match receipt.kind {
                    // Only a mailbox signs that it holds mail
                    // (`stored_receipt`).
                    ReceiptKind::Stored => continue,
                    ReceiptKind::Delivered => {
                        if matches!(
                            record.status,
                            Status::Queued | Status::Stored | Status::Failed
                        ) {
                            record.status = Status::Delivered;
                        }
                        record.delivered_ms.get_or_insert(receipt.at_ms);
                    }
                    ReceiptKind::Read => {
                        record.status = Status::Read;
                        record.delivered_ms.get_or_insert(receipt.at_ms);
                        record.read_ms.get_or_insert(receipt.at_ms);
                    }
                }
                record.error = None;
                dirty |= outbox
                    .remove((peer.as_bytes().as_slice(), record.seq))?
                    .is_some();
                if record.text.is_empty() {
                    dirty |= frames.remove(id.0.as_slice())?.is_some();
                }
                if record.status != before {
                    dirty = true;
                    messages.insert(id.0.as_slice(), db::encode(&record)?.as_slice())?;
                    changed.push(record);
                }
            }
        }
        // A receipt that changes nothing (a repeat, or for unknown ids)
        // costs no disk write: a peer cannot make this node sync its disk
        // at will.
        if dirty {
            // Not synced to disk on its own (the next commit that is takes
            // it along): if the node stops before, the messages are still
            // in the outbox, go again, and the peer, which knows them,
            // signs for them again. One sync fewer on every message's way.
            write
                .set_durability(redb::Durability::None)
                .map_err(|error| DbError::Redb(error.to_string()))?;
            write.commit()?;
        } else {
            write.abort()?;
        }
        Ok((receipt.ids, changed))
    }

    /// A delivery receipt for `ids`, signed, for `peer`.
    pub fn sign_receipt(
        &self,
        peer: &NodeId,
        kind: ReceiptKind,
        ids: Vec<MessageId>,
        now_ms: u64,
    ) -> Vec<u8> {
        Receipt {
            kind,
            by: self.me,
            to: *peer,
            at_ms: now_ms,
            ids,
        }
        .sign(&self.key)
    }

    /// Acts on `peer`'s refusal of a message this node sent it: a broken
    /// session is dropped (the next attempt starts a new one from a fresh
    /// card); a message the peer will never take is marked failed.
    pub fn refused(
        &mut self,
        peer: &NodeId,
        id: MessageId,
        reason: Refusal,
    ) -> Result<Option<Record>, DbError> {
        let write = self.db.begin_write()?;
        let mut changed = None;
        match reason {
            Refusal::Undecryptable => {
                self.sessions.remove(peer);
                write
                    .open_table(db::SESSIONS)?
                    .remove(peer.as_bytes().as_slice())?;
                write
                    .open_table(db::CARDS)?
                    .remove(peer.as_bytes().as_slice())?;
            }
            Refusal::OverQuota | Refusal::NotServed => {}
            Refusal::Misaddressed | Refusal::Tampered => {
                let mut messages = write.open_table(db::MESSAGES)?;
                if let Some(mut record) = db::get::<Record>(&messages, &id.0)?
                    && record.outgoing
                    && record.peer == *peer.as_bytes()
                    && record.status == Status::Queued
                {
                    record.status = Status::Failed;
                    record.error = Some(format!("the recipient refused it: {reason:?}"));
                    messages.insert(id.0.as_slice(), db::encode(&record)?.as_slice())?;
                    write
                        .open_table(db::OUTBOX)?
                        .remove((peer.as_bytes().as_slice(), record.seq))?;
                    changed = Some(record);
                }
            }
        }
        write.commit()?;
        Ok(changed)
    }

    /// Notes why the last attempt to reach `peer` failed on its queued
    /// messages, and gives up on those past their time to live: the
    /// records given up on.
    pub fn attempt_failed(
        &mut self,
        peer: &NodeId,
        error: &str,
        now_ms: u64,
    ) -> Result<Vec<Record>, DbError> {
        let pending = self.outbox_after(peer, None, usize::MAX)?;
        let write = self.db.begin_write()?;
        let mut failed = Vec::new();
        {
            let mut messages = write.open_table(db::MESSAGES)?;
            let mut outbox = write.open_table(db::OUTBOX)?;
            for mut record in pending {
                if fogwire_msg_proto::retry::expired(record.sent_ms, now_ms) {
                    record.status = Status::Failed;
                    record.error = Some(format!("undelivered for 14 days; last: {error}"));
                    outbox.remove((peer.as_bytes().as_slice(), record.seq))?;
                    failed.push(record.clone());
                } else if record.error.as_deref() == Some(error) {
                    continue;
                } else {
                    record.error = Some(error.to_owned());
                }
                messages.insert(record.id.0.as_slice(), db::encode(&record)?.as_slice())?;
            }
        }
        write.commit()?;
        Ok(failed)
    }

    /// Marks `unread` (received messages, as read from the inbox) read,
    /// and owes their senders read receipts: the records read.
    pub fn mark_read(&mut self, unread: Vec<Record>, now_ms: u64) -> Result<Vec<Record>, DbError> {
        let write = self.db.begin_write()?;
        let mut read = Vec::new();
        {
            let mut messages = write.open_table(db::MESSAGES)?;
            let mut unread_table = write.open_table(db::UNREAD)?;
            let mut receipts = write.open_table(db::READ_RECEIPTS)?;
            let mut contacts = write.open_table(db::CONTACTS)?;
            let mut meta = write.open_table(db::META)?;
            let mut strangers_unread = db::meta_u64(&meta, db::META_STRANGER_UNREAD)?;
            for mut record in unread {
                if record.outgoing || record.status != Status::Unread {
                    continue;
                }
                if let Some(position) = record.position {
                    unread_table.remove(position)?;
                }
                record.status = Status::Read;
                record.read_ms = Some(now_ms);
                messages.insert(record.id.0.as_slice(), db::encode(&record)?.as_slice())?;
                receipts.insert((record.peer.as_slice(), record.id.0.as_slice()), ())?;
                let mut contact: Contact = db::get(&contacts, &record.peer)?.unwrap_or_default();
                contact.unread = contact.unread.saturating_sub(1);
                if contact.out_stream.is_none() {
                    strangers_unread = strangers_unread.saturating_sub(1);
                }
                contacts.insert(record.peer.as_slice(), db::encode(&contact)?.as_slice())?;
                read.push(record);
            }
            meta.insert(
                db::META_STRANGER_UNREAD,
                db::encode(&strangers_unread)?.as_slice(),
            )?;
        }
        write.commit()?;
        Ok(read)
    }

    /// Forgets the read and delivery receipts owed to `peer` once it
    /// took them.
    pub fn receipts_sent(
        &mut self,
        peer: &NodeId,
        reads: &[MessageId],
        delivered: &[MessageId],
    ) -> Result<(), DbError> {
        let write = self.db.begin_write()?;
        for (table, ids) in [(db::READ_RECEIPTS, reads), (db::DELIVERED_OWED, delivered)] {
            let mut receipts = write.open_table(table)?;
            for id in ids {
                receipts.remove((peer.as_bytes().as_slice(), id.0.as_slice()))?;
            }
        }
        write.commit()?;
        Ok(())
    }

    /// Checks a mailbox's `stored` receipt: the ids of the messages it
    /// signed for. The records are marked (`mark_stored`) once every
    /// mailbox has had its turn, so `Stored` never reads while a copy is
    /// still on its way to another.
    pub fn stored_receipt(
        &self,
        mailbox: &NodeId,
        bytes: &[u8],
    ) -> Result<Vec<MessageId>, ReceiptError> {
        let receipt = Receipt::verify(bytes).map_err(ReceiptError::Invalid)?;
        if receipt.by != *mailbox || receipt.to != self.me || receipt.kind != ReceiptKind::Stored {
            return Err(ReceiptError::NotOurs);
        }
        Ok(receipt.ids)
    }

    /// Marks queued messages to `recipient` held by a mailbox: the
    /// records changed.
    pub fn mark_stored(
        &mut self,
        recipient: &NodeId,
        ids: &[MessageId],
    ) -> Result<Vec<Record>, DbError> {
        let write = self.db.begin_write()?;
        let mut changed = Vec::new();
        {
            let mut messages = write.open_table(db::MESSAGES)?;
            for id in ids {
                let Some(mut record) = db::get::<Record>(&messages, &id.0)? else {
                    continue;
                };
                if record.outgoing
                    && record.peer == *recipient.as_bytes()
                    && record.status == Status::Queued
                {
                    record.status = Status::Stored;
                    record.error = None;
                    messages.insert(id.0.as_slice(), db::encode(&record)?.as_slice())?;
                    changed.push(record);
                }
            }
        }
        if changed.is_empty() {
            write.abort()?;
        } else {
            write.commit()?;
        }
        Ok(changed)
    }

    /// A receipt paying `mailbox` for `bytes` more of mail picked up from
    /// it (cumulative: it names all bytes so far), signed.
    pub fn pay(&mut self, mailbox: &NodeId, bytes: u64, now_ms: u64) -> Result<Vec<u8>, DbError> {
        let write = self.db.begin_write()?;
        let (seq, total) = {
            let mut paid = write.open_table(db::MAILBOX_PAID)?;
            let (last_seq, last_bytes) = paid
                .get(mailbox.as_bytes().as_slice())?
                .map_or((0, 0), |row| row.value());
            let next = (now_ms.max(last_seq + 1), last_bytes.saturating_add(bytes));
            paid.insert(mailbox.as_bytes().as_slice(), next)?;
            next
        };
        write.commit()?;
        Ok(fogwire_ledger_proto::receipt::MailboxReceipt {
            mailbox: *mailbox,
            seq,
            bytes: total,
            issued_at_ms: now_ms,
        }
        .sign(&self.key))
    }
}

/// Takes the messages numbered `seqs` of (peer, stream) out of the held
/// table: their records, in order, for showing.
fn unhold(
    write: &WriteTransaction,
    messages: &redb::Table<&[u8], &[u8]>,
    contact: &mut Contact,
    (peer, stream): (&NodeId, u64),
    seqs: Vec<u64>,
) -> Result<Vec<Record>, DbError> {
    let mut held = write.open_table(db::HELD)?;
    let mut records = Vec::with_capacity(seqs.len());
    for seq in seqs {
        let key = (peer.as_bytes().as_slice(), stream, seq);
        let Some(id) = held.remove(key)?.map(|id| id.value().to_vec()) else {
            continue;
        };
        if let Some(record) = db::get::<Record>(messages, &id)? {
            contact.held = contact.held.saturating_sub(1);
            records.push(record);
        }
    }
    Ok(records)
}

/// Queues `texts` to `peer` in `write`: their records, as queued, in
/// order.
pub(crate) fn enqueue(
    write: &WriteTransaction,
    peer: &NodeId,
    texts: Vec<Outgoing>,
    now_ms: u64,
) -> Result<Vec<Record>, DbError> {
    let mut records = Vec::with_capacity(texts.len());
    {
        let mut contacts = write.open_table(db::CONTACTS)?;
        let mut contact: Contact = db::get(&contacts, peer.as_bytes())?.unwrap_or_default();
        let mut meta = write.open_table(db::META)?;
        if contact.out_stream.is_none() {
            // A stranger no more: what it left here stops counting
            // against all strangers' quota.
            let strangers = db::meta_u64(&meta, db::META_STRANGER_UNREAD)?;
            let left = strangers.saturating_sub(contact.unread + contact.held);
            meta.insert(db::META_STRANGER_UNREAD, db::encode(&left)?.as_slice())?;
        }
        let (stream, mut next) = contact
            .out_stream
            .unwrap_or_else(|| (u64::from_be_bytes(random()), 0));
        let mut messages = write.open_table(db::MESSAGES)?;
        let mut timeline = write.open_table(db::TIMELINE)?;
        let mut outbox = write.open_table(db::OUTBOX)?;
        let mut position = db::meta_u64(&meta, db::META_POSITION)?;
        let mut frames = write.open_table(db::GROUP_FRAMES)?;
        for text in texts {
            let (text, frame) = match text {
                Outgoing::Text(text) => (text, None),
                Outgoing::Group(frame) => (String::new(), Some(frame)),
            };
            let shown = frame.is_none();
            if shown {
                position += 1;
            }
            let record = Record {
                id: MessageId(random()),
                peer: *peer.as_bytes(),
                outgoing: true,
                text,
                sent_ms: now_ms,
                stream,
                seq: next,
                status: Status::Queued,
                position: shown.then_some(position),
                received_ms: None,
                delivered_ms: None,
                read_ms: None,
                error: None,
            };
            messages.insert(record.id.0.as_slice(), db::encode(&record)?.as_slice())?;
            outbox.insert((peer.as_bytes().as_slice(), next), record.id.0.as_slice())?;
            if let Some(frame) = frame {
                frames.insert(record.id.0.as_slice(), frame.as_slice())?;
            } else {
                timeline.insert(
                    (peer.as_bytes().as_slice(), position),
                    record.id.0.as_slice(),
                )?;
                contact.messages += 1;
                contact.last_text = preview(&record.text);
            }
            contact.last_ms = now_ms;
            next += 1;
            records.push(record);
        }
        contact.out_stream = Some((stream, next));
        contacts.insert(peer.as_bytes().as_slice(), db::encode(&contact)?.as_slice())?;
        meta.insert(db::META_POSITION, db::encode(&position)?.as_slice())?;
    }
    Ok(records)
}

/// The first line of a text, shortened, for contact lists.
fn preview(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    match line.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}

/// Why messages could not be sealed for a peer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    #[error("no session with the peer and no card of it: ask it for its card first")]
    NoCard,
    #[error("Olm: {0}")]
    Olm(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Why a receipt was not applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    #[error("invalid receipt: {0}")]
    Invalid(fogwire_msg_proto::WireError),
    #[error("a receipt signed by another node than the stream's peer, or for another node")]
    NotOurs,
    #[error(transparent)]
    Db(#[from] DbError),
}

/// redb's errors, through [`DbError`], for the errors that wrap it.
macro_rules! through_db {
    ($target:ty: $($error:ty),*) => {$(
        impl From<$error> for $target {
            fn from(error: $error) -> Self {
                DbError::from(error).into()
            }
        }
    )*};
}
through_db!(ReceiptError: redb::TableError, redb::StorageError, redb::TransactionError, redb::CommitError);
through_db!(SealError: redb::TableError, redb::StorageError, redb::TransactionError, redb::CommitError);
