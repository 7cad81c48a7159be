//! One neighbour's STORE channel: the reader that answers its requests and
//! hands it answers to this node's, and requests in flight to it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use bytes::Bytes;
use fogwire_identity::NodeId;
use fogwire_store_proto::message::{ERROR_BUSY, Groups};
use fogwire_store_proto::message::{
    HaveEntry, HaveState, MESSAGE_LEN_MAX, Message as StoreMessage, RUNS_MAX, runs,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::transport::{Inbox, InboxEnd, Outbox};
use crate::{Counters, ReplicationState, feeds, lock, serve};

/// Malformed messages a peer may send before its link is closed.
const MALFORMED_MAX: u32 = 8;
/// Answers to one request queued for its reader (DATA of 64 KiB: 2 MiB).
pub(crate) const REPLY_QUEUE: usize = 32;

/// An answer from the peer to one of this node's requests.
#[derive(Debug)]
pub(crate) enum Reply {
    Have(Vec<HaveEntry>),
    Data { item: u16, bytes: Bytes },
    Done,
    Error(u8),
    FeedRoot(Option<Bytes>),
    Provided,
    Providers(Vec<[u8; 32]>),
}

impl Reply {
    fn ends_request(&self) -> bool {
        !matches!(self, Reply::Data { .. })
    }
}

/// A peer that replicates, over one link or one route stream.
pub(crate) struct PeerLink {
    pub(crate) peer: NodeId,
    /// The link's id, or an id of this node's own for a route stream.
    pub(crate) link_id: u64,
    pub(crate) outbox: Outbox,
    next_id: AtomicU32,
    /// Requests waiting for answers; none once the reader has stopped.
    pending: std::sync::Mutex<Option<HashMap<u32, mpsc::Sender<Reply>>>>,
    /// Requests being served to the peer, with their cancel flags.
    pub(crate) serving: std::sync::Mutex<HashMap<u32, Arc<AtomicBool>>>,
    pub(crate) counters: Arc<Counters>,
    closed: CancellationToken,
}

impl PeerLink {
    pub(crate) fn new(
        peer: NodeId,
        link_id: u64,
        outbox: Outbox,
        counters: Arc<Counters>,
        closed: CancellationToken,
    ) -> Self {
        Self {
            peer,
            link_id,
            outbox,
            next_id: AtomicU32::new(1),
            pending: std::sync::Mutex::new(Some(HashMap::new())),
            serving: std::sync::Mutex::default(),
            counters,
            closed,
        }
    }

    pub(crate) fn close(&self) {
        self.closed.cancel();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.is_cancelled() || self.outbox.is_closed()
    }

    /// Sends a request made with a fresh id; its answers come through the
    /// returned [`Pending`].
    pub(crate) async fn request(
        self: &Arc<Self>,
        make: impl FnOnce(u32) -> StoreMessage,
    ) -> Option<Pending> {
        if self.is_closed() {
            return None;
        }
        // Id 0 is for announcements.
        let id = loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                break id;
            }
        };
        let (replies, receiver) = mpsc::channel(REPLY_QUEUE);
        lock(&self.pending).as_mut()?.insert(id, replies);
        let pending = Pending {
            id,
            replies: receiver,
            link: self.clone(),
            finished: false,
        };
        self.outbox.send(make(id).encode()).await.ok()?;
        Some(pending)
    }

    /// Sends a message, waiting for room in the channel's queue.
    pub(crate) async fn send(&self, message: StoreMessage) -> bool {
        self.outbox.send(message.encode()).await.is_ok()
    }
}

/// Answers to one request. Dropping it before the answer is complete
/// tells the peer to stop (CANCEL).
pub(crate) struct Pending {
    id: u32,
    replies: mpsc::Receiver<Reply>,
    link: Arc<PeerLink>,
    finished: bool,
}

impl Pending {
    pub(crate) fn counters(&self) -> &Arc<Counters> {
        &self.link.counters
    }

    /// The next answer; none once the link is gone.
    pub(crate) async fn next(&mut self) -> Option<Reply> {
        // Ends (none) when the reader stops, after it has handed over
        // everything the link delivered.
        let reply = self.replies.recv().await;
        if reply.as_ref().is_none_or(Reply::ends_request) {
            self.finished = true;
        }
        reply
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(pending) = lock(&self.link.pending).as_mut() {
            pending.remove(&self.id);
        }
        if self.finished || self.link.is_closed() {
            return;
        }
        let cancel = StoreMessage::Cancel { id: self.id }.encode();
        if self.link.outbox.try_send(cancel.clone()).is_err()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let link = self.link.clone();
            runtime.spawn(async move {
                let _ = link.outbox.send(cancel).await;
            });
        }
    }
}

/// Reads the peer's messages until the link or stream goes.
pub(crate) async fn run(inner: Arc<ReplicationState>, link: Arc<PeerLink>, mut inbox: Inbox) {
    let mut malformed = 0u32;
    loop {
        // Everything the link delivered is read, even after it closed:
        // chunk groups that arrived are worth keeping.
        let bytes = tokio::select! {
            bytes = inbox.recv() => bytes,
            _ = inner.shutdown.cancelled() => Err(InboxEnd::Closed),
        };
        let bytes = match bytes {
            Ok(bytes) => bytes,
            Err(InboxEnd::Closed) => break,
            Err(InboxEnd::BadFrame) => {
                tracing::warn!(peer = %link.peer, "badly framed store message on a route stream");
                link.outbox
                    .close_for_violation("badly framed store message");
                break;
            }
        };
        let message = match StoreMessage::decode(&bytes) {
            Ok(message) => message,
            Err(error) => {
                malformed += 1;
                tracing::warn!(peer = %link.peer, %error, "malformed store message");
                if malformed >= MALFORMED_MAX {
                    link.outbox.close_for_violation("malformed store messages");
                    break;
                }
                continue;
            }
        };
        match message {
            StoreMessage::Has { id, hashes } => {
                inner
                    .tasks
                    .spawn(answer_has(inner.clone(), link.clone(), id, hashes));
            }
            StoreMessage::Get { id, items } => serve::start(&inner, &link, id, items),
            StoreMessage::Cancel { id } => {
                if let Some(flag) = lock(&link.serving).get(&id) {
                    flag.store(true, Ordering::Relaxed);
                }
            }
            StoreMessage::FeedGet { id, feed } => {
                inner.tasks.spawn(feeds::answer_feed_get(
                    inner.clone(),
                    link.clone(),
                    id,
                    feed,
                ));
            }
            StoreMessage::Announce { root, holder } => {
                feeds::on_announce(&inner, link.peer, root, holder);
            }
            StoreMessage::Have { id, entries } => deliver(&link, id, Reply::Have(entries)).await,
            StoreMessage::Data { id, item, bytes } => {
                deliver(&link, id, Reply::Data { item, bytes }).await;
            }
            StoreMessage::Done { id } => deliver(&link, id, Reply::Done).await,
            StoreMessage::Error { id, code } => deliver(&link, id, Reply::Error(code)).await,
            StoreMessage::FeedRoot { id, root } => {
                deliver(&link, id, Reply::FeedRoot(root)).await;
            }
            StoreMessage::Provide { id, hashes } => {
                crate::providers::answer_provide(&inner, &link, id, hashes).await;
            }
            StoreMessage::Find { id, hash } => {
                crate::providers::answer_find(&inner, &link, id, hash).await;
            }
            StoreMessage::Provided { id, .. } => deliver(&link, id, Reply::Provided).await,
            StoreMessage::Providers { id, nodes } => {
                deliver(&link, id, Reply::Providers(nodes)).await;
            }
        }
    }
    link.close();
    // Waiting requests end (their queues close); new ones are refused.
    lock(&link.pending).take();
    for flag in lock(&link.serving).values() {
        flag.store(true, Ordering::Relaxed);
    }
}

/// Hands an answer to the request it belongs to. An answer to a request
/// no longer waited for (cancelled, or never made) is dropped.
async fn deliver(link: &PeerLink, id: u32, reply: Reply) {
    let queue = {
        let mut pending = lock(&link.pending);
        let pending = pending.as_mut();
        if reply.ends_request() {
            pending.and_then(|p| p.remove(&id))
        } else {
            pending.and_then(|p| p.get(&id).cloned())
        }
    };
    if let Some(queue) = queue {
        // Waits while the requester is behind: backpressure on the link.
        let _ = queue.send(reply).await;
    }
}

/// What this node holds of each hash, as a peer asked.
async fn answer_has(
    inner: Arc<ReplicationState>,
    link: Arc<PeerLink>,
    id: u32,
    hashes: Vec<fogwire_store::Hash>,
) {
    let store = inner.store.clone();
    let entries = tokio::task::spawn_blocking(move || {
        let mut entries: Vec<HaveEntry> = hashes
            .into_iter()
            .map(|hash| {
                let state = store.have(&hash).unwrap_or_else(|error| {
                    tracing::warn!(blob = %hash, %error, "cannot look up a blob a peer asked for");
                    HaveState::Absent
                });
                HaveEntry { hash, state }
            })
            .collect();
        fit_in_one_message(&mut entries);
        entries
    })
    .await;
    let message = match entries {
        Ok(entries) => StoreMessage::Have { id, entries },
        Err(_) => StoreMessage::Error {
            id,
            code: ERROR_BUSY,
        },
    };
    link.send(message).await;
}

/// Trims the chunk-group sets of partial entries so that the answer fits
/// one message: each keeps its first runs (an honest part of what is
/// held), and if there is no room at all it is answered absent.
fn fit_in_one_message(entries: &mut [HaveEntry]) {
    // type, id, count; per entry hash, state, size; per partial set its
    // count and 16 bytes a run.
    let fixed = 1 + 4 + 2 + entries.len() * (32 + 1 + 8);
    let partials = entries
        .iter()
        .filter(|e| matches!(e.state, HaveState::Partial { .. }))
        .count();
    if partials == 0 {
        return;
    }
    let room = MESSAGE_LEN_MAX.saturating_sub(fixed + partials * 2);
    let runs_each = (room / 16 / partials).min(RUNS_MAX);
    for entry in entries.iter_mut() {
        if let HaveState::Partial { size, groups } = &entry.state {
            entry.state = if runs_each == 0 {
                HaveState::Absent
            } else {
                HaveState::Partial {
                    size: *size,
                    groups: at_most_runs(groups, runs_each),
                }
            };
        }
    }
}

/// The first `max` runs of `groups`: an honest part of a set too ragged
/// for one message.
fn at_most_runs(groups: &Groups, max: usize) -> Groups {
    let mut out = Groups::empty();
    for (start, end) in runs(groups).into_iter().take(max) {
        out |= Groups::from(start..end);
    }
    out
}
