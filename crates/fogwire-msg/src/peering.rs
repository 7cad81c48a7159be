//! Peering clusters by public key, and what a board takes from its
//! cluster (`docs/protocol/messages.md` §9).
//!
//! The node hands the messenger a [`ClusterView`]; every
//! [`CLUSTER_POLL`] the cluster task here:
//! - serves the boards of the cluster as a mailbox and, unless mailboxes
//!   were named, has the card name two of them (rendezvous hashing);
//! - on the board that holds the cluster key, advertises the cluster's
//!   owner tag, so that other clusters' owners can find it by the id;
//! - hands both offers of every peering to the boards that have not
//!   taken them yet, and links this board to the peered clusters' boards.
//!
//! A peering starts with [`crate::Messenger::peer_request`] on one
//! owner board and is agreed to with [`crate::Messenger::peer_accept`]
//! on the other; each is one exchange over a route (an error when the
//! other board cannot be reached: nothing is queued behind the owner's
//! back).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use fogwire_identity::{Keypair, NodeId};
use fogwire_msg_proto::Frame;
use fogwire_msg_proto::peering::{self, Board, Offer, Stage};
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::db::{self, DbError};
use crate::frames::{FrameReader, encode_all};
use crate::{MsgError, Shared};

/// other cluster → [`Peering`].
pub(crate) const PEERINGS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("peerings");
/// How often the cluster task looks at the cluster.
const CLUSTER_POLL: Duration = Duration::from_secs(2);
/// How long the other board may take to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Peerings kept (asked, requested or agreed); beyond, new requests from
/// other clusters are refused.
pub const PEERINGS_MAX: usize = 256;
/// The advert part this task sets.
const ADVERT_OWNER: &str = "peering";

/// What the messenger needs of the node's cluster.
pub trait ClusterView: Send + Sync + 'static {
    /// This board's cluster id (the cluster key's public half), and the
    /// key if this board holds it.
    fn cluster(&self) -> Option<(NodeId, Option<Arc<Keypair>>)>;
    /// The boards of the cluster that are alive, this one included, with
    /// the addresses they take links on.
    fn boards(&self) -> Vec<Board>;
    /// Links this board to those of `boards` it has no link to.
    fn link(&self, boards: &[Board]);
}

/// Where a peering with another cluster stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeeringState {
    /// This cluster's owner asked; the other's has not agreed yet.
    Requested,
    /// The other cluster's owner asked this one's.
    Asked,
    /// Both agreed: the boards link.
    Peered,
}

/// A peering, as kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peering {
    pub state: PeeringState,
    /// The board that asked (on an asked peering): the acceptance goes to
    /// it.
    pub requester: Option<[u8; 32]>,
    /// This cluster's signed offer, and the other's.
    pub own_offer: Option<Vec<u8>>,
    pub their_offer: Option<Vec<u8>>,
    pub at_ms: u64,
}

impl Peering {
    /// The other cluster's boards, from its offer.
    pub fn their_boards(&self) -> Vec<Board> {
        self.their_offer
            .as_deref()
            .and_then(|offer| Offer::verify(offer).ok())
            .map(|offer| offer.boards)
            .unwrap_or_default()
    }
}

/// Why a peering could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeeringError {
    #[error("this board is in no cluster: `fogwire cluster init` or `fogwire cluster join` first")]
    NoCluster,
    #[error(
        "only the board that holds the cluster key (the one that ran `fogwire cluster init`) can peer the cluster"
    )]
    NotOwner,
    #[error("that is this board's own cluster")]
    Itself,
    #[error(
        "no board holding cluster {0}'s key is known to this network: check the id, and that its owner board is online"
    )]
    NotFound(String),
    #[error("cluster {cluster}'s owner board did not take the request: {why}")]
    Unreachable { cluster: String, why: String },
    #[error(
        "cluster {0} has not asked to peer with this one (`fogwire cluster peers` lists who has)"
    )]
    NotAsked(String),
    #[error("{PEERINGS_MAX} peerings are kept already")]
    Full,
}

impl Shared {
    fn view(&self) -> Option<Arc<dyn ClusterView>> {
        self.lock(&self.cluster).clone()
    }
}

/// Every peering kept, by the other cluster.
pub(crate) fn list(database: &redb::Database) -> Result<Vec<(NodeId, Peering)>, DbError> {
    let read = database.begin_read()?;
    let table = read.open_table(PEERINGS)?;
    let mut out = Vec::new();
    for row in table.iter()? {
        let (key, value) = row?;
        if let Ok(cluster) = NodeId::from_slice(key.value()) {
            out.push((cluster, db::decode(value.value())?));
        }
    }
    Ok(out)
}

fn get(database: &redb::Database, cluster: &NodeId) -> Result<Option<Peering>, DbError> {
    let read = database.begin_read()?;
    let table = read.open_table(PEERINGS)?;
    db::get(&table, cluster.as_bytes())
}

/// Keeps `peering`. Past [`PEERINGS_MAX`], a new one takes the place of
/// the oldest request from another cluster not agreed to (anyone can
/// make a cluster key and ask: requests must not crowd out peerings),
/// or is refused if there is none.
fn put(database: &redb::Database, cluster: &NodeId, peering: &Peering) -> Result<bool, DbError> {
    let write = database.begin_write()?;
    {
        let mut table = write.open_table(PEERINGS)?;
        let known = table.get(cluster.as_bytes().as_slice())?.is_some();
        if !known && table.len()? as usize >= PEERINGS_MAX {
            let mut oldest: Option<(u64, Vec<u8>)> = None;
            for row in table.iter()? {
                let (key, value) = row?;
                let kept: Peering = db::decode(value.value())?;
                if kept.state == PeeringState::Asked
                    && oldest.as_ref().is_none_or(|(at, _)| kept.at_ms < *at)
                {
                    oldest = Some((kept.at_ms, key.value().to_vec()));
                }
            }
            let Some((_, evicted)) = oldest else {
                return Ok(false);
            };
            table.remove(evicted.as_slice())?;
        }
        table.insert(
            cluster.as_bytes().as_slice(),
            db::encode(peering)?.as_slice(),
        )?;
    }
    write.commit()?;
    Ok(true)
}

/// This cluster's offer to `to`, signed; with the cluster's id.
fn own_offer(shared: &Shared, to: NodeId) -> Result<(NodeId, Vec<u8>), PeeringError> {
    let view = shared.view().ok_or(PeeringError::NoCluster)?;
    let (mine, key) = view.cluster().ok_or(PeeringError::NoCluster)?;
    let key = key.ok_or(PeeringError::NotOwner)?;
    if mine == to {
        return Err(PeeringError::Itself);
    }
    let offer = Offer {
        cluster: mine,
        to,
        issued_ms: fogwire_env::unix_ms(),
        boards: view.boards(),
    };
    Ok((mine, offer.sign(&key)))
}

/// Sends one PEERING frame to `node`'s messenger and waits for its ack.
async fn exchange(
    shared: &Shared,
    node: NodeId,
    stage: Stage,
    offers: Vec<Vec<u8>>,
) -> Result<(), String> {
    shared
        .over_route(node, crate::SERVICE, |mut stream| async move {
            stream
                .write_all(encode_all(&[Frame::Peering { stage, offers }]))
                .await
                .map_err(|error| error.to_string())?;
            let mut reader = FrameReader::default();
            loop {
                let frames = reader
                    .next_batch(&mut stream, ANSWER_TIMEOUT)
                    .await
                    .map_err(|error| match error {
                        crate::frames::FramesError::Ended => "it refused".to_owned(),
                        other => other.to_string(),
                    })?;
                let acked = frames.iter().any(|frame| {
                    matches!(
                        frame,
                        Frame::Peering {
                            stage: Stage::Ack,
                            ..
                        }
                    )
                });
                if acked {
                    let _ = stream.finish().await;
                    return Ok(());
                }
            }
        })
        .await
}

pub(crate) async fn request(shared: &Arc<Shared>, cluster: NodeId) -> Result<Peering, MsgError> {
    let (_, offer) = own_offer(shared, cluster)?;
    let targets = shared
        .routing
        .serving(&peering::owner_tag(&cluster))
        .await
        .unwrap_or_default();
    let name = cluster_name(&cluster);
    if targets.is_empty() {
        return Err(PeeringError::NotFound(name).into());
    }
    let mut why = String::new();
    for target in targets {
        match exchange(shared, target, Stage::Request, vec![offer.clone()]).await {
            Ok(()) => {
                let peering = Peering {
                    state: PeeringState::Requested,
                    requester: None,
                    own_offer: Some(offer),
                    their_offer: None,
                    at_ms: fogwire_env::unix_ms(),
                };
                let kept = peering.clone();
                let stored = shared
                    .with_state(move |state| put(state.db(), &cluster, &kept))
                    .await??;
                if !stored {
                    return Err(PeeringError::Full.into());
                }
                return Ok(peering);
            }
            Err(error) => why = error,
        }
    }
    Err(PeeringError::Unreachable { cluster: name, why }.into())
}

pub(crate) async fn accept(shared: &Arc<Shared>, cluster: NodeId) -> Result<Peering, MsgError> {
    let asked = shared
        .with_state(move |state| get(state.db(), &cluster))
        .await??;
    let name = cluster_name(&cluster);
    let Some(asked) = asked.filter(|peering| peering.state != PeeringState::Requested) else {
        return Err(PeeringError::NotAsked(name).into());
    };
    let requester = asked
        .requester
        .and_then(|node| NodeId::from_bytes(&node).ok())
        .ok_or_else(|| PeeringError::NotAsked(name.clone()))?;
    let (_, offer) = own_offer(shared, cluster)?;
    exchange(shared, requester, Stage::Accept, vec![offer.clone()])
        .await
        .map_err(|why| PeeringError::Unreachable {
            cluster: name.clone(),
            why,
        })?;
    let peering = Peering {
        state: PeeringState::Peered,
        own_offer: Some(offer),
        at_ms: fogwire_env::unix_ms(),
        ..asked
    };
    let kept = peering.clone();
    shared
        .with_state(move |state| put(state.db(), &cluster, &kept))
        .await??;
    tracing::info!(cluster = %name, "peered with another cluster: its boards and this cluster's link");
    Ok(peering)
}

/// A cluster id as operators read it (`fwcluster1…` is printed by the
/// API; the log shows the key's short form).
fn cluster_name(cluster: &NodeId) -> String {
    cluster.short()
}

/// Takes a PEERING frame from `peer`: whether to answer it with an ack.
pub(crate) async fn take(
    shared: &Arc<Shared>,
    peer: NodeId,
    stage: Stage,
    offers: Vec<Vec<u8>>,
) -> bool {
    let Some((mine, key)) = shared.view().and_then(|view| view.cluster()) else {
        return false;
    };
    let now = fogwire_env::unix_ms();
    let taken = shared
        .with_state(move |state| -> Result<bool, DbError> {
            let database = state.db();
            match (stage, offers.as_slice()) {
                // Another cluster's owner asks this one's.
                (Stage::Request, [offer]) if key.is_some() => {
                    let Ok(read) = Offer::verify(offer) else {
                        return Ok(false);
                    };
                    if read.to != mine || read.cluster == mine {
                        return Ok(false);
                    }
                    let kept = get(database, &read.cluster)?;
                    if kept.as_ref().is_some_and(|kept| kept.state == PeeringState::Peered) {
                        return Ok(true);
                    }
                    let peering = Peering {
                        state: PeeringState::Asked,
                        requester: Some(*peer.as_bytes()),
                        own_offer: None,
                        their_offer: Some(offer.clone()),
                        at_ms: now,
                    };
                    let stored = put(database, &read.cluster, &peering)?;
                    if stored {
                        tracing::info!(
                            cluster = %read.cluster.short(), from = %peer.short(),
                            "another cluster asks to peer with this one: `fogwire cluster peers` shows it, `fogwire cluster peer accept` agrees"
                        );
                    }
                    Ok(stored)
                }
                // The other owner agrees to what this one asked.
                (Stage::Accept, [offer]) if key.is_some() => {
                    let Ok(read) = Offer::verify(offer) else {
                        return Ok(false);
                    };
                    let Some(kept) = get(database, &read.cluster)? else {
                        return Ok(false);
                    };
                    if read.to != mine || kept.state == PeeringState::Asked {
                        return Ok(false);
                    }
                    let peering = Peering {
                        state: PeeringState::Peered,
                        their_offer: Some(offer.clone()),
                        at_ms: now,
                        ..kept
                    };
                    put(database, &read.cluster, &peering)?;
                    tracing::info!(cluster = %read.cluster.short(), "another cluster agreed to peer: its boards and this cluster's link");
                    Ok(true)
                }
                // This cluster's owner hands a board both offers.
                (Stage::Peered, [own, theirs]) => {
                    let Ok(other) = peering::check_pair(&mine, own, theirs) else {
                        return Ok(false);
                    };
                    let peering = Peering {
                        state: PeeringState::Peered,
                        requester: None,
                        own_offer: Some(own.clone()),
                        their_offer: Some(theirs.clone()),
                        at_ms: now,
                    };
                    put(database, &other.cluster, &peering)
                }
                _ => Ok(false),
            }
        })
        .await;
    matches!(taken, Ok(Ok(true)))
}

/// Follows the cluster (see the module's documentation) until shutdown.
pub(crate) async fn follow(shared: Arc<Shared>, view: Arc<dyn ClusterView>) {
    let chosen_here = shared.lock(&shared.mailboxes).is_empty();
    let mut advertised: Option<String> = None;
    // Boards that took each peering, on the owner board.
    let mut handed: BTreeMap<NodeId, BTreeSet<NodeId>> = BTreeMap::new();
    let mut tick = tokio::time::interval(CLUSTER_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let boards = view.boards();
        let ids: Vec<NodeId> = boards.iter().map(|board| board.node).collect();
        mailboxes_from(&shared, &ids, chosen_here).await;
        let cluster = view.cluster();
        let tag = cluster
            .as_ref()
            .filter(|(_, key)| key.is_some())
            .map(|(id, _)| peering::owner_tag(id));
        if tag != advertised {
            let services: Vec<String> = tag.iter().cloned().collect();
            if shared
                .routing
                .advertise(ADVERT_OWNER, services, Vec::new())
                .await
                .is_ok()
            {
                advertised = tag;
            }
        }
        let Some((_, key)) = cluster else { continue };
        let Ok(Ok(peerings)) = shared.with_state(|state| list(state.db())).await else {
            continue;
        };
        for (other, peering) in peerings {
            if peering.state != PeeringState::Peered {
                continue;
            }
            view.link(&peering.their_boards());
            let (Some(own), Some(theirs), true) =
                (&peering.own_offer, &peering.their_offer, key.is_some())
            else {
                continue;
            };
            let took = handed.entry(other).or_default();
            for board in &ids {
                if *board == shared.me || took.contains(board) {
                    continue;
                }
                let offers = vec![own.clone(), theirs.clone()];
                match exchange(&shared, *board, Stage::Peered, offers).await {
                    Ok(()) => {
                        took.insert(*board);
                    }
                    Err(error) => {
                        tracing::debug!(board = %board.short(), %error, "cannot hand a board a peering yet")
                    }
                }
            }
        }
    }
}

/// Serves the cluster's boards as a mailbox and, if this board chooses
/// its own, names two of them by rendezvous hashing.
async fn mailboxes_from(shared: &Arc<Shared>, boards: &[NodeId], chosen_here: bool) {
    // A board that leaves the live set stays served: it is away, which
    // is when its mail needs holding (a cluster is a few boards).
    shared
        .lock(&shared.owners)
        .extend(boards.iter().filter(|board| **board != shared.me));
    if !chosen_here {
        return;
    }
    let chosen = fogwire_msg_proto::mailbox::rendezvous(
        &shared.me,
        boards,
        fogwire_msg_proto::mailbox::CLUSTER_MAILBOXES,
    );
    if *shared.lock(&shared.mailboxes) == chosen {
        return;
    }
    let now = fogwire_env::unix_ms();
    let named = chosen.clone();
    let Ok((card, mailboxes)) = shared
        .with_state(move |state| {
            state.set_mailboxes(&named, now);
            (state.card().to_vec(), state.mailboxes().to_vec())
        })
        .await
    else {
        return;
    };
    tracing::info!(mailboxes = ?chosen.iter().map(NodeId::short).collect::<Vec<_>>(), "this board's mail is held by its cluster's boards while it is away");
    *shared.lock(&shared.card) = card;
    *shared.lock(&shared.mailboxes) = mailboxes;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn cluster(index: u32) -> NodeId {
        let mut seed = [7u8; 32];
        seed[..4].copy_from_slice(&index.to_be_bytes());
        Keypair::from_seed(&seed).node_id()
    }

    fn kept(state: PeeringState, at_ms: u64) -> Peering {
        Peering {
            state,
            requester: None,
            own_offer: None,
            their_offer: None,
            at_ms,
        }
    }

    #[test]
    fn requests_never_crowd_out_peerings_and_the_oldest_request_gives_way() {
        let dir = tempfile::tempdir().unwrap();
        let database = db::open(&dir.path().join("m.redb")).unwrap();
        // One agreed peering, then requests up to the bound.
        assert!(put(&database, &cluster(0), &kept(PeeringState::Peered, 0)).unwrap());
        for index in 1..PEERINGS_MAX as u32 {
            let asked = kept(PeeringState::Asked, u64::from(index));
            assert!(put(&database, &cluster(index), &asked).unwrap());
        }
        // A new request takes the oldest request's place.
        let newest = kept(PeeringState::Asked, 10_000);
        assert!(put(&database, &cluster(9_999), &newest).unwrap());
        let all = list(&database).unwrap();
        assert_eq!(all.len(), PEERINGS_MAX);
        let clusters: Vec<NodeId> = all.iter().map(|(id, _)| *id).collect();
        assert!(!clusters.contains(&cluster(1)), "the oldest request left");
        assert!(clusters.contains(&cluster(0)), "the peering stayed");
        assert!(clusters.contains(&cluster(9_999)));
        // With nothing but peerings kept, a new one is refused.
        let dir = tempfile::tempdir().unwrap();
        let database = db::open(&dir.path().join("m.redb")).unwrap();
        for index in 0..PEERINGS_MAX as u32 {
            let peered = kept(PeeringState::Peered, u64::from(index));
            assert!(put(&database, &cluster(index), &peered).unwrap());
        }
        let refused = kept(PeeringState::Asked, 1);
        assert!(!put(&database, &cluster(9_999), &refused).unwrap());
    }
}
