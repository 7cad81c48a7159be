//! The tokio driver of fogwire clusters (`docs/protocol/cluster.md`).
//!
//! A board is in no cluster until it is given a join code (`fogwire
//! cluster init` makes one, `fogwire cluster join` or the `[cluster] join`
//! line takes one). Then [`Cluster`]:
//! - announces the board and browses for the others by mDNS
//!   (`discovery.rs`), and links to those that carry the cluster's tag;
//! - runs membership (`fogwire_cluster_proto::swim`) over the links'
//!   cluster channel (`0x0400`): one task owns the sans-IO core and feeds it
//!   link events, messages and time (`driver.rs`);
//! - publishes the live members for placement ([`Cluster::live`]) and a
//!   status for the control API.
//!
//! Architecture invariant: no membership rule lives here (those are in
//! `fogwire-cluster-proto`); it decides no link policy of the node beyond
//! asking the node's [`Dialer`] for a link to a member.

pub mod boot;
pub mod config;
pub mod discovery;
mod driver;
pub mod files;
pub mod manifest;
mod peering;
mod report;
pub mod runners;
pub mod supervise;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use fogwire_cluster_proto::message::CHANNEL_CLUSTER;
use fogwire_cluster_proto::placement::{Member, Resources};
use fogwire_cluster_proto::swim;
use fogwire_cluster_proto::{ClusterId, JoinCode};
use fogwire_identity::{Keypair, NodeId};
use fogwire_link::proto::{ChannelConfig, ChannelId};
use fogwire_link::{ChannelSender, LinkHandle};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use fogwire_cluster_proto as proto;

/// The link channel membership runs on.
pub const CHANNEL: ChannelId = ChannelId(CHANNEL_CLUSTER);
/// Link events and commands waiting for the membership task.
const CONTROL_QUEUE: usize = 1024;
/// Membership messages waiting for the membership task; a full queue
/// slows the links' readers down.
const MESSAGE_QUEUE: usize = 1024;

/// What this board offers to its cluster's placement: its cores, its
/// memory, and the free space where it keeps its data (`dir`, or `/`).
pub fn resources(dir: Option<&std::path::Path>) -> Resources {
    use fogwire_compute::resources::{cores, disk_free, memory};
    Resources {
        cores: cores(),
        memory_mib: memory().0 >> 20,
        disk_mib: disk_free(dir.unwrap_or(std::path::Path::new("/"))) >> 20,
    }
}

/// The channels a node opens on every link for clusters.
pub fn link_channels() -> Vec<ChannelConfig> {
    vec![
        ChannelConfig::new(CHANNEL)
            .with_receive_window(256 * 1024)
            .with_send_queue_bytes_max(256 * 1024),
    ]
}

/// A boxed future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// How the cluster asks the node for a link to a member: one attempt at
/// one address (the link, when it comes up, reaches the cluster as a
/// [`fogwire_link::LinkUser`] event like any other).
pub trait Dialer: Send + Sync + 'static {
    fn dial(&self, node: NodeId, addr: SocketAddr) -> BoxFuture<Result<(), String>>;
}

/// What the cluster needs from the node.
#[derive(Debug, Clone)]
pub struct Options {
    pub key: Arc<Keypair>,
    /// Where the boot counter is kept; none: the wall clock stands in
    /// (tests and the demo, whose boards never restart).
    pub dir: Option<PathBuf>,
    /// Announce and browse by mDNS.
    pub mdns: bool,
    /// The link listener's address (its port is announced).
    pub link_listen: SocketAddr,
    /// Link addresses to put in the membership record; none: the
    /// listener's, or every interface's when it listens on a wildcard.
    pub advertise: Vec<SocketAddr>,
    pub resources: Resources,
    pub swim: swim::Config,
}

/// Why the cluster refused a command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    #[error(
        "this board is already in cluster {current}; a board is in one cluster at a time \
         (remove `[cluster] join` and the data directory's cluster files to leave it)"
    )]
    AlreadyJoined { current: String },
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    #[error(transparent)]
    Files(#[from] files::FilesError),
    #[error("the cluster task has stopped (the node is shutting down)")]
    Stopped,
}

enum Control {
    LinkUp(NodeId),
    LinkDown(NodeId),
    Join {
        code: JoinCode,
        owner: bool,
        reply: oneshot::Sender<Result<(), ClusterError>>,
    },
}

struct Shared {
    options: Options,
    /// Links to boards of the clusters this one peers with (weak: the
    /// dialer reaches the link manager, which holds this cluster; the
    /// driver task holds it while it runs).
    dialer: std::sync::Weak<dyn Dialer>,
    control: mpsc::Sender<Control>,
    messages: mpsc::Sender<(NodeId, u64, Bytes)>,
    /// The cluster channel of each linked peer, by link id.
    links: Mutex<HashMap<NodeId, (u64, ChannelSender)>>,
    status: Mutex<fogwire_api::ClusterStatus>,
    live: watch::Sender<Vec<Member>>,
    cluster: watch::Sender<Option<ClusterId>>,
    /// The cluster key, on the board that made the cluster.
    owner_key: Mutex<Option<Arc<Keypair>>>,
    /// The join code this board is in the cluster by.
    code: Mutex<Option<JoinCode>>,
    store: Arc<fogwire_store::Store>,
    replication: fogwire_replicate::Replication,
    /// What runs the services placed here (set by the node once its
    /// subsystems exist; taken out at shutdown, since it holds the node's
    /// subsystems and they hold this cluster).
    runner: Mutex<Option<Arc<dyn supervise::Runner>>>,
    applied: watch::Sender<Option<Arc<manifest::Applied>>>,
    refused: watch::Sender<Option<String>>,
    supervision: watch::Sender<supervise::Supervision>,
    /// Whether the manifest follower and the supervisor run.
    following: std::sync::atomic::AtomicBool,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update is one assignment or map operation: a panic elsewhere
    // cannot leave the data half-changed.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A board's cluster. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("cluster", &*self.shared.cluster.borrow())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Starts the cluster task, in no cluster yet.
    pub fn start(
        options: Options,
        dialer: Arc<dyn Dialer>,
        stores: (Arc<fogwire_store::Store>, fogwire_replicate::Replication),
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Self {
        let (control, control_inbox) = mpsc::channel(CONTROL_QUEUE);
        let (messages, message_inbox) = mpsc::channel(MESSAGE_QUEUE);
        let me = options.key.node_id();
        let status = fogwire_api::ClusterStatus {
            cluster: None,
            owner: false,
            node_id: me.to_string(),
            boot: 0,
            incarnation: 0,
            health: 0,
            mdns: false,
            members: Vec::new(),
            counters: fogwire_api::ClusterCounters::default(),
            manifest: None,
            manifest_refused: None,
            placement: Vec::new(),
            unplaced: Vec::new(),
            services: Vec::new(),
        };
        let shared = Arc::new(Shared {
            options,
            dialer: Arc::downgrade(&dialer),
            control,
            messages,
            links: Mutex::new(HashMap::new()),
            status: Mutex::new(status),
            live: watch::Sender::new(Vec::new()),
            cluster: watch::Sender::new(None),
            owner_key: Mutex::new(None),
            code: Mutex::new(None),
            store: stores.0,
            replication: stores.1,
            runner: Mutex::new(None),
            applied: watch::Sender::new(None),
            refused: watch::Sender::new(None),
            supervision: watch::Sender::new(supervise::Supervision::default()),
            following: std::sync::atomic::AtomicBool::new(false),
            tasks: tasks.clone(),
            shutdown,
        });
        tasks.spawn(driver::run(
            shared.clone(),
            dialer,
            control_inbox,
            message_inbox,
        ));
        Self { shared }
    }

    /// At start: joins the cluster of the configured join code, else of
    /// the data directory's cluster files, if any.
    pub async fn resume(&self, configured: Option<JoinCode>) -> Result<(), ClusterError> {
        let stored = match &self.shared.options.dir {
            Some(dir) => files::load(dir)?,
            None => files::Stored::default(),
        };
        let owner = stored.key.map(Arc::new);
        // A configured code wins over a kept one; the key counts only for
        // its own cluster.
        let Some(code) = configured.or(stored.join) else {
            return Ok(());
        };
        let owner = owner.filter(|key| key.node_id() == code.cluster.key());
        let is_owner = owner.is_some();
        *lock(&self.shared.owner_key) = owner;
        self.enter(code, is_owner).await
    }

    /// Makes a new cluster with this board in it (`fogwire cluster init`):
    /// its key is kept in the data directory. Returns the join code.
    pub async fn init(&self) -> Result<JoinCode, ClusterError> {
        if let Some(current) = self.cluster() {
            return Err(ClusterError::AlreadyJoined {
                current: current.to_string(),
            });
        }
        let key = files::create_key(self.shared.options.dir.as_deref())?;
        let code = JoinCode::of(&key);
        *lock(&self.shared.owner_key) = Some(Arc::new(key));
        self.enter(code.clone(), true).await?;
        Ok(code)
    }

    /// Joins the cluster of `code` and keeps the code in the data
    /// directory, so the board rejoins after a restart (`fogwire cluster
    /// join`).
    pub async fn join(&self, code: JoinCode) -> Result<(), ClusterError> {
        if let Some(current) = self.cluster().filter(|current| *current != code.cluster) {
            return Err(ClusterError::AlreadyJoined {
                current: current.to_string(),
            });
        }
        if let Some(dir) = &self.shared.options.dir {
            files::save_join(dir, &code)?;
        }
        self.enter(code, false).await
    }

    /// The join code of this board's cluster (every member holds it).
    pub fn join_code(&self) -> Option<JoinCode> {
        lock(&self.shared.code).clone()
    }

    /// The cluster key, on the board that made the cluster.
    pub fn owner_key(&self) -> Option<Arc<Keypair>> {
        lock(&self.shared.owner_key).clone()
    }

    async fn enter(&self, code: JoinCode, owner: bool) -> Result<(), ClusterError> {
        let code_kept = code.clone();
        let (reply, answer) = oneshot::channel();
        self.shared
            .control
            .send(Control::Join { code, owner, reply })
            .await
            .map_err(|_| ClusterError::Stopped)?;
        answer.await.map_err(|_| ClusterError::Stopped)??;
        let cluster = code_kept.cluster;
        *lock(&self.shared.code) = Some(code_kept);
        self.follow(cluster);
        Ok(())
    }

    /// Sets what runs the services placed on this board.
    pub fn set_runner(&self, runner: Arc<dyn supervise::Runner>) {
        *lock(&self.shared.runner) = Some(runner);
    }

    /// Lets go of the runner (and through it the node's subsystems); the
    /// tasks end with the node's shutdown token.
    pub fn shutdown(&self) {
        lock(&self.shared.runner).take();
    }

    /// Starts following the cluster's manifest and running its placement
    /// (once).
    fn follow(&self, cluster: ClusterId) {
        use std::sync::atomic::Ordering;
        if self.shared.following.swap(true, Ordering::SeqCst) {
            return;
        }
        let shared = &self.shared;
        shared.tasks.spawn(manifest::follow(
            shared.store.clone(),
            shared.replication.clone(),
            manifest::feed_of(&cluster),
            shared.applied.clone(),
            shared.refused.clone(),
            shared.shutdown.child_token(),
        ));
        let Some(runner) = lock(&shared.runner).clone() else {
            tracing::warn!(
                "cluster: nothing runs services on this node; placement is only computed"
            );
            return;
        };
        let supervisor = supervise::Supervisor {
            me: shared.options.key.node_id(),
            runner,
            replication: shared.replication.clone(),
            applied: shared.applied.subscribe(),
            live: shared.live.subscribe(),
            report: shared.supervision.clone(),
            stop: shared.shutdown.child_token(),
        };
        shared.tasks.spawn(supervisor.run());
    }

    /// Publishes `text` as the cluster's next manifest version (on the
    /// board that made the cluster).
    pub async fn apply(
        &self,
        text: Vec<u8>,
    ) -> Result<Arc<manifest::Applied>, manifest::ApplyError> {
        if self.cluster().is_none() {
            return Err(manifest::ApplyError::NoCluster);
        }
        let key = self.owner_key().ok_or(manifest::ApplyError::NotOwner)?;
        let applied =
            manifest::publish(&self.shared.store, &self.shared.replication, key, text).await?;
        let applied = Arc::new(applied);
        // This board runs by it at once; the others as it reaches them.
        self.shared.applied.send_if_modified(|held| {
            if held.as_ref().is_some_and(|held| held.seq >= applied.seq) {
                return false;
            }
            *held = Some(applied.clone());
            true
        });
        Ok(applied)
    }

    /// The cluster this board is in.
    pub fn cluster(&self) -> Option<ClusterId> {
        *self.shared.cluster.borrow()
    }

    /// This board's view of the cluster.
    pub fn status(&self) -> fogwire_api::ClusterStatus {
        let mut status = lock(&self.shared.status).clone();
        status.manifest = self
            .shared
            .applied
            .borrow()
            .as_deref()
            .map(report::manifest);
        status.manifest_refused = self.shared.refused.borrow().clone();
        let supervision = self.shared.supervision.borrow();
        if let Some(placement) = &supervision.placement {
            (status.placement, status.unplaced) = report::placement(placement);
        }
        status.services = supervision.services.iter().map(report::service).collect();
        status
    }

    /// The members that hold services (alive or suspected, this board
    /// included), sorted by node id; changes as they come and go.
    pub fn live(&self) -> watch::Receiver<Vec<Member>> {
        self.shared.live.subscribe()
    }

    /// Takes a link's cluster channel: its messages go to the membership
    /// task.
    pub fn link_up(&self, link: LinkHandle) {
        if !link.peer_channels().contains(&CHANNEL) {
            return;
        }
        let (Some(sender), Some(mut receiver)) =
            (link.sender(CHANNEL), link.take_receiver(CHANNEL))
        else {
            return;
        };
        let peer = link.peer();
        let link_id = link.id();
        lock(&self.shared.links).insert(peer, (link_id, sender));
        if self.shared.control.try_send(Control::LinkUp(peer)).is_err() {
            tracing::warn!(peer = %peer.short(), "cluster: link event queue full; the link's Hello waits for the next rejoin round");
        }
        let messages = self.shared.messages.clone();
        let stop = self.shared.shutdown.clone();
        self.shared.tasks.spawn(async move {
            loop {
                let message = tokio::select! {
                    () = stop.cancelled() => return,
                    message = receiver.recv() => message,
                };
                let Some(message) = message else { return };
                if messages.send((peer, link_id, message)).await.is_err() {
                    return;
                }
            }
        });
    }

    pub fn link_down(&self, peer: NodeId, link_id: u64) {
        {
            let mut links = lock(&self.shared.links);
            if links.get(&peer).is_some_and(|(id, _)| *id == link_id) {
                links.remove(&peer);
            } else {
                return;
            }
        }
        let _ = self.shared.control.try_send(Control::LinkDown(peer));
    }
}

impl fogwire_link::LinkUser for Cluster {
    fn link_up(&self, link: LinkHandle) {
        Cluster::link_up(self, link);
    }

    fn link_down(&self, peer: NodeId, link_id: u64) {
        Cluster::link_down(self, peer, link_id);
    }
}
