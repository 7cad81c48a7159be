//! Feeds between neighbours.
//!
//! A root is spread by flooding: whoever takes in a root it has not seen
//! (published here, announced by a peer, or answered to a FEED_GET)
//! announces it to every other neighbour, once. Nodes that follow the
//! feed keep the newest valid root and fetch what it names, pinned under
//! `feed/<id>`; the others only pass it on. Roots are signed, so nobody
//! on the way can alter one; a replayed old root is refused by followers
//! (they hold a newer one) and passed on at most once per node.
//!
//! Followers also ask each new neighbour for the roots they follow, and
//! every neighbour now and then, so a node that was away catches up.
//!
//! An announcement may name a node that holds the content (the publisher
//! names itself); it travels unchanged with the root. A follower none of
//! whose neighbours has the content opens a route to that node and
//! fetches from it there. The name is only a hint: what arrives is
//! verified against the signed root like anything else.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fogwire_identity::NodeId;
use fogwire_store::{FeedId, FeedRoot, StoreError, feed_tag};
use fogwire_store_proto::message::Message as StoreMessage;
use tokio::task::JoinSet;

use crate::peer::{PeerLink, Reply};
use crate::{FetchError, ReplicationState, lock};
use fogwire_env::unix_ms as now_ms;

/// (feed, sequence number) pairs remembered as seen, to flood each once.
const SEEN_MAX: usize = 4096;
/// Followed feeds checked with a new neighbour, at most.
const FEEDS_ASKED_MAX: usize = 256;
/// First pause before fetching a feed's content again.
const RETRY_FIRST: Duration = Duration::from_millis(50);
/// How long neighbours get to provide a feed's content (they are often
/// fetching it themselves) before a follower goes over a route to the
/// holder the announcement names.
const HOLDER_AFTER: Duration = Duration::from_secs(2);

/// A root's identity: its feed key and sequence number.
type RootKey = ([u8; 32], u64);

#[derive(Debug, Default)]
pub(crate) struct FeedState {
    /// Roots seen, and the order they were seen in (to forget the oldest).
    seen: std::sync::Mutex<(HashSet<RootKey>, VecDeque<RootKey>)>,
    /// Feeds whose content a task is fetching now.
    syncing: std::sync::Mutex<HashSet<FeedId>>,
    /// For followed feeds: a node said to hold the newest root's content.
    holders: std::sync::Mutex<HashMap<FeedId, NodeId>>,
}

impl FeedState {
    /// Whether this root is new here (and remembers it).
    fn first_sight(&self, root: &FeedRoot) -> bool {
        let key = (*root.feed.as_bytes(), root.seq);
        let mut seen = lock(&self.seen);
        if !seen.0.insert(key) {
            return false;
        }
        seen.1.push_back(key);
        if seen.1.len() > SEEN_MAX
            && let Some(old) = seen.1.pop_front()
        {
            seen.0.remove(&old);
        }
        true
    }
}

/// Announces a root taken in here (published on this node) to every
/// neighbour but `except`.
pub(crate) async fn announce(
    inner: &Arc<ReplicationState>,
    root: Bytes,
    holder: Option<[u8; 32]>,
    except: Option<NodeId>,
) {
    if let Ok(decoded) = FeedRoot::decode(&root) {
        inner.feeds.first_sight(&decoded);
    }
    pass_on(inner, root, holder, except);
}

/// Sends a root to every neighbour but `except`.
fn pass_on(
    inner: &ReplicationState,
    root: Bytes,
    holder: Option<[u8; 32]>,
    except: Option<NodeId>,
) {
    let message = StoreMessage::Announce { root, holder }.encode();
    for link in inner.all_links() {
        if Some(link.peer) == except || link.is_closed() {
            continue;
        }
        // A full queue is a busy link: the periodic check catches up.
        let _ = link.outbox.try_send(message.clone());
    }
}

/// A neighbour announced a root.
pub(crate) fn on_announce(
    inner: &Arc<ReplicationState>,
    from: NodeId,
    root: Bytes,
    holder: Option<[u8; 32]>,
) {
    let inner2 = inner.clone();
    inner.tasks.spawn(async move {
        take_root(&inner2, Some(from), root, holder).await;
    });
}

/// Takes in a root from a peer: passes it on if new, keeps it and
/// fetches its content if followed and newer. Returns whether it was
/// taken as the newest root of a followed feed.
async fn take_root(
    inner: &Arc<ReplicationState>,
    from: Option<NodeId>,
    root: Bytes,
    holder: Option<[u8; 32]>,
) -> bool {
    let decoded = match FeedRoot::decode(&root) {
        Ok(decoded) => decoded,
        Err(error) => {
            tracing::warn!(peer = ?from.map(|p| p.short()), %error, "refused a feed root");
            return false;
        }
    };
    if !inner.feeds.first_sight(&decoded) {
        return false;
    }
    let feed = decoded.feed;
    let bytes = root.clone();
    let taken = inner
        .blocking(move |store| {
            if !store.following()?.contains(&feed) {
                return Ok(None);
            }
            match store.accept_feed_root(&bytes, now_ms()) {
                Ok(root) => Ok(Some(Ok(root))),
                Err(StoreError::Feed(error)) => Ok(Some(Err(error))),
                Err(error) => Err(error),
            }
        })
        .await;
    let accepted = match taken {
        // Not followed here: only passed on.
        Ok(None) => false,
        Ok(Some(Ok(root))) => {
            tracing::info!(feed = %root.feed, seq = root.seq, content = %root.content, "new feed root");
            true
        }
        Ok(Some(Err(error))) => {
            tracing::debug!(feed = %feed, %error, "feed root not taken");
            return false;
        }
        Err(error) => {
            tracing::warn!(feed = %feed, %error, "cannot record a feed root");
            return false;
        }
    };
    pass_on(inner, root, holder, from);
    if accepted {
        let mut holders = lock(&inner.feeds.holders);
        match holder.and_then(|id| NodeId::from_bytes(&id).ok()) {
            Some(holder) => holders.insert(feed, holder),
            None => holders.remove(&feed),
        };
        drop(holders);
        spawn_content_sync(inner, feed);
    }
    accepted
}

/// Answers a neighbour's FEED_GET with the root held, if any.
pub(crate) async fn answer_feed_get(
    inner: Arc<ReplicationState>,
    link: Arc<PeerLink>,
    id: u32,
    feed: [u8; 32],
) {
    let root = match NodeId::from_bytes(&feed) {
        Ok(key) => {
            let feed = FeedId::from_key(key);
            inner
                .blocking(move |store| store.feed_root_bytes(&feed))
                .await
                .ok()
                .flatten()
                .map(Bytes::from)
        }
        Err(_) => None,
    };
    link.send(StoreMessage::FeedRoot { id, root }).await;
}

/// Asks `link` for the root of `feed` and takes it in.
async fn ask_root(inner: &Arc<ReplicationState>, link: &Arc<PeerLink>, feed: FeedId) -> bool {
    let request = tokio::time::timeout(inner.config.has_timeout, async {
        let mut pending = link
            .request(|id| StoreMessage::FeedGet {
                id,
                feed: *feed.as_bytes(),
            })
            .await?;
        match pending.next().await? {
            Reply::FeedRoot(root) => root,
            _ => None,
        }
    })
    .await;
    match request {
        Ok(Some(root)) => take_root(inner, Some(link.peer), root, None).await,
        _ => false,
    }
}

/// A new neighbour: ask it for every feed followed here.
pub(crate) async fn on_link_up(inner: Arc<ReplicationState>, link: Arc<PeerLink>) {
    let Ok(feeds) = inner.blocking(|store| store.following()).await else {
        return;
    };
    for feed in feeds.into_iter().take(FEEDS_ASKED_MAX) {
        ask_root(&inner, &link, feed).await;
    }
    // Content still missing from an earlier run (the node restarted, or
    // no neighbour had it then) may be here now.
    if let Ok(feeds) = inner.blocking(|store| store.following()).await {
        for feed in feeds {
            spawn_content_sync(&inner, feed);
        }
    }
}

/// Checks `feed` with every neighbour now, then fetches its content.
pub(crate) fn spawn_sync(inner: &Arc<ReplicationState>, feed: FeedId) {
    let inner2 = inner.clone();
    inner.tasks.spawn(async move {
        let mut asks = JoinSet::new();
        for link in inner2.usable_links() {
            let inner3 = inner2.clone();
            asks.spawn(async move { ask_root(&inner3, &link, feed).await });
        }
        while asks.join_next().await.is_some() {}
        spawn_content_sync(&inner2, feed);
    });
}

/// Every so often: every followed feed with every neighbour.
pub(crate) async fn periodic(inner: Arc<ReplicationState>) {
    let mut tick = tokio::time::interval(inner.config.feed_sync_interval);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = inner.shutdown.cancelled() => return,
        }
        let Ok(feeds) = inner.blocking(|store| store.following()).await else {
            continue;
        };
        for feed in feeds {
            spawn_sync(&inner, feed);
        }
    }
}

/// Makes sure the content of the newest root of `feed` is here and
/// pinned, retrying with backoff while peers do not have it yet; one task
/// per feed.
fn spawn_content_sync(inner: &Arc<ReplicationState>, feed: FeedId) {
    if !lock(&inner.feeds.syncing).insert(feed) {
        return;
    }
    let inner2 = inner.clone();
    inner.tasks.spawn(async move {
        let mut pause = RETRY_FIRST;
        let started = tokio::time::Instant::now();
        loop {
            let from_holder = started.elapsed() >= HOLDER_AFTER;
            match sync_content(&inner2, feed, from_holder).await {
                Ok(()) => break,
                Err(FetchError::Stopped) => break,
                Err(error) => {
                    tracing::info!(feed = %feed, %error, "feed content not complete yet; trying again in {} ms", pause.as_millis());
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = inner2.shutdown.cancelled() => break,
            }
            pause = (pause * 2).min(inner2.config.feed_retry_max);
        }
        lock(&inner2.feeds.syncing).remove(&feed);
    });
}

/// One attempt: fetch what the held root names (if still followed and not
/// pinned yet), then pin it under the feed's tag. With `from_holder`, if
/// the neighbours cannot provide it, from the announced holder.
async fn sync_content(
    inner: &Arc<ReplicationState>,
    feed: FeedId,
    from_holder: bool,
) -> Result<(), FetchError> {
    loop {
        let state = inner
            .blocking(move |store| {
                if !store.following()?.contains(&feed) {
                    return Ok(None);
                }
                let Some(root) = store.feed_root(&feed)? else {
                    return Ok(None);
                };
                let tag = feed_tag(&feed);
                let pinned = store
                    .tags()?
                    .into_iter()
                    .any(|(name, hash)| name == tag && hash == root.content);
                Ok((!pinned).then_some(root))
            })
            .await?;
        let Some(root) = state else { return Ok(()) };
        let report = match crate::fetch::fetch(
            inner,
            root.content,
            Some(feed_tag(&feed)),
            None,
            &crate::fetch::whole_graph(),
        )
        .await
        {
            Ok(report) => report,
            Err(error @ FetchError::Stopped) => return Err(error),
            Err(error) if !from_holder => return Err(error),
            Err(error) => match fetch_from_holder(inner, feed, root.content).await {
                Some(report) => report,
                None => return Err(error),
            },
        };
        tracing::info!(
            feed = %feed,
            seq = root.seq,
            content = %root.content,
            blobs = report.blobs,
            fetched_bytes = report.fetched_bytes,
            "feed content fetched"
        );
        // A newer root may have come in meanwhile: go round again.
    }
}

/// No neighbour could provide a followed feed's content: fetch it over a
/// route from the node its announcement named, if there is one, it is not
/// a neighbour already, and the node can open routes.
async fn fetch_from_holder(
    inner: &Arc<ReplicationState>,
    feed: FeedId,
    content: fogwire_store::Hash,
) -> Option<crate::FetchReport> {
    let holder = lock(&inner.feeds.holders).get(&feed).copied()?;
    if lock(&inner.links).contains_key(&holder) {
        return None;
    }
    let route = match crate::route::open(inner, holder).await {
        Ok(Some(route)) => route,
        Ok(None) => return None,
        Err(error) => {
            tracing::debug!(%holder, %error, "no store route to a feed's holder");
            return None;
        }
    };
    tracing::info!(feed = %feed, holder = %holder, "fetching a feed's content over a route from the node its announcement names");
    let fetched = crate::fetch::fetch(
        inner,
        content,
        Some(feed_tag(&feed)),
        None,
        &crate::fetch::whole_graph(),
    )
    .await;
    route.close().await;
    match fetched {
        Ok(report) => Some(report),
        Err(error) => {
            tracing::info!(feed = %feed, holder = %holder, %error, "could not fetch from the named holder either");
            None
        }
    }
}
