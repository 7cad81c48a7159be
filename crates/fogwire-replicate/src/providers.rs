//! Finding who holds a blob beyond the neighbours (store.md §7): the
//! tokio side of `fogwire_store_proto::providers`.
//!
//! - As a **keeper** (nodes whose advert lists [`PROVIDERS_SERVICE`]),
//!   this node answers PROVIDE and FIND from any peer, over a link or a
//!   store route ([`answer_provide`], [`answer_find`]).
//! - As a **holder**, it gives the hashes its tags pin to their keepers,
//!   checking every `provide_interval`, and as soon as its pins change,
//!   what is due: new pins, keepers that changed, records to renew
//!   ([`run`]).
//! - As a **seeker**, a fetch whose root no peer has asks the keepers of
//!   the hash, and opens store routes to the holders they name
//!   ([`find_and_reach`]); those routes stay while fetches use them. A
//!   fetch of a whole tree closes them when it ends; a fetch of one blob
//!   (the gateway's) leaves them [`LINGER`] longer, so that the next file
//!   of the same site comes the same way without a lookup.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fogwire_identity::NodeId;
use fogwire_store::Hash;
use fogwire_store_proto::message::{
    ERROR_NOT_FOUND, HAS_MAX, Message as StoreMessage, PROVIDERS_MAX,
};
use fogwire_store_proto::providers::{KEEPERS, KEEPERS_ASKED_MAX, PROVIDED_MAX, RECORD_TTL, Ring};
use tokio::task::JoinSet;

use crate::peer::{PeerLink, Reply};
use crate::route::StoreRoute;
use crate::{ReplicationState, lock};

/// What a node that keeps provider records lists in its routing advert.
pub const PROVIDERS_SERVICE: &str = "providers";
/// Holders a fetch opens routes to at once.
const HOLDERS_REACHED: usize = 3;
/// Store routes to keepers and holders pooled at once; past it, the
/// longest unused goes (and if all are in use, a new one is not pooled).
const ROUTES_MAX: usize = 32;
/// How long a route to a keeper, or to a holder a single-blob fetch
/// used, stays once nothing uses it.
pub(crate) const LINGER: Duration = Duration::from_secs(30);
/// How long a route to a keeper or a holder may take to open.
const ROUTE_OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Keepers given records at once.
const KEEPERS_AT_ONCE: usize = 4;

/// What a search beyond the neighbours found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookup {
    /// The keepers asked, in ring order.
    pub keepers: Vec<NodeId>,
    /// Of those, the ones that could not be reached or did not answer,
    /// with why.
    pub silent: Vec<(NodeId, String)>,
    /// The holders they named, freshest first (this node left out).
    pub holders: Vec<NodeId>,
}

/// Why nobody beyond the neighbours could provide a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Beyond {
    /// Not looked for (a part of a tree: the peers that had its root,
    /// and every neighbour, were asked).
    NotSearched,
    /// No node in the network keeps provider records.
    NoKeepers,
    /// The keepers know of no holder.
    NoHolder(Lookup),
    /// Holders were named, but none could be reached or had it.
    HoldersFailed {
        lookup: Lookup,
        failures: Vec<(NodeId, String)>,
    },
}

fn short_list(nodes: impl IntoIterator<Item = NodeId>) -> String {
    nodes
        .into_iter()
        .map(|node| node.short())
        .collect::<Vec<_>>()
        .join(", ")
}

fn with_reasons(nodes: &[(NodeId, String)]) -> String {
    nodes
        .iter()
        .map(|(node, why)| format!("{}: {why}", node.short()))
        .collect::<Vec<_>>()
        .join("; ")
}

impl std::fmt::Display for Beyond {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Beyond::NotSearched => write!(f, "it is part of a tree whose holders were all asked"),
            Beyond::NoKeepers => write!(
                f,
                "no node in the network keeps provider records (`{PROVIDERS_SERVICE}` in its advert) to find a holder further away"
            ),
            Beyond::NoHolder(lookup) => {
                let answered = lookup.keepers.len() - lookup.silent.len();
                write!(
                    f,
                    "no node in the network is known to hold it: the {answered} of its {} provider-record keepers that answered ({}) know of no holder",
                    lookup.keepers.len(),
                    short_list(
                        lookup
                            .keepers
                            .iter()
                            .filter(|k| !lookup.silent.iter().any(|(s, _)| s == *k))
                            .copied()
                    ),
                )?;
                if !lookup.silent.is_empty() {
                    write!(f, " (no answer from {})", with_reasons(&lookup.silent))?;
                }
                Ok(())
            }
            Beyond::HoldersFailed { lookup, failures } => write!(
                f,
                "its provider records name {} holder(s) ({}), but none could provide it: {}",
                lookup.holders.len(),
                short_list(lookup.holders.iter().copied()),
                with_reasons(failures)
            ),
        }
    }
}

/// A store route kept for provider work (to a keeper or a holder);
/// `users` counts those that hold it (beyond the one reference here).
struct PooledRoute {
    route: StoreRoute,
    users: Arc<()>,
    idle_since: Instant,
    /// How long it stays unused before it is closed.
    linger: Duration,
}

/// The seeker's and the holder's state, in [`ReplicationState`].
#[derive(Default)]
pub(crate) struct ProviderState {
    pub(crate) records: std::sync::Mutex<fogwire_store_proto::providers::Records>,
    providing: std::sync::Mutex<fogwire_store_proto::providers::Providing>,
    routes: std::sync::Mutex<HashMap<NodeId, PooledRoute>>,
}

/// Figures for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProviderStats {
    /// Records this node keeps (its own among them, when it is one of
    /// their keepers).
    pub records_kept: u64,
    /// (hash, keeper) records this node has given and keepers took.
    pub records_given: u64,
    /// Store routes pooled for provider work (to keepers and holders).
    pub routes: u64,
}

pub(crate) fn stats(inner: &ReplicationState) -> ProviderStats {
    ProviderStats {
        records_kept: lock(&inner.providers.records).len() as u64,
        records_given: lock(&inner.providers.providing).records() as u64,
        routes: lock(&inner.providers.routes).len() as u64,
    }
}

/// PROVIDE from `link`'s peer: its records, kept if this node keeps any.
pub(crate) async fn answer_provide(
    inner: &ReplicationState,
    link: &Arc<PeerLink>,
    id: u32,
    hashes: Vec<Hash>,
) {
    let answer = if inner.config.keep_provider_records {
        let taken = lock(&inner.providers.records).provide(link.peer, &hashes, Instant::now());
        if taken < hashes.len() {
            tracing::debug!(peer = %link.peer, taken, offered = hashes.len(), "provider records refused: over the bounds");
        }
        StoreMessage::Provided {
            id,
            taken: taken as u16,
            ttl_secs: RECORD_TTL.as_secs() as u32,
        }
    } else {
        StoreMessage::Error {
            id,
            code: ERROR_NOT_FOUND,
        }
    };
    link.send(answer).await;
}

/// FIND from `link`'s peer: the holders this node knows of.
pub(crate) async fn answer_find(
    inner: &ReplicationState,
    link: &Arc<PeerLink>,
    id: u32,
    hash: Hash,
) {
    let mut nodes: Vec<[u8; 32]> = lock(&inner.providers.records)
        .find(&hash, Instant::now())
        .iter()
        .filter(|holder| **holder != link.peer)
        .map(|holder| *holder.as_bytes())
        .collect();
    nodes.truncate(PROVIDERS_MAX);
    link.send(StoreMessage::Providers { id, nodes }).await;
}

/// A peer reached for provider work: its link or store stream, and what
/// keeps a pooled route to it open while this lives.
struct Reached {
    link: Arc<PeerLink>,
    /// Holds a pooled route (or nothing, for a neighbour): read by the
    /// pool's sweep through its count, never here.
    _users: Arc<()>,
    /// A route opened while the pool was full of routes in use: closed
    /// when this is dropped.
    unpooled: Option<StoreRoute>,
}

impl Drop for Reached {
    fn drop(&mut self) {
        if let Some(route) = self.unpooled.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(route.close());
        }
    }
}

/// Reaches `node`: its link, a pooled route to it, or a store route
/// opened now and pooled for `linger` after its last use (so that the
/// next lookup, or the rest of a site, reuses it).
async fn reach(
    inner: &Arc<ReplicationState>,
    node: NodeId,
    linger: Duration,
) -> Result<Reached, String> {
    if let Some((link, users)) = reuse(inner, node, linger) {
        return Ok(Reached {
            link,
            _users: users,
            unpooled: None,
        });
    }
    if let Some(link) = inner.peer_link(node) {
        return Ok(Reached {
            link,
            _users: Arc::new(()),
            unpooled: None,
        });
    }
    let route = tokio::time::timeout(ROUTE_OPEN_TIMEOUT, crate::route::open(inner, node))
        .await
        .map_err(|_| format!("no route within {} s", ROUTE_OPEN_TIMEOUT.as_secs()))?
        .map_err(|e| e.to_string())?;
    let Some(link) = inner.peer_link(node) else {
        if let Some(route) = route {
            route.close().await;
        }
        return Err("its store stream closed at once".to_owned());
    };
    let Some(route) = route else {
        // It became a peer meanwhile (linked, or reached us first).
        return Ok(Reached {
            link,
            _users: Arc::new(()),
            unpooled: None,
        });
    };
    Ok(match keep(inner, node, route, linger).await {
        Ok(users) => Reached {
            link,
            _users: users,
            unpooled: None,
        },
        Err(route) => Reached {
            link,
            _users: Arc::new(()),
            unpooled: Some(route),
        },
    })
}

/// One request to `link`, and its one answer within the HAS timeout.
async fn ask(
    inner: &ReplicationState,
    link: &Arc<PeerLink>,
    make: impl FnOnce(u32) -> StoreMessage,
) -> Result<Reply, String> {
    let timeout = inner.config.has_timeout;
    tokio::time::timeout(timeout, async {
        let mut pending = link.request(make).await.ok_or("its stream closed")?;
        pending.next().await.ok_or("its stream closed")
    })
    .await
    .map_err(|_| format!("no answer within {} s", timeout.as_secs()))?
    .map_err(str::to_owned)
}

/// The keepers of `hash` as this node sees the network, best first.
async fn keepers(inner: &ReplicationState, hash: &Hash) -> Vec<NodeId> {
    ring(inner)
        .await
        .successors(hash)
        .take(KEEPERS_ASKED_MAX)
        .collect()
}

/// The nodes that keep provider records, as this node sees the network.
async fn ring(inner: &ReplicationState) -> Ring {
    let candidates = inner
        .routing
        .serving(PROVIDERS_SERVICE)
        .await
        .unwrap_or_default();
    Ring::new(candidates)
}

/// Asks the keepers of `hash` who holds it: the first [`KEEPERS`], then
/// the next ones if those named nobody.
pub(crate) async fn lookup(inner: &Arc<ReplicationState>, hash: Hash) -> Lookup {
    let me = inner.routing.node_id();
    let mut lookup = Lookup {
        keepers: keepers(inner, &hash).await,
        ..Lookup::default()
    };
    let mut asked = 0;
    for wave in lookup.keepers.clone().chunks(KEEPERS) {
        asked += wave.len();
        let mut asks = JoinSet::new();
        for keeper in wave.iter().copied() {
            let inner = inner.clone();
            asks.spawn(async move {
                if keeper == me {
                    let found = lock(&inner.providers.records).find(&hash, Instant::now());
                    return (keeper, Ok(found));
                }
                let reached = match reach(&inner, keeper, LINGER).await {
                    Ok(reached) => reached,
                    Err(why) => return (keeper, Err(why)),
                };
                let answer = ask(&inner, &reached.link, |id| StoreMessage::Find { id, hash }).await;
                drop(reached);
                let found = match answer {
                    Ok(Reply::Providers(nodes)) => Ok(nodes
                        .iter()
                        .filter_map(|bytes| NodeId::from_bytes(bytes).ok())
                        .collect()),
                    Ok(Reply::Error(_)) => Err("it keeps no provider records".to_owned()),
                    Ok(_) => Err("it answered something else".to_owned()),
                    Err(why) => Err(why),
                };
                (keeper, found)
            });
        }
        let mut answers: Vec<(NodeId, Vec<NodeId>)> = Vec::new();
        while let Some(done) = asks.join_next().await {
            let Ok((keeper, found)) = done else { continue };
            match found {
                Ok(found) => answers.push((keeper, found)),
                Err(why) => lookup.silent.push((keeper, why)),
            }
        }
        // Each keeper's first holder, then each one's second, and so on:
        // a keeper that names nodes which do not hold the blob cannot push
        // the others' holders out of the few a fetch tries.
        answers.sort_by_key(|(keeper, _)| wave.iter().position(|k| k == keeper));
        let longest = answers
            .iter()
            .map(|(_, found)| found.len())
            .max()
            .unwrap_or(0);
        for rank in 0..longest {
            for (_, found) in &answers {
                if let Some(holder) = found.get(rank)
                    && *holder != me
                    && !lookup.holders.contains(holder)
                    && lookup.holders.len() < PROVIDERS_MAX
                {
                    lookup.holders.push(*holder);
                }
            }
        }
        if !lookup.holders.is_empty() {
            break;
        }
    }
    // Only those asked; in ring order, whatever order the answers came in.
    lookup.keepers.truncate(asked);
    let order = lookup.keepers.clone();
    lookup
        .silent
        .sort_by_key(|(keeper, _)| order.iter().position(|k| k == keeper));
    lookup
}

/// Holds routes to holders open while a fetch uses them; dropped, they
/// go back to the pool (or are closed, if they were not pooled).
#[derive(Default)]
pub(crate) struct Holding(Vec<Reached>);

/// Holders tried at most per fetch (in waves of [`HOLDERS_REACHED`]), so
/// that keepers naming nodes that cannot be reached cost a bounded time.
const HOLDERS_TRIED_MAX: usize = 9;

/// Looks `hash` up beyond the neighbours and reaches up to
/// [`HOLDERS_REACHED`] of its holders (trying at most
/// [`HOLDERS_TRIED_MAX`]), so that the fetch asks them too. What holds
/// those routes open, or why nobody could be reached.
pub(crate) async fn find_and_reach(
    inner: &Arc<ReplicationState>,
    hash: Hash,
    linger: Duration,
) -> Result<(Holding, Lookup), Beyond> {
    let lookup = lookup(inner, hash).await;
    if lookup.keepers.is_empty() {
        return Err(Beyond::NoKeepers);
    }
    if lookup.holders.is_empty() {
        return Err(Beyond::NoHolder(lookup));
    }
    let mut holding = Holding::default();
    let mut failures = Vec::new();
    let mut candidates = lookup.holders.iter().copied().take(HOLDERS_TRIED_MAX);
    while holding.0.len() < HOLDERS_REACHED {
        let wave: Vec<NodeId> = candidates
            .by_ref()
            .take(HOLDERS_REACHED - holding.0.len())
            .collect();
        if wave.is_empty() {
            break;
        }
        let mut reaching = JoinSet::new();
        for holder in wave {
            let inner = inner.clone();
            reaching.spawn(async move { (holder, reach(&inner, holder, linger).await) });
        }
        while let Some(done) = reaching.join_next().await {
            let Ok((holder, reached)) = done else {
                continue;
            };
            match reached {
                Ok(reached) => holding.0.push(reached),
                Err(why) => failures.push((holder, why)),
            }
        }
    }
    if holding.0.is_empty() {
        return Err(Beyond::HoldersFailed { lookup, failures });
    }
    tracing::debug!(blob = %hash, holders = %short_list(lookup.holders.iter().copied()), "found holders beyond the neighbours");
    Ok((holding, lookup))
}

/// A pooled route to `node`, marked in use; its linger made at least
/// `linger`.
fn reuse(
    inner: &ReplicationState,
    node: NodeId,
    linger: Duration,
) -> Option<(Arc<PeerLink>, Arc<()>)> {
    let mut routes = lock(&inner.providers.routes);
    let kept = routes.get_mut(&node)?;
    // The route may have gone under it (the node went away).
    let link = inner.peer_link(node)?;
    kept.linger = kept.linger.max(linger);
    Some((link, kept.users.clone()))
}

/// Pools a new route to `node`, closing the longest unused one past
/// [`ROUTES_MAX`]; the route back if every pooled one is in use.
async fn keep(
    inner: &ReplicationState,
    node: NodeId,
    route: StoreRoute,
    linger: Duration,
) -> Result<Arc<()>, StoreRoute> {
    let users = Arc::new(());
    let (evicted, replaced) = {
        let mut routes = lock(&inner.providers.routes);
        let mut evicted = None;
        if routes.len() >= ROUTES_MAX && !routes.contains_key(&node) {
            let unused = routes
                .iter()
                .filter(|(_, kept)| Arc::strong_count(&kept.users) == 1)
                .min_by_key(|(_, kept)| kept.idle_since)
                .map(|(node, _)| *node);
            match unused.and_then(|node| routes.remove(&node)) {
                Some(unused) => evicted = Some(unused),
                None => return Err(route),
            }
        }
        let replaced = routes.insert(
            node,
            PooledRoute {
                route,
                users: users.clone(),
                idle_since: Instant::now(),
                linger,
            },
        );
        (evicted, replaced)
    };
    for old in [evicted, replaced].into_iter().flatten() {
        old.route.close().await;
    }
    Ok(users)
}

/// Closes every pooled route nothing uses now, whatever its linger.
pub(crate) async fn close_idle_routes(inner: &ReplicationState) {
    close_pooled(inner, |_, kept| Arc::strong_count(&kept.users) == 1).await;
}

/// Closes routes nothing has used for their linger time, and those whose
/// store stream is gone.
async fn sweep_routes(inner: &ReplicationState, now: Instant) {
    for kept in lock(&inner.providers.routes).values_mut() {
        if Arc::strong_count(&kept.users) > 1 {
            kept.idle_since = now;
        }
    }
    close_pooled(inner, |node, kept| {
        (Arc::strong_count(&kept.users) == 1
            && now.saturating_duration_since(kept.idle_since) >= kept.linger)
            || inner.peer_link(node).is_none()
    })
    .await;
}

/// Takes the pooled routes `gone` picks out of the pool, and closes them.
async fn close_pooled(inner: &ReplicationState, gone: impl Fn(NodeId, &PooledRoute) -> bool) {
    let closing: Vec<PooledRoute> = {
        let mut routes = lock(&inner.providers.routes);
        let picked: Vec<NodeId> = routes
            .iter()
            .filter(|(node, kept)| gone(**node, kept))
            .map(|(node, _)| *node)
            .collect();
        picked
            .iter()
            .filter_map(|node| routes.remove(node))
            .collect()
    };
    for kept in closing {
        kept.route.close().await;
    }
}

/// The hashes this node's tags pin, each once, at most [`PROVIDED_MAX`].
async fn pinned(inner: &ReplicationState) -> Vec<Hash> {
    let Ok(tags) = inner.blocking(|store| store.tags()).await else {
        return Vec::new();
    };
    let mut seen = std::collections::HashSet::new();
    tags.into_iter()
        .map(|(_, hash)| hash)
        .filter(|hash| seen.insert(*hash))
        .take(PROVIDED_MAX)
        .collect()
}

/// Gives `hashes` to `keeper`, [`HAS_MAX`] to a message; whether it took
/// them (all answered: a keeper over its bounds takes fewer, and is not
/// asked again before the records are due).
async fn give(
    inner: &Arc<ReplicationState>,
    keeper: NodeId,
    hashes: &[Hash],
) -> Result<(), String> {
    if keeper == inner.routing.node_id() {
        if inner.config.keep_provider_records {
            lock(&inner.providers.records).provide(keeper, hashes, Instant::now());
        }
        return Ok(());
    }
    let reached = reach(inner, keeper, Duration::ZERO).await?;
    let mut outcome = Ok(());
    for batch in hashes.chunks(HAS_MAX) {
        let hashes = batch.to_vec();
        match ask(inner, &reached.link, |id| StoreMessage::Provide {
            id,
            hashes,
        })
        .await
        {
            Ok(Reply::Provided) => {}
            Ok(Reply::Error(_)) => {
                outcome = Err("it keeps no provider records".to_owned());
                break;
            }
            Ok(_) => {
                outcome = Err("it answered something else".to_owned());
                break;
            }
            Err(why) => {
                outcome = Err(why);
                break;
            }
        }
    }
    drop(reached);
    outcome
}

/// One round: expired records out, and the records due given to their
/// keepers.
async fn round(inner: &Arc<ReplicationState>) {
    let now = Instant::now();
    lock(&inner.providers.records).expire(now);
    if !inner.config.provide {
        return;
    }
    let wanted = pinned(inner).await;
    let ring = ring(inner).await;
    let due = lock(&inner.providers.providing).due(&ring, &wanted, now);
    let mut giving = JoinSet::new();
    for (keeper, hashes) in due {
        while giving.len() >= KEEPERS_AT_ONCE {
            settle(inner, giving.join_next().await);
        }
        let inner = inner.clone();
        giving.spawn(async move {
            let outcome = give(&inner, keeper, &hashes).await;
            (keeper, hashes, outcome)
        });
    }
    while let Some(done) = giving.join_next().await {
        settle(inner, Some(done));
    }
}

type Given = (NodeId, Vec<Hash>, Result<(), String>);

fn settle(inner: &ReplicationState, done: Option<Result<Given, tokio::task::JoinError>>) {
    let Some(Ok((keeper, hashes, outcome))) = done else {
        return;
    };
    let now = Instant::now();
    let mut providing = lock(&inner.providers.providing);
    match outcome {
        Ok(()) => providing.taken(keeper, &hashes, now),
        Err(why) => {
            tracing::info!(keeper = %keeper, %why, records = hashes.len(), "a provider-record keeper did not take this node's records: the next keeper along takes them");
            providing.failed(keeper, now);
        }
    }
}

/// How often the store's pins are checked for changes (one atomic read).
const PINS_CHECK: Duration = Duration::from_millis(250);

/// The holder's and keeper's background work, until shutdown: a round
/// every `provide_interval`, and soon after the pins change.
pub(crate) async fn run(inner: Arc<ReplicationState>) {
    let mut seen = None;
    let mut last_round = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep(PINS_CHECK) => {}
            () = inner.shutdown.cancelled() => break,
        }
        sweep_routes(&inner, Instant::now()).await;
        let generation = inner.store.tags_generation();
        if seen == Some(generation) && last_round.elapsed() < inner.config.provide_interval {
            continue;
        }
        seen = Some(generation);
        last_round = tokio::time::Instant::now();
        tokio::select! {
            () = round(&inner) => {}
            () = inner.shutdown.cancelled() => break,
        }
    }
    let routes: Vec<PooledRoute> = lock(&inner.providers.routes)
        .drain()
        .map(|(_, r)| r)
        .collect();
    for kept in routes {
        kept.route.close().await;
    }
}
