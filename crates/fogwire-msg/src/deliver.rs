//! Delivery: one task per peer with messages (or read receipts) waiting,
//! at most [`crate::PEERS_AT_ONCE`] at once. It keeps one route and one
//! stream to the peer's `msg` service while there is work (and 15 s
//! after), sends what
//! waits in batches, and takes the peer's receipts; on a failure it tries
//! again after `fogwire_msg_proto::retry::delay_ms`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use fogwire_identity::NodeId;
use fogwire_msg_proto::{Frame, MessageId, ReceiptKind, Refusal, retry};
use fogwire_route::proto::router::RouteId;
use fogwire_route::{Constraints, RouteStream};
use tokio::sync::Notify;

use crate::frames::{BATCH_MAX, FrameReader, FramesError, encode_all};
use crate::{SERVICE, Shared};

/// How long the peer may take to answer a batch (or a card request).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a route to a peer stays open after its last work (less than
/// the service's idle timeout, so the peer does not close it first).
const LINGER: Duration = Duration::from_secs(15);
/// Batches sealed and sent before the first is signed for.
const IN_FLIGHT: usize = 4;
/// How often a peer without a route is looked for in the graph.
const ROUTABLE_POLL: Duration = Duration::from_millis(100);

/// Wakes `peer`'s delivery task, starting it if there is none.
pub(crate) fn wake(shared: &Arc<Shared>, peer: NodeId) {
    let mut deliverers = shared
        .deliverers
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(notify) = deliverers.get(&peer) {
        notify.notify_one();
        return;
    }
    let notify = Arc::new(Notify::new());
    deliverers.insert(peer, notify.clone());
    shared.tasks.spawn(run(shared.clone(), peer, notify));
}

/// A route and a stream to the peer's `msg` service.
struct Channel {
    route: RouteId,
    stream: RouteStream,
    reader: FrameReader,
}

async fn run(shared: Arc<Shared>, peer: NodeId, notify: Arc<Notify>) {
    let Ok(_permit) = shared.peers_at_once.clone().acquire_owned().await else {
        return;
    };
    let mut channel: Option<Channel> = None;
    let mut failures = 0u32;
    loop {
        if shared.shutdown.is_cancelled() {
            break;
        }
        let pending = shared
            .with_state(move |state| state.pending(&peer, BATCH_MAX))
            .await;
        let pending = match pending {
            Ok(Ok(pending)) => pending,
            Ok(Err(error)) => {
                tracing::warn!(peer = %peer.short(), %error, "cannot read the outbox");
                break;
            }
            Err(_) => break,
        };
        if pending.is_empty() {
            // A conversation comes in bursts: the route stays a while.
            if channel.is_some() {
                tokio::select! {
                    () = notify.notified() => continue,
                    () = tokio::time::sleep(LINGER) => {}
                    () = shared.shutdown.cancelled() => break,
                }
            }
            let mut deliverers = shared
                .deliverers
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            // Work queued after the outbox was read woke this task: its
            // permit is stored, so look again rather than leave it.
            if notify_pending(&notify) {
                continue;
            }
            deliverers.remove(&peer);
            break;
        }
        let kept = channel.is_some();
        match attempt(&shared, peer, &mut channel, pending).await {
            Ok(()) => failures = 0,
            Err(error) => {
                if let Some(channel) = channel.take() {
                    let _ = shared.routing.close(channel.route).await;
                }
                // A route kept from earlier work went stale (the peer left
                // or restarted): a fresh one is tried at once, not after a
                // back-off meant for a peer that cannot be reached.
                if kept && matches!(error, AttemptError::Stream(_) | AttemptError::Frames(_)) {
                    tracing::debug!(peer = %peer.short(), %error, "the kept route to the peer failed; opening a fresh one");
                    continue;
                }
                failures += 1;
                let now = fogwire_env::unix_ms();
                let text = error.to_string();
                tracing::debug!(peer = %peer.short(), error = %text, failures, "message delivery failed; will try again");
                if let Ok(Ok(failed)) = shared
                    .with_state(move |state| state.attempt_failed(&peer, &text, now))
                    .await
                {
                    shared.publish(failed);
                }
                let jitter =
                    u64::from_be_bytes(peer.as_bytes()[..8].try_into().unwrap_or_default())
                        .wrapping_add(now);
                let delay = Duration::from_millis(retry::delay_ms(failures, jitter));
                let unroutable = matches!(error, AttemptError::Route(_));
                // The peer is away (or not answering): its mailboxes hold
                // what waits until it is back.
                let away = matches!(
                    error,
                    AttemptError::Route(_) | AttemptError::Stream(_) | AttemptError::Frames(_)
                );
                let mut deposit = away;
                let pause = tokio::time::sleep(delay);
                tokio::pin!(pause);
                loop {
                    if deposit {
                        let stored = crate::mailbox::deposit(&shared, peer).await;
                        if stored > 0 {
                            tracing::debug!(peer = %peer.short(), stored, "left mail at the peer's mailboxes");
                        }
                    }
                    tokio::select! {
                        () = shared.shutdown.cancelled() => break,
                        () = &mut pause => break,
                        // A peer that had no route is tried as soon as the
                        // graph has a path to it again: it is back.
                        () = until_routable(&shared, peer), if unroutable => break,
                        // Mail sent meanwhile to a peer that is away goes
                        // to its mailboxes now, not after the pause.
                        () = notify.notified(), if away => deposit = true,
                    }
                }
                if shared.shutdown.is_cancelled() {
                    break;
                }
            }
        }
    }
    if let Some(channel) = channel {
        close(&shared, channel).await;
    }
}

/// Ends the stream and waits (briefly) for the peer to end its side —
/// by then it has taken every frame, read receipts included — then
/// closes the route.
async fn close(shared: &Shared, mut channel: Channel) {
    if channel.stream.finish().await.is_ok() {
        let _ = tokio::time::timeout(ANSWER_TIMEOUT, async {
            while let Some(Ok(_)) = channel.stream.read().await {}
        })
        .await;
    }
    let _ = shared.routing.close(channel.route).await;
}

/// Returns once the graph has a path to `peer` (looked at ten times a
/// second: a local computation on the adverts heard).
async fn until_routable(shared: &Shared, peer: NodeId) {
    loop {
        tokio::time::sleep(ROUTABLE_POLL).await;
        let paths = shared.routing.find(peer, Constraints::default(), 1).await;
        if paths.is_ok_and(|paths| !paths.is_empty()) {
            return;
        }
    }
}

/// Whether `notify` holds a wake-up (taking it).
fn notify_pending(notify: &Notify) -> bool {
    use std::future::Future;
    let notified = notify.notified();
    let mut notified = std::pin::pin!(notified);
    let waker = std::task::Waker::noop();
    let mut context = std::task::Context::from_waker(waker);
    notified.as_mut().poll(&mut context).is_ready()
}

/// Why one attempt to deliver failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AttemptError {
    #[error("no route to the node: {0}")]
    Route(fogwire_route::RouteError),
    #[error("the node's message service: {0}")]
    Stream(String),
    #[error("the node did not answer: {0}")]
    Frames(#[from] FramesError),
    #[error("the node sent an invalid card")]
    BadCard,
    #[error("cannot seal: {0}")]
    Seal(#[from] crate::state::SealError),
    #[error("cannot read the outbox: {0}")]
    Db(#[from] crate::DbError),
    #[error("the node has no session for the last messages; starting a new one")]
    Undecryptable,
    #[error("the node takes no more messages from this one for now (its quota)")]
    OverQuota,
    #[error("stopping")]
    Stopped,
}

impl From<crate::MsgError> for AttemptError {
    fn from(_: crate::MsgError) -> Self {
        AttemptError::Stopped
    }
}

async fn attempt(
    shared: &Arc<Shared>,
    peer: NodeId,
    channel: &mut Option<Channel>,
    pending: crate::state::Pending,
) -> Result<(), AttemptError> {
    let crate::state::Pending {
        records,
        reads,
        delivered,
    } = pending;
    let mut frames = Vec::new();
    if channel.is_none() {
        let opened = shared
            .routing
            .open(peer, Constraints::default())
            .await
            .map_err(AttemptError::Route)?;
        let stream = match shared.routing.connect(opened.route, SERVICE).await {
            Ok(stream) => stream,
            Err(error) => {
                let _ = shared.routing.close(opened.route).await;
                return Err(AttemptError::Route(error));
            }
        };
        *channel = Some(Channel {
            route: opened.route,
            stream,
            reader: FrameReader::default(),
        });
        // The peer learns this node's card (its mailboxes) on each new
        // channel, not only when it starts a session.
        frames.push(Frame::Card(shared.lock(&shared.card).clone()));
    }
    let Some(channel) = channel.as_mut() else {
        return Err(AttemptError::Stopped);
    };
    if !records.is_empty()
        && !shared
            .with_state(move |state| state.can_seal(&peer))
            .await?
            .map_err(crate::state::SealError::from)?
    {
        fetch_card(shared, peer, channel).await?;
    }
    frames.extend(seal(shared, peer, &records).await?);
    for (kind, ids) in [
        (ReceiptKind::Read, &reads),
        (ReceiptKind::Delivered, &delivered),
    ] {
        if !ids.is_empty() {
            let now = fogwire_env::unix_ms();
            let ids = ids.clone();
            let receipt = shared
                .with_state(move |state| state.sign_receipt(&peer, kind, ids, now))
                .await?;
            frames.push(Frame::Receipt(receipt));
        }
    }
    channel
        .stream
        .write_all(encode_all(&frames))
        .await
        .map_err(|error| AttemptError::Stream(error.to_string()))?;
    let mut waiting: HashSet<MessageId> = records.iter().map(|record| record.id).collect();
    let mut last_sent = records.last().map(|record| record.seq);
    let mut failure = None;
    while !waiting.is_empty() {
        // Batches in flight: the next are sealed and sent while the peer
        // opens this one.
        while waiting.len() <= (IN_FLIGHT - 1) * BATCH_MAX
            && failure.is_none()
            && last_sent.is_some()
        {
            let after = last_sent;
            let more = shared
                .with_state(move |state| state.outbox_after(&peer, after, BATCH_MAX))
                .await??;
            last_sent = more.last().map(|record| record.seq);
            if !more.is_empty() {
                let frames = seal(shared, peer, &more).await?;
                channel
                    .stream
                    .write_all(encode_all(&frames))
                    .await
                    .map_err(|error| AttemptError::Stream(error.to_string()))?;
                waiting.extend(more.iter().map(|record| record.id));
            }
        }
        let frames = channel
            .reader
            .next_batch(&mut channel.stream, ANSWER_TIMEOUT)
            .await?;
        for frame in frames {
            match frame {
                Frame::Receipt(bytes) => {
                    match shared
                        .with_state(move |state| state.receipt(&peer, &bytes))
                        .await?
                    {
                        Ok((ids, changed)) => {
                            for id in ids {
                                waiting.remove(&id);
                            }
                            shared.publish(changed);
                        }
                        Err(error) => {
                            tracing::debug!(peer = %peer.short(), %error, "receipt refused");
                        }
                    }
                }
                Frame::Refused { id, reason } if waiting.remove(&id) => {
                    failure = match reason {
                        Refusal::Undecryptable => Some(AttemptError::Undecryptable),
                        Refusal::OverQuota => Some(AttemptError::OverQuota),
                        _ => failure,
                    };
                    if let Ok(Ok(Some(failed))) = shared
                        .with_state(move |state| state.refused(&peer, id, reason))
                        .await
                    {
                        shared.publish([failed]);
                    }
                }
                _ => {}
            }
        }
    }
    if !reads.is_empty() || !delivered.is_empty() {
        let _ = shared
            .with_state(move |state| state.receipts_sent(&peer, &reads, &delivered))
            .await;
    }
    match failure {
        Some(failure) => Err(failure),
        None => Ok(()),
    }
}

/// `records` sealed for `peer`, as envelope frames.
pub(crate) async fn seal(
    shared: &Arc<Shared>,
    peer: NodeId,
    records: &[crate::Record],
) -> Result<Vec<Frame>, AttemptError> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let sealing = records.to_vec();
    let envelopes = shared
        .with_state(move |state| state.seal(&peer, &sealing))
        .await??;
    Ok(envelopes.into_iter().map(Frame::Envelope).collect())
}

/// Asks the peer for its card and keeps it.
async fn fetch_card(
    shared: &Arc<Shared>,
    peer: NodeId,
    channel: &mut Channel,
) -> Result<(), AttemptError> {
    channel
        .stream
        .write_all(encode_all(&[Frame::CardRequest]))
        .await
        .map_err(|error| AttemptError::Stream(error.to_string()))?;
    loop {
        let frames = channel
            .reader
            .next_batch(&mut channel.stream, ANSWER_TIMEOUT)
            .await?;
        for frame in frames {
            if let Frame::Card(bytes) = frame {
                let kept = shared
                    .with_state(move |state| state.remember_card(&peer, &bytes))
                    .await?
                    .map_err(crate::state::SealError::from)?;
                return if kept {
                    Ok(())
                } else {
                    Err(AttemptError::BadCard)
                };
            }
        }
    }
}
