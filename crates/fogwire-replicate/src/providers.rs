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
/// Routes to holders kept at once; past it, the longest unused goes.
const HOLDER_ROUTES_MAX: usize = 16;
/// How long a route to a holder a single-blob fetch used stays once no
/// fetch uses it.
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

/// A route to a holder kept for fetches; `users` counts the fetches that
/// hold it (beyond the one reference kept here).
struct HolderRoute {
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
    routes: std::sync::Mutex<HashMap<NodeId, HolderRoute>>,
}

/// Counters for `store stat` and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProviderStats {
    /// Records this node keeps for others.
    pub records_kept: u64,
    /// (hash, keeper) records this node has given and keepers took.
    pub records_given: u64,
    /// Routes to holders open for fetches.
    pub holder_routes: u64,
}

pub(crate) fn stats(inner: &ReplicationState) -> ProviderStats {
    ProviderStats {
        records_kept: lock(&inner.providers.records).len() as u64,
        records_given: lock(&inner.providers.providing).records() as u64,
        holder_routes: lock(&inner.providers.routes).len() as u64,
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

/// The peer link to `node`: its link or store route if it has one, else
/// a store route opened now (returned, for the caller to close).
async fn reach(
    inner: &Arc<ReplicationState>,
    node: NodeId,
) -> Result<(Arc<PeerLink>, Option<StoreRoute>), String> {
    if let Some(link) = inner.peer_link(node) {
        return Ok((link, None));
    }
    let route = tokio::time::timeout(ROUTE_OPEN_TIMEOUT, crate::route::open(inner, node))
        .await
        .map_err(|_| format!("no route within {} s", ROUTE_OPEN_TIMEOUT.as_secs()))?
        .map_err(|e| e.to_string())?;
    match inner.peer_link(node) {
        Some(link) => Ok((link, route)),
        None => {
            if let Some(route) = route {
                route.close().await;
            }
            Err("its store stream closed at once".to_owned())
        }
    }
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
    let candidates = inner
        .routing
        .serving(PROVIDERS_SERVICE)
        .await
        .unwrap_or_default();
    Ring::new(candidates)
        .successors(hash)
        .take(KEEPERS_ASKED_MAX)
        .collect()
}

/// Asks the keepers of `hash` who holds it: the first [`KEEPERS`], then
/// the next ones if those named nobody.
pub(crate) async fn lookup(inner: &Arc<ReplicationState>, hash: Hash) -> Lookup {
    let me = inner.routing.node_id();
    let mut lookup = Lookup {
        keepers: keepers(inner, &hash).await,
        ..Lookup::default()
    };
    for wave in lookup.keepers.clone().chunks(KEEPERS) {
        let mut asks = JoinSet::new();
        for keeper in wave.iter().copied() {
            let inner = inner.clone();
            asks.spawn(async move {
                if keeper == me {
                    let found = lock(&inner.providers.records).find(&hash, Instant::now());
                    return (keeper, Ok(found));
                }
                let (link, route) = match reach(&inner, keeper).await {
                    Ok(reached) => reached,
                    Err(why) => return (keeper, Err(why)),
                };
                let answer = ask(&inner, &link, |id| StoreMessage::Find { id, hash }).await;
                if let Some(route) = route {
                    route.close().await;
                }
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
        while let Some(done) = asks.join_next().await {
            let Ok((keeper, found)) = done else { continue };
            match found {
                Ok(found) => {
                    for holder in found {
                        if holder != me
                            && !lookup.holders.contains(&holder)
                            && lookup.holders.len() < PROVIDERS_MAX
                        {
                            lookup.holders.push(holder);
                        }
                    }
                }
                Err(why) => lookup.silent.push((keeper, why)),
            }
        }
        if !lookup.holders.is_empty() {
            break;
        }
    }
    // Ring order, whatever order the answers came in.
    let order = lookup.keepers.clone();
    lookup
        .silent
        .sort_by_key(|(keeper, _)| order.iter().position(|k| k == keeper));
    lookup
}

/// Holds routes to holders open while a fetch uses them.
#[derive(Debug, Default)]
pub(crate) struct Holding(Vec<Arc<()>>);

/// Looks `hash` up beyond the neighbours and opens store routes to up to
/// [`HOLDERS_REACHED`] of its holders, so that the fetch asks them too.
/// What holds those routes open, or why nobody could be reached.
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
    let mut opening = JoinSet::new();
    for holder in lookup.holders.iter().copied() {
        if let Some(users) = reuse(inner, holder, linger) {
            holding.0.push(users);
        } else if inner.peer_link(holder).is_some() {
            // Already a peer (a neighbour, or a route of its own): asked.
            holding.0.push(Arc::new(()));
        } else if opening.len() + holding.0.len() < HOLDERS_REACHED {
            let inner = inner.clone();
            opening.spawn(async move {
                let opened =
                    tokio::time::timeout(ROUTE_OPEN_TIMEOUT, crate::route::open(&inner, holder))
                        .await
                        .map_err(|_| format!("no route within {} s", ROUTE_OPEN_TIMEOUT.as_secs()))
                        .and_then(|opened| opened.map_err(|e| e.to_string()));
                (holder, opened)
            });
        }
        if holding.0.len() >= HOLDERS_REACHED {
            break;
        }
    }
    while let Some(done) = opening.join_next().await {
        let Ok((holder, opened)) = done else { continue };
        match opened {
            Ok(Some(route)) => holding.0.push(keep(inner, holder, route, linger).await),
            Ok(None) => holding.0.push(Arc::new(())),
            Err(why) => failures.push((holder, why)),
        }
    }
    if holding.0.is_empty() {
        return Err(Beyond::HoldersFailed { lookup, failures });
    }
    tracing::debug!(blob = %hash, holders = %short_list(lookup.holders.iter().copied()), "found holders beyond the neighbours");
    Ok((holding, lookup))
}

/// A kept route to `holder`, marked in use.
fn reuse(inner: &ReplicationState, holder: NodeId, linger: Duration) -> Option<Arc<()>> {
    let mut routes = lock(&inner.providers.routes);
    let kept = routes.get_mut(&holder)?;
    kept.linger = kept.linger.max(linger);
    // The route may have gone under it (the holder went away).
    inner.peer_link(holder)?;
    Some(kept.users.clone())
}

/// Keeps a new route to `holder` for fetches, closing the longest unused
/// one past [`HOLDER_ROUTES_MAX`].
async fn keep(
    inner: &ReplicationState,
    holder: NodeId,
    route: StoreRoute,
    linger: Duration,
) -> Arc<()> {
    let users = Arc::new(());
    let (evicted, replaced) = {
        let mut routes = lock(&inner.providers.routes);
        let mut evicted = None;
        if routes.len() >= HOLDER_ROUTES_MAX && !routes.contains_key(&holder) {
            let unused = routes
                .iter()
                .filter(|(_, kept)| Arc::strong_count(&kept.users) == 1)
                .min_by_key(|(_, kept)| kept.idle_since)
                .map(|(node, _)| *node);
            evicted = unused.and_then(|node| routes.remove(&node));
        }
        let replaced = routes.insert(
            holder,
            HolderRoute {
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
    users
}

/// Closes routes to holders no fetch has used for their linger time.
async fn sweep_routes(inner: &ReplicationState, now: Instant) {
    let expired: Vec<HolderRoute> = {
        let mut routes = lock(&inner.providers.routes);
        for kept in routes.values_mut() {
            if Arc::strong_count(&kept.users) > 1 {
                kept.idle_since = now;
            }
        }
        let gone: Vec<NodeId> = routes
            .iter()
            .filter(|(node, kept)| {
                (Arc::strong_count(&kept.users) == 1
                    && now.saturating_duration_since(kept.idle_since) >= kept.linger)
                    || inner.peer_link(**node).is_none()
            })
            .map(|(node, _)| *node)
            .collect();
        gone.iter().filter_map(|node| routes.remove(node)).collect()
    };
    for kept in expired {
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
    let (link, route) = reach(inner, keeper).await?;
    let mut outcome = Ok(());
    for batch in hashes.chunks(HAS_MAX) {
        let hashes = batch.to_vec();
        match ask(inner, &link, |id| StoreMessage::Provide { id, hashes }).await {
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
    if let Some(route) = route {
        route.close().await;
    }
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
    let candidates = inner
        .routing
        .serving(PROVIDERS_SERVICE)
        .await
        .unwrap_or_default();
    let ring = Ring::new(candidates);
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
    let routes: Vec<HolderRoute> = lock(&inner.providers.routes)
        .drain()
        .map(|(_, r)| r)
        .collect();
    for kept in routes {
        kept.route.close().await;
    }
}
