//! Mailboxes: store and forward for nodes that are away
//! (`docs/protocol/messages.md`, "Mailboxes").
//!
//! - A node names up to four mailboxes in its card: its own always-on
//!   nodes (`[msg] mailboxes`), or, in a cluster, two boards chosen by
//!   rendezvous hashing. A mailbox keeps mail for the owners it serves
//!   (`[msg] mailbox_for`, or the boards of its cluster).
//! - A sender that cannot reach a recipient seals what waits and hands it
//!   to every mailbox of the recipient's card it can reach ([`deposit`]);
//!   each signs that it holds it (a `stored` receipt). The messages stay
//!   in the sender's outbox: if it sees the recipient first, it delivers
//!   them itself, and the recipient drops the copies it already has.
//! - The owner picks its mail up ([`collect`]) when it starts, when a
//!   mailbox becomes reachable, and every half minute: it opens each
//!   batch in one transaction, tells the mailbox what it took (which the
//!   mailbox then drops), pays it with a cumulative receipt, and owes
//!   each sender a delivery receipt, sent when the sender is reachable.
//!   A message has one id, so it is shown once however many copies come.

pub(crate) mod store;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fogwire_identity::NodeId;
use fogwire_ledger_proto::receipt::{self, ReceiptKind as LedgerKind};
use fogwire_msg_proto::wire::{KNOWN_PER_FRAME, RECEIPT_IDS_MAX};
use fogwire_msg_proto::{Envelope, Frame, MessageId, ReceiptKind};
use fogwire_route::services::BoxFuture;
use fogwire_route::{Constraints, RouteStream, Service};

use crate::frames::{BATCH_MAX, FrameReader, encode_all};
use crate::{Record, Shared};

/// The route service mailboxes take and hand out mail on.
pub const SERVICE: &str = "mailbox";
/// How long a mailbox stream may stay silent, and a peer may take to
/// answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an owner looks in its mailboxes even when nothing changed.
const COLLECT_EVERY: Duration = Duration::from_secs(30);
/// How often an owner looks whether a mailbox became reachable.
const REACHABLE_POLL: Duration = Duration::from_millis(250);
/// Batches of one recipient's mail deposited per failed attempt.
const DEPOSIT_BATCHES: usize = 16;
/// How often a mailbox drops what outlived its time.
const SWEEP_EVERY: Duration = Duration::from_secs(3_600);

/// The `mailbox` service: takes mail for the owners this node serves,
/// and hands each owner its own.
pub(crate) struct MailboxService {
    pub(crate) shared: Arc<Shared>,
}

impl Service for MailboxService {
    fn accept(&self, stream: RouteStream) -> BoxFuture<()> {
        Box::pin(serve(self.shared.clone(), stream))
    }
}

async fn serve(shared: Arc<Shared>, mut stream: RouteStream) {
    let peer = stream.peer();
    let mut reader = FrameReader::default();
    let mut first_known = true;
    loop {
        let frames = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            frames = reader.next_batch(&mut stream, crate::serve::IDLE) => match frames {
                Ok(frames) => frames,
                Err(error) => {
                    tracing::debug!(peer = %peer.short(), %error, "mailbox stream closed");
                    return;
                }
            },
        };
        let mut envelopes = Vec::new();
        let mut answers = Vec::new();
        for frame in frames {
            let result = match frame {
                Frame::Envelope(bytes) => {
                    envelopes.push(bytes);
                    Ok(())
                }
                Frame::Pickup { max } => {
                    let max = usize::from(max).min(BATCH_MAX);
                    match shared
                        .with_state(move |state| store::pickup(state.db(), &peer, max))
                        .await
                    {
                        Ok(Ok((held, remaining))) => {
                            answers.extend(held.into_iter().map(Frame::Envelope));
                            let remaining = u32::try_from(remaining).unwrap_or(u32::MAX);
                            answers.push(Frame::BatchEnd { remaining });
                            Ok(())
                        }
                        Ok(Err(error)) => Err(error.to_string()),
                        Err(_) => return,
                    }
                }
                Frame::Taken(ids) => shared
                    .with_state(move |state| store::taken(state.db(), &peer, &ids).map(|_| ()))
                    .await
                    .map_or(Ok(()), |done| done.map_err(|error| error.to_string())),
                Frame::Known(contacts) => {
                    if !shared.serves(&peer) {
                        continue;
                    }
                    let replace = std::mem::take(&mut first_known);
                    shared
                        .with_state(move |state| store::know(state.db(), &peer, &contacts, replace))
                        .await
                        .map_or(Ok(()), |done| done.map_err(|error| error.to_string()))
                }
                // Only an owner pays (and only its own receipt is kept).
                Frame::Pay(bytes) if shared.serves(&peer) => {
                    shared.earned(peer, bytes);
                    Ok(())
                }
                Frame::Pay(_)
                | Frame::CardRequest
                | Frame::Card(_)
                | Frame::Receipt(_)
                | Frame::Refused { .. }
                | Frame::BatchEnd { .. }
                | Frame::Peering { .. }
                | Frame::KeyPackageRequest
                | Frame::KeyPackage(_) => Ok(()),
            };
            if let Err(error) = result {
                tracing::warn!(peer = %peer.short(), %error, "mailbox storage failed");
                return;
            }
        }
        if !envelopes.is_empty() {
            let now = fogwire_env::unix_ms();
            let serving = shared.clone();
            let deposited = shared
                .with_state(move |state| {
                    store::deposit(
                        state.db(),
                        &peer,
                        &envelopes,
                        |owner| serving.serves(owner),
                        now,
                    )
                })
                .await;
            let outcomes = match deposited {
                Ok(Ok(outcomes)) => outcomes,
                Ok(Err(error)) => {
                    tracing::warn!(peer = %peer.short(), %error, "mail could not be stored; the sender will try again");
                    return;
                }
                Err(_) => return,
            };
            let mut stored = Vec::new();
            for outcome in outcomes {
                match outcome {
                    store::Deposit::Stored(id) => stored.push(id),
                    store::Deposit::Refused(id, reason) => {
                        answers.push(Frame::Refused { id, reason })
                    }
                    store::Deposit::Malformed => {
                        tracing::debug!(peer = %peer.short(), "malformed envelope; closing the mailbox stream");
                        return;
                    }
                }
            }
            let now = fogwire_env::unix_ms();
            for ids in stored.chunks(RECEIPT_IDS_MAX) {
                let ids = ids.to_vec();
                let receipt = shared
                    .with_state(move |state| {
                        state.sign_receipt(&peer, ReceiptKind::Stored, ids, now)
                    })
                    .await;
                match receipt {
                    Ok(receipt) => answers.push(Frame::Receipt(receipt)),
                    Err(_) => return,
                }
            }
        }
        if !answers.is_empty() && stream.write_all(encode_all(&answers)).await.is_err() {
            return;
        }
    }
}

impl Shared {
    /// Whether this node keeps mail for `owner`.
    pub(crate) fn serves(&self, owner: &NodeId) -> bool {
        self.lock(&self.owners).contains(owner)
    }

    /// Keeps an owner's storage receipt for this node, if it is one and
    /// newer than the last.
    fn earned(&self, owner: NodeId, bytes: Vec<u8>) {
        let Ok(claim) = receipt::verify(LedgerKind::Mailbox, &bytes) else {
            tracing::debug!(peer = %owner.short(), "invalid mailbox receipt");
            return;
        };
        if claim.payee.0 != *self.me.as_bytes() || claim.payer.0 != *owner.as_bytes() {
            return;
        }
        let mut earned = self.lock(&self.earned);
        let newer = earned
            .get(&owner)
            .is_none_or(|(seen, _)| claim.bytes > *seen);
        if newer && (earned.len() < crate::EARNED_MAX || earned.contains_key(&owner)) {
            earned.insert(owner, (claim.bytes, bytes));
        }
    }
}

/// Hands what waits for `peer` (and is not held by a mailbox yet) to the
/// mailboxes its card names: how many messages some mailbox now holds.
pub(crate) async fn deposit(shared: &Arc<Shared>, peer: NodeId) -> usize {
    let card = shared.with_state(move |state| state.card_of(&peer)).await;
    let Ok(Ok(Some(card))) = card else { return 0 };
    let mut reachable = Vec::new();
    for mailbox in card.mailboxes {
        let paths = shared
            .routing
            .find(mailbox, Constraints::default(), 1)
            .await;
        if mailbox == shared.me || paths.is_ok_and(|paths| !paths.is_empty()) {
            reachable.push(mailbox);
        }
    }
    if reachable.is_empty() {
        return 0;
    }
    let mut stored = 0;
    let mut after = None;
    for _ in 0..DEPOSIT_BATCHES {
        let records = shared
            .with_state(move |state| state.outbox_after(&peer, after, BATCH_MAX))
            .await;
        let Ok(Ok(records)) = records else { break };
        let Some(last) = records.last() else { break };
        after = Some(last.seq);
        let waiting: Vec<Record> = records
            .into_iter()
            .filter(|record| record.status == crate::Status::Queued)
            .collect();
        if waiting.is_empty() {
            continue;
        }
        let Ok(frames) = crate::deliver::seal(shared, peer, &waiting).await else {
            break;
        };
        let envelopes: Vec<Vec<u8>> = frames
            .into_iter()
            .filter_map(|frame| match frame {
                Frame::Envelope(bytes) => Some(bytes),
                _ => None,
            })
            .collect();
        let mut held: BTreeSet<MessageId> = BTreeSet::new();
        for mailbox in &reachable {
            match hand_over(shared, *mailbox, &envelopes).await {
                Ok(ids) => held.extend(ids),
                Err(error) => {
                    tracing::debug!(peer = %peer.short(), mailbox = %mailbox.short(), %error, "cannot leave mail at a mailbox")
                }
            }
        }
        // Marked only now that every mailbox has had its copy: a sender
        // (or a test) that sees `Stored` sees all the copies there are.
        let ids: Vec<MessageId> = held.into_iter().collect();
        if ids.is_empty() {
            continue;
        }
        stored += ids.len();
        let changed = shared
            .with_state(move |state| state.mark_stored(&peer, &ids))
            .await;
        match changed {
            Ok(Ok(changed)) => shared.publish(changed),
            Ok(Err(error)) => {
                tracing::warn!(peer = %peer.short(), %error, "cannot mark mail held by a mailbox");
            }
            Err(_) => break,
        }
    }
    stored
}

/// Hands `envelopes` to one of their recipient's mailboxes (this node
/// itself, or another over a route): the ids it now holds.
async fn hand_over(
    shared: &Arc<Shared>,
    mailbox: NodeId,
    envelopes: &[Vec<u8>],
) -> Result<Vec<MessageId>, String> {
    let now = fogwire_env::unix_ms();
    if mailbox == shared.me {
        let me = shared.me;
        let envelopes = envelopes.to_vec();
        let ids = shared
            .with_state(move |state| -> Result<_, crate::DbError> {
                let outcomes = store::deposit(state.db(), &me, &envelopes, |_| true, now)?;
                Ok(outcomes
                    .into_iter()
                    .filter_map(|outcome| match outcome {
                        store::Deposit::Stored(id) => Some(id),
                        _ => None,
                    })
                    .collect::<Vec<MessageId>>())
            })
            .await
            .map_err(|error| error.to_string())?
            .map_err(|error| error.to_string())?;
        return Ok(ids);
    }
    shared
        .over_route(mailbox, SERVICE, |mut stream| async move {
        let frames: Vec<Frame> = envelopes.iter().cloned().map(Frame::Envelope).collect();
        stream
            .write_all(encode_all(&frames))
            .await
            .map_err(|error| error.to_string())?;
        let mut reader = FrameReader::default();
        let mut answered = 0;
        let mut held = Vec::new();
        while answered < envelopes.len() {
            let frames = reader
                .next_batch(&mut stream, ANSWER_TIMEOUT)
                .await
                .map_err(|error| error.to_string())?;
            for frame in frames {
                match frame {
                    Frame::Receipt(bytes) => {
                        let applied = shared
                            .with_state(move |state| state.stored_receipt(&mailbox, &bytes))
                            .await
                            .map_err(|error| error.to_string())?;
                        match applied {
                            Ok(ids) => {
                                answered += ids.len();
                                held.extend(ids);
                            }
                            Err(error) => return Err(error.to_string()),
                        }
                    }
                    Frame::Refused { id, reason } => {
                        answered += 1;
                        tracing::debug!(mailbox = %mailbox.short(), %id, ?reason, "a mailbox refused mail");
                    }
                    _ => {}
                }
            }
        }
        let _ = stream.finish().await;
        Ok(held)
    })
    .await
}

/// The owner's side: picks up what its mailboxes hold, when one becomes
/// reachable, every [`COLLECT_EVERY`], and when woken.
pub(crate) async fn collect(shared: Arc<Shared>) {
    let mut last: HashMap<NodeId, Instant> = HashMap::new();
    let mut reachable: HashMap<NodeId, bool> = HashMap::new();
    let mut tick = tokio::time::interval(REACHABLE_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mailboxes = shared.lock(&shared.mailboxes).clone();
        reachable.retain(|mailbox, _| mailboxes.contains(mailbox));
        last.retain(|mailbox, _| mailboxes.contains(mailbox));
        for mailbox in mailboxes {
            let paths = shared
                .routing
                .find(mailbox, Constraints::default(), 1)
                .await;
            let now_reachable = paths.is_ok_and(|paths| !paths.is_empty());
            let was = reachable.insert(mailbox, now_reachable).unwrap_or(false);
            let due = last
                .get(&mailbox)
                .is_none_or(|at| at.elapsed() >= COLLECT_EVERY);
            if !now_reachable || (was && !due) {
                continue;
            }
            match pick_up(&shared, mailbox).await {
                Ok(count) => {
                    last.insert(mailbox, Instant::now());
                    if count > 0 {
                        tracing::info!(mailbox = %mailbox.short(), count, "picked up mail held while this node was away");
                    }
                }
                Err(error) => {
                    // Looked at again on the next poll that finds it
                    // reachable after COLLECT_EVERY.
                    last.insert(mailbox, Instant::now());
                    tracing::debug!(mailbox = %mailbox.short(), %error, "cannot pick up mail");
                }
            }
        }
    }
}

/// Drops, every hour, what this node held as a mailbox past its time.
pub(crate) async fn sweep(shared: Arc<Shared>) {
    crate::every(
        shared,
        SWEEP_EVERY,
        "cannot drop expired mail",
        |state, now| store::sweep(state.db(), now),
        |_, count| {
            if count > 0 {
                tracing::info!(count, "dropped mail held past its 14 days");
            }
        },
    )
    .await;
}

/// Picks up everything `mailbox` holds for this node: how many messages.
async fn pick_up(shared: &Arc<Shared>, mailbox: NodeId) -> Result<usize, String> {
    shared
        .over_route(mailbox, SERVICE, |mut stream| async move {
            let contacts = shared
                .with_state(|state| crate::db::contacts(state.db()))
                .await
                .map_err(|error| error.to_string())?
                .map_err(|error| error.to_string())?;
            let known: Vec<NodeId> = contacts
                .into_iter()
                .filter(|(_, contact)| contact.out_stream.is_some())
                .map(|(peer, _)| peer)
                .take(fogwire_msg_proto::mailbox::KNOWN_MAX)
                .collect();
            let mut frames: Vec<Frame> = known
                .chunks(KNOWN_PER_FRAME)
                .map(|chunk| Frame::Known(chunk.to_vec()))
                .collect();
            frames.push(Frame::Pickup {
                max: BATCH_MAX as u16,
            });
            let mut reader = FrameReader::default();
            let mut total = 0;
            loop {
                stream
                    .write_all(encode_all(&frames))
                    .await
                    .map_err(|error| error.to_string())?;
                let mut envelopes = Vec::new();
                let remaining = 'batch: loop {
                    let batch = reader
                        .next_batch(&mut stream, ANSWER_TIMEOUT)
                        .await
                        .map_err(|error| error.to_string())?;
                    for frame in batch {
                        match frame {
                            Frame::Envelope(bytes) if envelopes.len() < BATCH_MAX => {
                                envelopes.push(bytes)
                            }
                            Frame::BatchEnd { remaining } => break 'batch remaining,
                            _ => {}
                        }
                    }
                };
                if envelopes.is_empty() {
                    break;
                }
                total += envelopes.len();
                let taken = open_picked(shared, mailbox, envelopes).await?;
                frames = vec![Frame::Taken(taken.ids), Frame::Pay(taken.pay)];
                if remaining == 0 {
                    stream
                        .write_all(encode_all(&frames))
                        .await
                        .map_err(|error| error.to_string())?;
                    break;
                }
                frames.push(Frame::Pickup {
                    max: BATCH_MAX as u16,
                });
            }
            let _ = stream.finish().await;
            // The mailbox ends its side once it has read ours: by then it
            // dropped what was taken.
            let _ = tokio::time::timeout(ANSWER_TIMEOUT, async {
                while let Some(Ok(_)) = stream.read().await {}
            })
            .await;
            Ok(total)
        })
        .await
}

/// What an owner took from a batch of its mail.
struct Taken {
    /// Every envelope of the batch (opened, a duplicate, or refused: the
    /// mailbox drops them all).
    ids: Vec<MessageId>,
    /// The cumulative receipt that pays the mailbox for them.
    pay: Vec<u8>,
}

/// Opens mail picked up from `mailbox` in one transaction, owes its
/// senders delivery receipts, and signs the mailbox's pay.
async fn open_picked(
    shared: &Arc<Shared>,
    mailbox: NodeId,
    envelopes: Vec<Vec<u8>>,
) -> Result<Taken, String> {
    let now = fogwire_env::unix_ms();
    let ids: Vec<MessageId> = envelopes
        .iter()
        .filter_map(|bytes| Envelope::decode(bytes).ok().map(|envelope| envelope.id))
        .collect();
    let senders: BTreeSet<NodeId> = envelopes
        .iter()
        .filter_map(|bytes| Envelope::decode(bytes).ok().map(|envelope| envelope.sender))
        .collect();
    let bytes: u64 = envelopes.iter().map(|bytes| bytes.len() as u64).sum();
    let (shown, pay, wakes) = shared
        .with_state(move |state| -> Result<_, crate::DbError> {
            let (_, shown) = state.open(None, &envelopes, now)?;
            let pay = state.pay(&mailbox, bytes, now)?;
            Ok((shown, pay, state.take_wakes()))
        })
        .await
        .map_err(|error| error.to_string())?
        .map_err(|error| error.to_string())?;
    shared.publish(shown);
    for peer in senders.into_iter().chain(wakes) {
        crate::deliver::wake(shared, peer);
    }
    Ok(Taken { ids, pay })
}
