//! Replication of the store between neighbours: the tokio driver of the
//! protocol in `fogwire-store-proto` (`docs/protocol/store.md` §6).
//!
//! Every link carries a STORE channel. On it this node answers what it
//! has (complete blobs, and the verified part of blobs it is fetching),
//! streams verified encodings of the chunk groups asked for, and answers
//! for the feeds it holds; and it asks the same of its peers:
//!
//! - [`Replication::fetch`] gets a blob, or a whole object graph (a
//!   directory) from its root, from whichever peers have it. A large blob
//!   is split among all its holders at once, with work moving from slow
//!   peers to fast ones; small blobs travel many to a message. Every
//!   chunk group is verified before it is written; a peer caught lying is
//!   dropped from downloads for a while, and the download goes on from the
//!   others. An interrupted download resumes with what it has.
//! - Feeds: a new root (published here or heard from a peer) is announced
//!   to every neighbour once; a node that follows the feed takes it if it
//!   is newer than its own and fetches what the new root needs.
//! - Bytes served to and fetched from each peer are counted.
//!
//! Nodes further away replicate the same way over a stream on a route to
//! their `store` service ([`Replication::route_up`]): each message framed
//! by its length.
//!
//! Blocking store work runs on tokio's blocking threads; every queue is
//! bounded, and a slow peer stalls only its own link's channel.

mod feeds;
mod fetch;
mod limit;
mod peer;
pub mod persist;
mod providers;
mod route;
mod serve;
mod transport;

pub use persist::CountersError;
pub use providers::{Beyond, Lookup, PROVIDERS_SERVICE, ProviderStats};
pub use route::{StoreRoute, StoreRouteError};
pub use transport::STORE_SERVICE;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fogwire_identity::NodeId;
use fogwire_link::LinkHandle;
use fogwire_link::proto::{ChannelConfig, ChannelId};
use fogwire_route::RouteStream;
use fogwire_store::{FeedId, Hash, RestoreLimits, Store, StoreError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::peer::PeerLink;

/// The link channel replication runs on.
pub const CHANNEL_STORE: ChannelId = ChannelId(0x0200);

/// The link channels replication needs, to add to the link settings.
pub fn link_channels() -> Vec<ChannelConfig> {
    // Deep enough that a stream of chunk groups keeps a loopback or LAN
    // link busy (several MiB in flight), bounded all the same.
    vec![
        ChannelConfig::new(CHANNEL_STORE)
            .with_receive_window(8 * 1024 * 1024)
            .with_send_queue_bytes_max(8 * 1024 * 1024),
    ]
}

/// Peers whose counters are remembered; beyond, the least active go.
const PEERS_REMEMBERED: usize = 4096;
/// How long a peer caught sending bad data is left out of downloads.
const PENALTY: Duration = Duration::from_secs(600);
/// How long a peer that did not answer "who has it" is left out.
const SILENCE_PAUSE: Duration = Duration::from_secs(60);
/// Peers replicating over route streams at once (beyond neighbours).
pub const ROUTE_PEERS_MAX: usize = 64;
/// Route streams get ids from here on (link ids count from 1).
const ROUTE_IDS: u64 = 1 << 63;

/// Why a route stream was not taken for replication.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RouteRefused {
    #[error("{0} is already a replicating neighbour: its link is used")]
    Neighbour(NodeId),
    #[error("already replicating with {ROUTE_PEERS_MAX} nodes over routes")]
    TooMany,
    #[error("replication is shutting down")]
    Stopped,
}

/// A peer replicating over a route stream. Dropping it does not end the
/// stream; [`RoutePeer::close`] does.
#[derive(Debug, Clone)]
pub struct RoutePeer {
    peer: NodeId,
    stop: CancellationToken,
}

impl RoutePeer {
    pub fn peer(&self) -> NodeId {
        self.peer
    }

    /// Ends replication over this stream (the stream is reset).
    pub fn close(&self) {
        self.stop.cancel();
    }
}

/// Settings of replication.
#[derive(Debug, Clone)]
pub struct Config {
    /// Requests for data one peer may have this node serve at once; more
    /// are answered BUSY.
    pub serve_per_peer: usize,
    /// How long to wait for a peer's answer to what it has.
    pub has_timeout: Duration,
    /// A request that delivers nothing for this long is given up (its
    /// chunk groups go to other peers).
    pub stall_timeout: Duration,
    /// Blobs of an object graph fetched at once.
    pub fetch_parallel: usize,
    /// How the chunk groups of one blob are spread over its holders.
    pub download: fogwire_store_proto::download::Config,
    /// How often followed feeds are checked with every neighbour, besides
    /// the announcements that normally bring new roots at once.
    pub feed_sync_interval: Duration,
    /// Longest pause between attempts to fetch a followed feed's content.
    pub feed_retry_max: Duration,
    /// Most bytes per second served to all peers together (0: no cap).
    pub serve_bytes_per_sec_max: u64,
    /// Where the per-peer counters are kept across restarts (none: in
    /// memory only).
    pub counters_path: Option<std::path::PathBuf>,
    /// Give the hashes this node's tags pin to their provider-record
    /// keepers, so that nodes beyond the neighbours find them.
    pub provide: bool,
    /// Keep provider records for others (the node then lists
    /// [`PROVIDERS_SERVICE`] in its advert).
    pub keep_provider_records: bool,
    /// How often what is owed to keepers is checked (besides soon after
    /// the pins change).
    pub provide_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            serve_per_peer: 8,
            has_timeout: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(10),
            fetch_parallel: 4,
            download: fogwire_store_proto::download::Config::default(),
            feed_sync_interval: Duration::from_secs(60),
            feed_retry_max: Duration::from_secs(30),
            serve_bytes_per_sec_max: 0,
            counters_path: None,
            provide: true,
            keep_provider_records: true,
            provide_interval: Duration::from_secs(10),
        }
    }
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    #[error(
        "no blob {hash} in this node's store, and no linked peer to fetch it from: link to a peer \
         first (`fogwire connect <node-id>@<host:port>`, or `peers` in fogwire.toml)"
    )]
    NoPeers { hash: Hash },
    #[error("none of the {asked} peers asked has blob {hash}, and {beyond}")]
    NotFound {
        hash: Hash,
        asked: usize,
        beyond: Beyond,
    },
    #[error("no peer could prove the size of blob {hash}: {detail}")]
    Size { hash: Hash, detail: String },
    #[error(
        "blob {hash}: {done} of {size} bytes fetched, then no peer could send more ({detail}); \
         what arrived is kept, and fetching again resumes"
    )]
    Stuck {
        hash: Hash,
        done: u64,
        size: u64,
        detail: String,
    },
    #[error("object graph under {0} is deeper than {depth} levels", depth = fetch::DEPTH_MAX)]
    TooDeep(Hash),
    #[error(
        "the tree {hash} holds {would}, over the limits of {} files and directories and {} bytes; nothing of its files was fetched (raise the limits to fetch it)",
        limits.entries_max,
        limits.bytes_max
    )]
    TooLarge {
        hash: Hash,
        would: String,
        limits: RestoreLimits,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("replication is shutting down")]
    Stopped,
}

/// How far a fetch has got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchProgress {
    /// Bytes of blobs verified and stored (or found held).
    pub done_bytes: u64,
    /// Bytes known to be needed so far (grows as a graph is explored).
    pub total_bytes: u64,
    pub blobs: u64,
}

/// Called as a fetch progresses.
pub type ProgressFn = Arc<dyn Fn(FetchProgress) + Send + Sync>;

/// What a fetch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchReport {
    pub hash: Hash,
    /// Size of the blob `hash` names.
    pub size: u64,
    /// Blobs of the graph (the root included), and their bytes.
    pub blobs: u64,
    pub bytes: u64,
    /// Of those, fetched from peers (the rest were held already).
    pub fetched_blobs: u64,
    pub fetched_bytes: u64,
    /// Bytes fetched from each peer.
    pub from: Vec<(NodeId, u64)>,
    /// Whether the root is an object graph (a directory).
    pub directory: bool,
}

/// Replication counters of one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerStats {
    pub peer: NodeId,
    pub linked: bool,
    /// Encoded bytes (chunk groups and hash pairs) this node served it.
    pub served_bytes: u64,
    pub served_requests: u64,
    /// Encoded bytes fetched from it.
    pub fetched_bytes: u64,
    /// Times it sent data that failed verification.
    pub corrupt: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) served_bytes: AtomicU64,
    pub(crate) served_requests: AtomicU64,
    pub(crate) fetched_bytes: AtomicU64,
    pub(crate) corrupt: AtomicU64,
    penalised_until: Mutex<Option<Instant>>,
    /// Left out for silence: until its next link comes up (a restarted
    /// peer is asked again), or for SILENCE_PAUSE.
    silent_until: Mutex<Option<Instant>>,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, value: u64) {
        counter.fetch_add(value, Ordering::Relaxed);
    }

    fn penalised(&self, now: Instant) -> bool {
        lock(&self.penalised_until).is_some_and(|until| until > now)
            || lock(&self.silent_until).is_some_and(|until| until > now)
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) struct ReplicationState {
    pub(crate) store: Arc<Store>,
    pub(crate) config: Config,
    links: Mutex<HashMap<NodeId, Arc<PeerLink>>>,
    /// Ids for route streams, apart from link ids.
    next_route_id: AtomicU64,
    pub(crate) routing: fogwire_route::Routing,
    pub(crate) counters_file: Option<Arc<persist::CountersFile>>,
    counters: Mutex<HashMap<NodeId, Arc<Counters>>>,
    fetching: Mutex<HashMap<Hash, Arc<tokio::sync::Mutex<()>>>>,
    pub(crate) feeds: feeds::FeedState,
    pub(crate) providers: providers::ProviderState,
    pub(crate) limiter: Option<limit::Limiter>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
}

impl ReplicationState {
    pub(crate) fn counters(&self, peer: NodeId) -> Arc<Counters> {
        let mut counters = lock(&self.counters);
        if !counters.contains_key(&peer) && counters.len() >= PEERS_REMEMBERED {
            let links = lock(&self.links);
            let quietest = counters
                .iter()
                .filter(|(id, _)| !links.contains_key(id))
                .min_by_key(|(_, c)| {
                    c.served_bytes.load(Ordering::Relaxed) + c.fetched_bytes.load(Ordering::Relaxed)
                })
                .map(|(id, _)| *id);
            if let Some(quietest) = quietest {
                counters.remove(&quietest);
            }
        }
        counters.entry(peer).or_default().clone()
    }

    /// Forgets the peer over link (or route stream) `link_id`, unless a
    /// newer one replaced it; returns it if it was there.
    fn forget(&self, peer: NodeId, link_id: u64) -> Option<Arc<PeerLink>> {
        let mut links = lock(&self.links);
        if links.get(&peer).is_some_and(|link| link.link_id == link_id) {
            links.remove(&peer)
        } else {
            None
        }
    }

    /// Links to peers that serve the store and are not being penalised.
    pub(crate) fn usable_links(&self) -> Vec<Arc<PeerLink>> {
        let now = Instant::now();
        lock(&self.links)
            .values()
            .filter(|link| !link.is_closed() && !link.counters.penalised(now))
            .cloned()
            .collect()
    }

    /// The open link or route stream to `peer`, if any.
    pub(crate) fn peer_link(&self, peer: NodeId) -> Option<Arc<PeerLink>> {
        lock(&self.links)
            .get(&peer)
            .filter(|link| !link.is_closed())
            .cloned()
    }

    pub(crate) fn all_links(&self) -> Vec<Arc<PeerLink>> {
        lock(&self.links).values().cloned().collect()
    }

    /// Leaves `peer` out of downloads for a while: it sent bad data.
    pub(crate) fn penalise(&self, peer: NodeId, why: &str) {
        let counters = self.counters(peer);
        Counters::add(&counters.corrupt, 1);
        *lock(&counters.penalised_until) = Some(Instant::now() + PENALTY);
        tracing::warn!(
            peer = %peer,
            why,
            "peer sent data that fails verification: left out of downloads for {} minutes",
            PENALTY.as_secs() / 60
        );
    }

    /// Leaves `peer` out of downloads for [`SILENCE_PAUSE`], or until its
    /// next link comes up: it did not answer "who has it" in time, so the
    /// next fetches do not wait on it again.
    pub(crate) fn sideline(&self, peer: NodeId, waited: Duration) {
        let counters = self.counters(peer);
        let mut until = lock(&counters.silent_until);
        let end = Instant::now() + SILENCE_PAUSE;
        if until.is_none_or(|current| current < end) {
            *until = Some(end);
            tracing::info!(
                peer = %peer,
                "peer did not answer 'who has it' within {} ms: left out of downloads for {} s",
                waited.as_millis(),
                SILENCE_PAUSE.as_secs()
            );
        }
    }

    /// One fetch per blob at a time: the second waits and then finds it.
    pub(crate) fn fetch_lock(&self, hash: Hash) -> Arc<tokio::sync::Mutex<()>> {
        let mut fetching = lock(&self.fetching);
        // Forget locks nobody holds or waits for.
        fetching.retain(|_, lock| Arc::strong_count(lock) > 1);
        fetching.entry(hash).or_default().clone()
    }

    /// Runs blocking store work off the async threads.
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, FetchError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|_| FetchError::Stopped)?
            .map_err(FetchError::Store)
    }
}

/// Replication of one node's store. Cheap to clone.
#[derive(Clone)]
pub struct Replication {
    inner: Arc<ReplicationState>,
}

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replication").finish_non_exhaustive()
    }
}

impl Replication {
    /// Starts replication of `store` (and the periodic feed check), and
    /// serves it to nodes that reach this one over routes (streams to
    /// [`STORE_SERVICE`] on `routing`).
    pub fn start(
        store: Arc<Store>,
        config: Config,
        routing: fogwire_route::Routing,
    ) -> Replication {
        let (counters_file, loaded) = match &config.counters_path {
            None => (None, Vec::new()),
            Some(path) => match persist::CountersFile::open(path, PEERS_REMEMBERED) {
                Ok((file, loaded)) => (Some(Arc::new(file)), loaded),
                Err(error) => {
                    tracing::error!(
                        %error,
                        "per-peer counters will not be kept across restarts; move the file aside to start a new one"
                    );
                    (None, Vec::new())
                }
            },
        };
        let inner = Arc::new(ReplicationState {
            counters_file,
            store,
            limiter: limit::Limiter::new(config.serve_bytes_per_sec_max),
            config,
            links: Mutex::default(),
            next_route_id: AtomicU64::new(ROUTE_IDS),
            routing,
            counters: Mutex::default(),
            fetching: Mutex::default(),
            feeds: feeds::FeedState::default(),
            providers: providers::ProviderState::default(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        persist::restore(&inner, loaded);
        inner.tasks.spawn(feeds::periodic(inner.clone()));
        inner.tasks.spawn(persist::run(inner.clone()));
        inner.tasks.spawn(providers::run(inner.clone()));
        let replication = Replication { inner };
        let service = Arc::new(route::StoreService(replication.clone()));
        if let Err(error) = replication
            .inner
            .routing
            .accept(fogwire_route::Spec::streams(STORE_SERVICE), service)
        {
            tracing::error!(%error, "cannot serve the store over routes");
        }
        replication
    }

    /// A link came up: serve and ask on its STORE channel, if the peer has
    /// one.
    pub fn link_up(&self, link: LinkHandle) {
        if !link.peer_channels().contains(&CHANNEL_STORE) {
            tracing::debug!(peer = %link.peer(), "peer does not replicate the store");
            return;
        }
        let (Some(sender), Some(receiver)) = (
            link.sender(CHANNEL_STORE),
            link.take_receiver(CHANNEL_STORE),
        ) else {
            return;
        };
        let peer = link.peer();
        let counters = self.inner.counters(peer);
        // A new link: a peer silent before (restarting, say) is asked again.
        *lock(&counters.silent_until) = None;
        let peer_link = Arc::new(PeerLink::new(
            peer,
            link.id(),
            transport::Outbox::Link { sender, link },
            counters,
            self.inner.shutdown.child_token(),
        ));
        if let Some(old) = lock(&self.inner.links).insert(peer, peer_link.clone()) {
            old.close();
        }
        self.spawn_peer(peer_link, transport::Inbox::Link(receiver));
    }

    fn spawn_peer(&self, peer_link: Arc<PeerLink>, inbox: transport::Inbox) {
        let inner = self.inner.clone();
        let reader = peer_link.clone();
        self.inner.tasks.spawn(async move {
            peer::run(inner.clone(), reader.clone(), inbox).await;
            inner.forget(reader.peer, reader.link_id);
        });
        self.inner
            .tasks
            .spawn(feeds::on_link_up(self.inner.clone(), peer_link));
    }

    /// Replicates with the node at the other end of `stream` — a stream on
    /// a route, opened to this node's [`STORE_SERVICE`] or by this node to
    /// another's — as with a neighbour: it is asked when fetching, served
    /// what it asks for, and told of feed roots, until the stream ends or
    /// [`RoutePeer::close`]. A neighbour's link is preferred: a stream to a
    /// node linked to this one is refused.
    pub fn route_up(&self, stream: RouteStream) -> Result<RoutePeer, RouteRefused> {
        if self.inner.shutdown.is_cancelled() {
            return Err(RouteRefused::Stopped);
        }
        let peer = stream.peer();
        let stop = self.inner.shutdown.child_token();
        // Before taking the links' lock: counters() may take it too.
        let counters = self.inner.counters(peer);
        let peer_link = {
            let mut links = lock(&self.inner.links);
            if let Some(existing) = links.get(&peer)
                && !existing.is_closed()
            {
                if existing.link_id < ROUTE_IDS {
                    return Err(RouteRefused::Neighbour(peer));
                }
                // A newer stream from the same node replaces the old one.
                existing.close();
            } else {
                let over_routes = links
                    .values()
                    .filter(|link| link.link_id >= ROUTE_IDS && !link.is_closed())
                    .count();
                if over_routes >= ROUTE_PEERS_MAX {
                    return Err(RouteRefused::TooMany);
                }
            }
            let (reader, writer) = stream.into_split();
            let (outbox, inbox) = transport::route_pair(reader, writer, stop.clone());
            let id = self.inner.next_route_id.fetch_add(1, Ordering::Relaxed);
            let peer_link = Arc::new(PeerLink::new(peer, id, outbox, counters, stop.clone()));
            links.insert(peer, peer_link.clone());
            (peer_link, inbox)
        };
        let (peer_link, inbox) = peer_link;
        tracing::debug!(peer = %peer, "replicating over a route stream");
        self.spawn_peer(peer_link, inbox);
        Ok(RoutePeer { peer, stop })
    }

    /// Whether `peer` replicates with this node now (over a link or a
    /// route stream).
    pub fn is_peer(&self, peer: NodeId) -> bool {
        lock(&self.inner.links)
            .get(&peer)
            .is_some_and(|link| !link.is_closed())
    }

    /// The link `link_id` to `peer` is gone.
    pub fn link_down(&self, peer: NodeId, link_id: u64) {
        if let Some(link) = self.inner.forget(peer, link_id) {
            link.close();
        }
    }

    /// Gets `hash` from the peers that have it, verified, into the store;
    /// if it is the root of an object graph (a directory), everything
    /// below it too, fetching only what is missing. With `tag`, pins the
    /// root once everything is in.
    pub async fn fetch(
        &self,
        hash: Hash,
        tag: Option<String>,
        progress: Option<ProgressFn>,
    ) -> Result<FetchReport, FetchError> {
        fetch::fetch(&self.inner, hash, tag, progress, &fetch::whole_graph()).await
    }

    /// Fetches the blob `hash` alone, never the graph below it (what a
    /// gateway needs for one step down a tree, or one file); its size. It
    /// stays in the store's cache, unpinned.
    pub async fn fetch_blob(&self, hash: Hash) -> Result<u64, FetchError> {
        fetch::fetch_one(&self.inner, hash).await
    }

    /// [`Replication::fetch`] of a tree within `limits` — distinct files
    /// and directories, and the bytes of distinct files — checked once
    /// its directories are here, before any file is fetched.
    pub async fn fetch_bounded(
        &self,
        hash: Hash,
        tag: Option<String>,
        progress: Option<ProgressFn>,
        limits: &RestoreLimits,
    ) -> Result<FetchReport, FetchError> {
        fetch::fetch(&self.inner, hash, tag, progress, limits).await
    }

    /// Tells every neighbour about a root this node just published;
    /// `holder` (this node, normally) is named in the announcement as a
    /// node that has the content, for followers no neighbour serves.
    pub async fn announce(&self, root: Vec<u8>, holder: Option<NodeId>) {
        let holder = holder.map(|id| *id.as_bytes());
        feeds::announce(&self.inner, bytes::Bytes::from(root), holder, None).await;
    }

    /// Checks a feed with every neighbour now, and fetches what its
    /// newest root needs (in the background).
    pub fn sync_feed(&self, feed: FeedId) {
        feeds::spawn_sync(&self.inner, feed);
    }

    /// Asks the keepers of `hash`'s provider records who holds it.
    pub async fn find_providers(&self, hash: Hash) -> Lookup {
        providers::lookup(&self.inner, hash).await
    }

    /// Closes the store routes pooled for finding content (to keepers and
    /// holders) that nothing uses now, rather than after their linger:
    /// what a benchmark does to start each measurement cold.
    pub async fn close_idle_routes(&self) {
        providers::close_idle_routes(&self.inner).await;
    }

    /// Provider records kept and given, and routes open to holders.
    pub fn provider_stats(&self) -> ProviderStats {
        providers::stats(&self.inner)
    }

    /// Counters of every peer met.
    pub fn peers(&self) -> Vec<PeerStats> {
        let links: Vec<NodeId> = lock(&self.inner.links).keys().copied().collect();
        let mut out: Vec<PeerStats> = lock(&self.inner.counters)
            .iter()
            .map(|(peer, c)| PeerStats {
                peer: *peer,
                linked: links.contains(peer),
                served_bytes: c.served_bytes.load(Ordering::Relaxed),
                served_requests: c.served_requests.load(Ordering::Relaxed),
                fetched_bytes: c.fetched_bytes.load(Ordering::Relaxed),
                corrupt: c.corrupt.load(Ordering::Relaxed),
            })
            .collect();
        out.sort_by_key(|stats| stats.peer);
        out
    }

    /// Stops serving and fetching.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        for link in self.inner.all_links() {
            link.close();
        }
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}

impl fogwire_link::LinkUser for Replication {
    fn link_up(&self, link: LinkHandle) {
        Replication::link_up(self, link);
    }

    fn link_down(&self, peer: NodeId, link_id: u64) {
        Replication::link_down(self, peer, link_id);
    }
}
