//! The messenger: end-to-end encrypted messages between node ids, over
//! routes (`docs/protocol/messages.md`).
//!
//! - Messages are sealed with Olm (the Double Ratchet, from `vodozemac`):
//!   a first message to a node starts a session from the node's signed
//!   card (its Olm identity and fallback keys), fetched from it over a
//!   route; the sessions and the account are kept in the database,
//!   pickled and encrypted with a key derived from the node's key.
//! - [`Messenger::send`] writes a message to the history and the outbox
//!   in one transaction (sends arriving together share one commit) and
//!   wakes the peer's delivery task (`deliver.rs`), which opens a route
//!   to the peer's `msg` service, seals what waits (the ratchet's state on
//!   disk before the bytes leave) and sends it, until the peer signs a
//!   receipt for each message; it tries again (1 s, doubling, at most
//!   30 s) until then, for 14 days.
//! - The `msg` service (`serve.rs`) opens what a peer sends in batches,
//!   one transaction per batch, orders each conversation (a gap holds
//!   later messages; duplicates are dropped) and answers with a signed
//!   delivery receipt once it is on disk. Strangers — nodes this one never
//!   wrote to — may leave at most 1 000 unread messages each, 20 000 in
//!   all.
//! - Reading a conversation sends its senders signed read receipts.
//! - A node that is away has its mail held, sealed, by the mailboxes its
//!   card names (`mailbox.rs`): its own always-on nodes, or two boards of
//!   its cluster; it picks it up when it returns.
//!
//! The messenger reaches other nodes only through `fogwire-route`'s
//! `Routing`.

pub mod config;
mod db;
mod deliver;
pub mod frames;
mod groups;
pub mod mailbox;
pub mod peering;
mod serve;
pub mod state;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fogwire_identity::{Keypair, NodeId};
use fogwire_route::{Routing, Spec};
use tokio::sync::{Notify, broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use db::{Contact, DbError, Record, Status};
pub use fogwire_msg_proto::MessageId;
pub use fogwire_msg_proto::group::GroupId;
pub use fogwire_msg_proto::wire::TEXT_LEN_MAX;
pub use peering::{ClusterView, Peering, PeeringError, PeeringState};
use state::State;
pub use state::{Group, GroupEntry, GroupError, GroupEvent, Standing};

/// The route service messages arrive on.
pub const SERVICE: &str = "msg";
/// The database file, in the node's data directory.
pub const DB_FILE: &str = "messages.redb";
/// Live events queued for a slow follower; beyond, it misses some (and is
/// told how many).
pub const EVENTS_QUEUED: usize = 4_096;
/// Sends waiting to be written; beyond, `send` waits.
const SENDS_QUEUED: usize = 4_096;
/// Sends written in one transaction at most.
const SENDS_PER_COMMIT: usize = 1_024;
/// Most peers delivered to at once; others wait their turn.
const PEERS_AT_ONCE: usize = 64;
/// Owners' storage receipts a mailbox keeps waiting for redemption.
const EARNED_MAX: usize = 65_536;

/// Why a messenger operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MsgError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("a message of {len} bytes is longer than the {TEXT_LEN_MAX} bytes one may hold")]
    TooLong { len: usize },
    #[error("a message needs some text")]
    Empty,
    #[error("that is this node: a message goes to another node")]
    ToSelf,
    #[error("the messenger is stopping")]
    Stopped,
    #[error("cannot offer the msg service: {0}")]
    Service(#[from] fogwire_route::ServiceError),
    #[error(transparent)]
    Peering(#[from] PeeringError),
    #[error(transparent)]
    Group(#[from] GroupError),
    #[error("could not get {node}'s key package to add it: {why}")]
    NoKeyPackage { node: String, why: String },
}

/// Mailboxes: which hold this node's mail while it is away, and whose
/// mail it holds.
#[derive(Debug, Clone, Default)]
pub struct Mailboxes {
    /// This node's mailboxes (at most four are named in its card).
    pub mine: Vec<NodeId>,
    /// The nodes this node keeps mail for.
    pub serve_for: Vec<NodeId>,
}

/// What the live stream ([`Messenger::follow`]) carries: a message, as it
/// now stands, whenever it arrives or its status changes.
pub type Event = Record;

/// The messenger of one node. Cheap to clone.
#[derive(Clone)]
pub struct Messenger {
    shared: Arc<Shared>,
    sends: mpsc::Sender<SendRequest>,
}

impl std::fmt::Debug for Messenger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messenger")
            .field("me", &self.shared.me)
            .finish_non_exhaustive()
    }
}

struct SendRequest {
    peer: NodeId,
    text: String,
    reply: oneshot::Sender<Result<Record, MsgError>>,
}

pub(crate) struct Shared {
    me: NodeId,
    state: Mutex<State>,
    /// The nodes this node keeps mail for, as a mailbox.
    owners: Mutex<BTreeSet<NodeId>>,
    /// This node's signed card and the mailboxes it names: copies of the
    /// state's, read on the runtime's threads without waiting for the
    /// state (which blocking threads hold through their transactions).
    card: Mutex<Vec<u8>>,
    mailboxes: Mutex<Vec<NodeId>>,
    /// Owners' latest storage receipts for this node, to redeem.
    earned: Mutex<HashMap<NodeId, (u64, Vec<u8>)>>,
    /// This board's cluster, once the node gives it (until shutdown: the
    /// cluster holds the node's subsystems).
    cluster: Mutex<Option<Arc<dyn ClusterView>>>,
    routing: Routing,
    events: broadcast::Sender<Event>,
    /// The delivery task of each peer with work, and how to wake it.
    deliverers: Mutex<HashMap<NodeId, Arc<Notify>>>,
    peers_at_once: Arc<tokio::sync::Semaphore>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Shared {
    /// Locks one of the small maps; a panic while it was held left it as
    /// it was between two whole changes.
    pub(crate) fn lock<'a, T>(&self, mutex: &'a Mutex<T>) -> MutexGuard<'a, T> {
        mutex
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state as its last
        // committed transaction left it, which is what is on disk anyway.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn publish(&self, records: impl IntoIterator<Item = Record>) {
        // Records that carry group frames (empty text) are not messages
        // of a conversation.
        for record in records.into_iter().filter(|record| !record.text.is_empty()) {
            let _ = self.events.send(record);
        }
    }

    /// Opens a route to `node` and a stream to its `service`, runs `work`
    /// on the stream, and closes the route, whatever `work` returned.
    pub(crate) async fn over_route<T, Work>(
        &self,
        node: NodeId,
        service: &str,
        work: impl FnOnce(fogwire_route::RouteStream) -> Work,
    ) -> Result<T, String>
    where
        Work: Future<Output = Result<T, String>>,
    {
        let opened = self
            .routing
            .open(node, fogwire_route::Constraints::default())
            .await
            .map_err(|error| error.to_string())?;
        let result = match self.routing.connect(opened.route, service).await {
            Ok(stream) => work(stream).await,
            Err(error) => Err(error.to_string()),
        };
        let _ = self.routing.close(opened.route).await;
        result
    }

    /// Runs `work` on the state on a blocking thread.
    pub(crate) async fn with_state<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&mut State) -> T + Send + 'static,
    ) -> Result<T, MsgError> {
        let shared = self.clone();
        tokio::task::spawn_blocking(move || work(&mut shared.state()))
            .await
            .map_err(|_| MsgError::Stopped)
    }
}

impl Messenger {
    /// Opens the database at `path`, offers the `msg` service on
    /// `routing`, and starts delivering what the outbox holds.
    pub fn start(path: &Path, key: Arc<Keypair>, routing: Routing) -> Result<Self, MsgError> {
        Self::start_with(path, key, routing, Mailboxes::default())
    }

    /// [`Messenger::start`], with this node's mailboxes and the owners it
    /// keeps mail for.
    pub fn start_with(
        path: &Path,
        key: Arc<Keypair>,
        routing: Routing,
        mailboxes: Mailboxes,
    ) -> Result<Self, MsgError> {
        let now = fogwire_env::unix_ms();
        let mut state = State::load(path, key.clone(), now)?;
        state.set_mailboxes(&mailboxes.mine, now);
        let (events, _) = broadcast::channel(EVENTS_QUEUED);
        let shared = Arc::new(Shared {
            me: key.node_id(),
            mailboxes: Mutex::new(state.mailboxes().to_vec()),
            card: Mutex::new(state.card().to_vec()),
            owners: Mutex::new(mailboxes.serve_for.into_iter().collect()),
            earned: Mutex::new(HashMap::new()),
            cluster: Mutex::new(None),
            state: Mutex::new(state),
            routing: routing.clone(),
            events,
            deliverers: Mutex::new(HashMap::new()),
            peers_at_once: Arc::new(tokio::sync::Semaphore::new(PEERS_AT_ONCE)),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        let (sends, requests) = mpsc::channel(SENDS_QUEUED);
        shared.tasks.spawn(write_sends(shared.clone(), requests));
        // Every minute, shows what gaps held back for too long.
        shared.tasks.spawn(every(
            shared.clone(),
            Duration::from_secs(60),
            "messages held behind a gap could not be released",
            State::release_overdue,
            |shared, shown| shared.publish(shown),
        ));
        shared.tasks.spawn(mailbox::collect(shared.clone()));
        shared.tasks.spawn(mailbox::sweep(shared.clone()));
        routing.accept(
            Spec::streams(SERVICE),
            Arc::new(serve::MsgService {
                shared: shared.clone(),
            }),
        )?;
        routing.accept(
            Spec::streams(mailbox::SERVICE),
            Arc::new(mailbox::MailboxService {
                shared: shared.clone(),
            }),
        )?;
        let messenger = Self { shared, sends };
        let pending = db::peers_with_work(messenger.shared.state().db())?;
        for peer in pending {
            deliver::wake(&messenger.shared, peer);
        }
        Ok(messenger)
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.shared.me
    }

    /// Sends `text` to `peer`: the message as queued. It is delivered in
    /// the background; [`Messenger::follow`] tells when.
    pub async fn send(&self, peer: NodeId, text: String) -> Result<Record, MsgError> {
        if peer == self.shared.me {
            return Err(MsgError::ToSelf);
        }
        if text.is_empty() {
            return Err(MsgError::Empty);
        }
        if text.len() > TEXT_LEN_MAX {
            return Err(MsgError::TooLong { len: text.len() });
        }
        let (reply, answer) = oneshot::channel();
        self.sends
            .send(SendRequest { peer, text, reply })
            .await
            .map_err(|_| MsgError::Stopped)?;
        answer.await.map_err(|_| MsgError::Stopped)?
    }

    /// Received messages not yet read, oldest first (at most `limit`).
    /// With `mark_read`, they are marked read and their senders get read
    /// receipts.
    pub async fn inbox(&self, limit: usize, mark_read: bool) -> Result<Vec<Record>, MsgError> {
        let now = fogwire_env::unix_ms();
        let (unread, read) = self
            .shared
            .with_state(move |state| -> Result<_, DbError> {
                let unread = db::unread(state.db(), limit)?;
                let read = if mark_read {
                    state.mark_read(unread.clone(), now)?
                } else {
                    Vec::new()
                };
                Ok((unread, read))
            })
            .await??;
        self.after_read(read);
        Ok(unread)
    }

    /// A conversation, oldest first: its last `limit` messages, or those
    /// whose text contains `search` (ignoring case). With `mark_read`,
    /// what `peer` sent is marked read and it gets read receipts.
    pub async fn history(
        &self,
        peer: NodeId,
        search: Option<String>,
        limit: usize,
        mark_read: bool,
    ) -> Result<Vec<Record>, MsgError> {
        let now = fogwire_env::unix_ms();
        let (records, read) = self
            .shared
            .with_state(move |state| -> Result<_, DbError> {
                let read = if mark_read {
                    let mut unread = db::unread(state.db(), usize::MAX)?;
                    unread.retain(|record| record.peer == *peer.as_bytes());
                    state.mark_read(unread, now)?
                } else {
                    Vec::new()
                };
                let records = db::history(state.db(), &peer, search.as_deref(), limit)?;
                Ok((records, read))
            })
            .await??;
        self.after_read(read);
        Ok(records)
    }

    fn after_read(&self, read: Vec<Record>) {
        let peers: BTreeSet<NodeId> = read.iter().filter_map(Record::peer).collect();
        self.shared.publish(read);
        for peer in peers {
            deliver::wake(&self.shared, peer);
        }
    }

    /// Every node this one exchanged messages with.
    pub async fn contacts(&self) -> Result<Vec<(NodeId, Contact)>, MsgError> {
        Ok(self
            .shared
            .with_state(|state| db::contacts(state.db()))
            .await??)
    }

    /// One message, by id.
    pub async fn message(&self, id: MessageId) -> Result<Option<Record>, MsgError> {
        Ok(self
            .shared
            .with_state(move |state| db::message(state.db(), &id))
            .await??)
    }

    /// Every message as it arrives or changes status, from now on.
    pub fn follow(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    /// The mailboxes this node's card names.
    pub fn mailboxes(&self) -> Vec<NodeId> {
        self.shared.lock(&self.shared.mailboxes).clone()
    }

    /// Follows this board's cluster (see `peering.rs`): its boards'
    /// mail is held here, two of them hold this one's (unless mailboxes
    /// were named), and the clusters it peers with are linked to.
    pub fn set_cluster(&self, view: Arc<dyn ClusterView>) {
        let mut cluster = self.shared.lock(&self.shared.cluster);
        if cluster.is_none() && !self.shared.shutdown.is_cancelled() {
            *cluster = Some(view.clone());
            self.shared
                .tasks
                .spawn(peering::follow(self.shared.clone(), view));
        }
    }

    /// Asks the owner of `cluster` (its id: the cluster key's public
    /// half) to peer with this board's cluster; this board must hold its
    /// cluster's key. Fails if no owner board of `cluster` took it.
    pub async fn peer_request(&self, cluster: NodeId) -> Result<Peering, MsgError> {
        peering::request(&self.shared, cluster).await
    }

    /// Agrees to `cluster`'s request to peer: tells its owner board, and
    /// this cluster's boards link to its boards.
    pub async fn peer_accept(&self, cluster: NodeId) -> Result<Peering, MsgError> {
        peering::accept(&self.shared, cluster).await
    }

    /// The peerings this board knows of, by the other cluster's id.
    pub async fn peerings(&self) -> Result<Vec<(NodeId, Peering)>, MsgError> {
        Ok(self
            .shared
            .with_state(|state| peering::list(state.db()))
            .await??)
    }

    /// Owners' storage receipts for this node as their mailbox, taken to
    /// be redeemed (the latest of each owner: they are cumulative).
    pub fn take_mailbox_receipts(&self) -> Vec<Vec<u8>> {
        self.shared
            .lock(&self.shared.earned)
            .drain()
            .map(|(_, (_, receipt))| receipt)
            .collect()
    }

    /// What this node holds as a mailbox for `owner`: messages and bytes.
    pub async fn held_for(&self, owner: NodeId) -> Result<(u64, u64), MsgError> {
        let usage = self
            .shared
            .with_state(move |state| mailbox::store::usage(state.db(), &owner))
            .await??;
        Ok((usage.messages, usage.bytes))
    }

    /// Stops delivering and serving; what is queued stays queued on disk.
    pub async fn shutdown(&self) {
        self.shared.routing.withdraw(SERVICE);
        self.shared.routing.withdraw(mailbox::SERVICE);
        self.shared.shutdown.cancel();
        self.shared.lock(&self.shared.cluster).take();
        self.shared.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.shared.tasks.wait()).await;
    }
}

/// Writes queued sends in batches (one transaction each) and wakes their
/// peers' delivery.
async fn write_sends(shared: Arc<Shared>, mut requests: mpsc::Receiver<SendRequest>) {
    let mut batch = Vec::with_capacity(SENDS_PER_COMMIT);
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            count = requests.recv_many(&mut batch, SENDS_PER_COMMIT) => {
                if count == 0 {
                    return;
                }
            }
        }
        let requests = std::mem::take(&mut batch);
        let now = fogwire_env::unix_ms();
        let written = shared
            .with_state(move |state| {
                let mut by_peer: BTreeMap<NodeId, Vec<SendRequest>> = BTreeMap::new();
                for request in requests {
                    by_peer.entry(request.peer).or_default().push(request);
                }
                let mut answered = Vec::new();
                for (peer, requests) in by_peer {
                    let (texts, replies): (Vec<_>, Vec<_>) = requests
                        .into_iter()
                        .map(|request| (request.text, request.reply))
                        .unzip();
                    match state.queue(&peer, texts, now) {
                        Ok(records) => {
                            for (record, reply) in records.into_iter().zip(replies) {
                                answered.push((peer, record.clone()));
                                let _ = reply.send(Ok(record));
                            }
                        }
                        Err(error) => {
                            let text = error.to_string();
                            for reply in replies {
                                let _ = reply.send(Err(DbError::Redb(text.clone()).into()));
                            }
                        }
                    }
                }
                answered
            })
            .await;
        let Ok(written) = written else { return };
        let mut peers = BTreeSet::new();
        for (peer, record) in written {
            peers.insert(peer);
            shared.publish([record]);
        }
        for peer in peers {
            deliver::wake(&shared, peer);
        }
    }
}

/// Every `period`, runs `work` on the state (with the time) and hands
/// what it returns to `then`, until shutdown; `failed` says what could
/// not be done.
pub(crate) async fn every<T: Send + 'static>(
    shared: Arc<Shared>,
    period: Duration,
    failed: &'static str,
    work: fn(&mut State, u64) -> Result<T, DbError>,
    then: fn(&Shared, T),
) {
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = fogwire_env::unix_ms();
        match shared.with_state(move |state| work(state, now)).await {
            Ok(Ok(done)) => then(&shared, done),
            Ok(Err(error)) => tracing::warn!(%error, "{failed}"),
            Err(_) => return,
        }
    }
}
