//! The link manager: the links a node accepts and dials, the peers it
//! keeps linked (redialing with backoff), which link wins when two exist,
//! and who is told when links come and go.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, UNIX_EPOCH};

use crate::admission::{Admission, Admitted};
use crate::book::PeerBook;
use crate::proto::{CloseCode, CloseReason, CloseSide, Config as LinkConfig, LinkIdentity};
use crate::refusals::{self, RefusalLog};
use crate::slots::{Decision, NoSlot, Payers, SlotPolicy};
use crate::{
    Direction, EstablishError, LinkHandle, LinkSnapshot, LinkStream, LinkUser, NoAnswer, PeerAddr,
};
use backon::{BackoffBuilder, ExponentialBuilder};
use fogwire_identity::NodeId;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::{CLOSED_TOTALS_MAX, LinkReport, LinkTally, Metrics};

/// Events the link manager reports to whoever listens (the demo).
#[derive(Debug, Clone)]
pub enum NodeEvent {
    LinkUp { peer: NodeId, link: LinkHandle },
    LinkDown { peer: NodeId, reason: CloseReason },
}

/// Bound of the event queue of each subscriber; one that falls further
/// behind misses events (and is told so by `broadcast`).
const EVENT_QUEUE_LEN: usize = 1024;
/// A link that lived this long resets the reconnect backoff when it drops.
const STABLE_LINK: Duration = Duration::from_secs(10);
/// How long shutdown waits for links to say goodbye.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed accept (for instance out of file descriptors), so
/// the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Why a link could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    #[error(transparent)]
    Establish(#[from] EstablishError),
    #[error("link to {peer} refused: {reason}")]
    Refused { peer: NodeId, reason: String },
    #[error("that is this node's own id")]
    SelfConnect,
    #[error("the node is shutting down")]
    ShuttingDown,
}

/// How many links, and how fast to redial.
#[derive(Debug, Clone, Copy)]
pub struct LinkLimits {
    /// Most inbound handshakes in progress at once, and from one address.
    pub max_pending_handshakes: usize,
    pub handshakes_per_address: usize,
    /// Who gets a link slot: most links, per address, eviction.
    pub slots: SlotPolicy,
    /// Reconnect delays for kept peers: doubling from the first to the last.
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
}

#[derive(Debug, Clone)]
enum DialStatus {
    Connecting,
    Waiting {
        retry_at: Instant,
        last_error: String,
    },
    Linked,
}

#[derive(Debug)]
struct Wanted {
    addr: PeerAddr,
    status: DialStatus,
    stop: CancellationToken,
}

/// The links' mutable state, behind one lock held only briefly.
#[derive(Debug, Default)]
struct State {
    links: HashMap<NodeId, LinkHandle>,
    wanted: HashMap<NodeId, Wanted>,
    closed_totals: HashMap<NodeId, LinkSnapshot>,
    admission: Option<Admission>,
}

impl State {
    fn pending_handshakes(&self) -> usize {
        self.admission.as_ref().map_or(0, Admission::in_progress)
    }
}

/// What the metrics read at a scrape.
#[derive(Debug)]
struct Report(Arc<Mutex<State>>);

impl LinkReport for Report {
    fn tally(&self) -> Option<LinkTally> {
        let state = self.0.lock().ok()?;
        let mut tally = LinkTally {
            totals: state.closed_totals.clone(),
            links: state.links.len(),
            pending_handshakes: state.pending_handshakes(),
            ..LinkTally::default()
        };
        for (peer, link) in &state.links {
            let snapshot = link.snapshot();
            tally.totals.entry(*peer).or_default().add_counts(&snapshot);
            tally.rtts.extend(snapshot.rtt.map(|rtt| (*peer, rtt)));
        }
        Some(tally)
    }
}

struct Manager {
    identity: Arc<LinkIdentity>,
    config: Arc<LinkConfig>,
    local_addr: SocketAddr,
    limits: LinkLimits,
    state: Arc<Mutex<State>>,
    admission: Admission,
    /// The UDP transport, if the node has one: links dialed and accepted
    /// over QUIC.
    quic: Option<quinn::Endpoint>,
    refusals: RefusalLog,
    /// Peers linked with `connect` (kept across restarts) and cut off.
    book: PeerBook,
    payers: Payers,
    events: broadcast::Sender<NodeEvent>,
    metrics: Metrics,
    /// Told of every link that comes up and goes down.
    users: Vec<Arc<dyn LinkUser>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// A node's links. Cheap to clone; every clone is the same manager.
#[derive(Clone)]
pub struct Links {
    shared: Arc<Manager>,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links")
            .field("local_addr", &self.shared.local_addr)
            .finish_non_exhaustive()
    }
}

impl Links {
    /// Starts accepting links on `listener` (and on `quic`, the UDP
    /// transport, if given); every link that comes up is handed to each
    /// of `users`.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        listener: TcpListener,
        quic: Option<quinn::Endpoint>,
        (identity, book, payers): (Arc<LinkIdentity>, PeerBook, Payers),
        config: LinkConfig,
        limits: LinkLimits,
        users: Vec<Arc<dyn LinkUser>>,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> std::io::Result<Links> {
        let local_addr = listener.local_addr()?;
        let admission =
            Admission::new(limits.max_pending_handshakes, limits.handshakes_per_address);
        let state = Arc::new(Mutex::new(State {
            admission: Some(admission.clone()),
            ..State::default()
        }));
        let links = Links {
            shared: Arc::new(Manager {
                identity,
                config: Arc::new(config),
                local_addr,
                limits,
                metrics: Metrics::new(Box::new(Report(state.clone()))),
                state,
                admission,
                quic: quic.clone(),
                refusals: RefusalLog::default(),
                book,
                payers,
                events: broadcast::channel(EVENT_QUEUE_LEN).0,
                users,
                shutdown,
                tasks,
            }),
        };
        links
            .shared
            .tasks
            .spawn(links.clone().accept_loop(listener));
        if let Some(endpoint) = quic {
            links
                .shared
                .tasks
                .spawn(links.clone().accept_loop_quic(endpoint));
        }
        Ok(links)
    }

    /// Where the UDP transport listens, if the node has one.
    pub fn quic_addr(&self) -> Option<SocketAddr> {
        self.shared.quic.as_ref()?.local_addr().ok()
    }

    fn node_id(&self) -> NodeId {
        self.shared.identity.node_id()
    }

    /// Where peers can dial this node.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Link events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.shared.events.subscribe()
    }

    /// The link to `peer`, if one is up.
    pub fn link(&self, peer: &NodeId) -> Option<LinkHandle> {
        self.lock().links.get(peer).cloned()
    }

    /// Every link up now.
    pub fn all(&self) -> Vec<LinkHandle> {
        self.lock().links.values().cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug; the state itself
        // stays consistent (every update is a single map operation), so
        // carry on with it rather than take the whole node down.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Links to `addr` now and keeps the link up (redialing with backoff)
    /// until [`Links::disconnect`]. Fails, and keeps nothing, if the first
    /// attempt fails.
    pub async fn connect(&self, addr: PeerAddr) -> Result<LinkHandle, LinkError> {
        if addr.node_id == self.node_id() {
            return Err(LinkError::SelfConnect);
        }
        // The operator wants this peer again: its own dialing, which may
        // race ours and win the duplicate rule, is welcome from now on.
        self.shared.book.unblock(&addr.node_id);
        let link = self.keep(addr.clone()).await?;
        self.shared.book.keep(&addr);
        Ok(link)
    }

    /// Whether the operator cut `peer` off lately (`disconnect`): its
    /// links are refused for a while.
    pub fn is_blocked(&self, peer: &NodeId) -> bool {
        self.shared.book.blocked(peer, Instant::now()).is_some()
    }

    /// Lifts the operator's block of `peer` (a `disconnect`), without
    /// keeping it: the operator asked for a link to it again another way
    /// (a direct link punched through NATs).
    pub fn allow(&self, peer: &NodeId) {
        self.shared.book.unblock(peer);
    }

    /// What [`Links::connect`] does for a subsystem (the relays a private
    /// node keeps): links now and keeps the link up until
    /// [`Links::release`], without writing the peer book — the subsystem
    /// chooses again after a restart — and without lifting the
    /// operator's block of a disconnected peer.
    pub async fn keep(&self, addr: PeerAddr) -> Result<LinkHandle, LinkError> {
        if addr.node_id == self.node_id() {
            return Err(LinkError::SelfConnect);
        }
        if let Some(why) = self.shared.book.blocked(&addr.node_id, Instant::now()) {
            let (peer, reason) = (addr.node_id, why.to_owned());
            return Err(LinkError::Refused { peer, reason });
        }
        let link = match self.link(&addr.node_id) {
            Some(link) => link,
            None => {
                let events = self.subscribe();
                let link = self.dial(&addr).await?;
                let within = self.shared.config.handshake_timeout;
                match link.answered(within).await {
                    Ok(()) => link,
                    Err(no_answer) => self.theirs_instead(&link, no_answer, events).await?,
                }
            }
        };
        self.want(addr);
        Ok(link)
    }

    /// Stops keeping `peer` linked for a subsystem, and closes its link,
    /// unless the operator keeps it ([`Links::connect`]).
    pub async fn release(&self, peer: &NodeId, why: &str) {
        if self.shared.book.is_kept(peer) {
            return;
        }
        let (wanted, link) = {
            let mut state = self.lock();
            (state.wanted.remove(peer), state.links.get(peer).cloned())
        };
        if let Some(wanted) = wanted {
            wanted.stop.cancel();
            if let Some(link) = link {
                link.close(CloseCode::NORMAL, why).await;
            }
        }
    }

    /// The link that serves `link`'s peer once both ends have applied the
    /// duplicate rule: `link` if the peer kept it (it answered the first
    /// ping), else the one the peer dialed and kept instead. For links
    /// both ends dial at once (hole punching).
    pub async fn settled(&self, link: LinkHandle) -> Result<LinkHandle, LinkError> {
        let events = self.subscribe();
        let within = self.shared.config.handshake_timeout;
        match link.answered(within).await {
            Ok(()) => Ok(link),
            Err(no_answer) => self.theirs_instead(&link, no_answer, events).await,
        }
    }

    /// The link the peer dialed, when `ours` got `no_answer` because both
    /// ends dialed at once and the peer's link was kept (it may still be
    /// finishing its handshake here: a DUPLICATE close waits for it, up to
    /// the handshake timeout); otherwise the refusal.
    async fn theirs_instead(
        &self,
        ours: &LinkHandle,
        no_answer: NoAnswer,
        mut events: broadcast::Receiver<NodeEvent>,
    ) -> Result<LinkHandle, LinkError> {
        let peer = ours.peer();
        let duplicate =
            matches!(&no_answer, NoAnswer::Closed(reason) if reason.code == CloseCode::DUPLICATE);
        let theirs = async {
            loop {
                if let Some(kept) = self.link(&peer).filter(|kept| kept.id() != ours.id()) {
                    return Some(kept);
                }
                let closed = broadcast::error::RecvError::Closed;
                if !duplicate || events.recv().await.err() == Some(closed) {
                    return None;
                }
            }
        };
        let within = self.shared.config.handshake_timeout;
        let theirs = tokio::time::timeout(within, theirs).await.ok().flatten();
        theirs.ok_or_else(|| LinkError::Refused {
            peer,
            reason: no_answer.to_string(),
        })
    }

    /// Stops keeping `peer` linked and closes its link. Returns whether
    /// there was a link or a wanted peer.
    pub async fn disconnect(&self, peer: &NodeId) -> bool {
        self.shared.book.forget(peer, Instant::now());
        let (wanted, link) = {
            let mut state = self.lock();
            (state.wanted.remove(peer), state.links.get(peer).cloned())
        };
        if let Some(wanted) = &wanted {
            wanted.stop.cancel();
        }
        if let Some(link) = &link {
            link.close(CloseCode::OPERATOR, "disconnected by the operator")
                .await;
        }
        wanted.is_some() || link.is_some()
    }

    /// Adds `addr` to the peers kept linked, with a task that redials it.
    pub fn want(&self, addr: PeerAddr) {
        if addr.node_id == self.node_id() {
            tracing::warn!(peer = %addr, "ignoring a configured peer with this node's own id");
            return;
        }
        let stop = self.shared.shutdown.child_token();
        {
            let mut state = self.lock();
            if let Some(existing) = state.wanted.get_mut(&addr.node_id) {
                existing.addr = addr;
                return;
            }
            let status = if state.links.contains_key(&addr.node_id) {
                DialStatus::Linked
            } else {
                DialStatus::Connecting
            };
            state.wanted.insert(
                addr.node_id,
                Wanted {
                    addr: addr.clone(),
                    status,
                    stop: stop.clone(),
                },
            );
        }
        self.shared
            .tasks
            .spawn(self.clone().keep_linked(addr.node_id, stop));
    }

    fn set_status(&self, peer: &NodeId, status: DialStatus) {
        if let Some(wanted) = self.lock().wanted.get_mut(peer) {
            wanted.status = status;
        }
    }

    /// Delays between attempts to reach a peer: exponential, capped, with
    /// jitter so that the boards of a box that lost their switch do not all
    /// redial in the same instant.
    fn backoff(&self) -> impl Iterator<Item = Duration> + use<> {
        let limits = self.shared.limits;
        ExponentialBuilder::default()
            .with_min_delay(limits.reconnect_initial)
            .with_max_delay(limits.reconnect_max.max(limits.reconnect_initial))
            .with_jitter()
            .without_max_times()
            .build()
            .map(move |delay| delay.min(limits.reconnect_max.max(limits.reconnect_initial)))
    }

    /// Keeps a link to `peer` up until `stop`: waits while linked, redials
    /// with backoff when not.
    async fn keep_linked(self, peer: NodeId, stop: CancellationToken) {
        let mut backoff = self.backoff();
        let pause = |delay: Duration| {
            let stop = stop.clone();
            async move {
                tokio::select! {
                    () = tokio::time::sleep(delay) => true,
                    () = stop.cancelled() => false,
                }
            }
        };
        let limits = self.shared.limits;
        while !stop.is_cancelled() {
            if let Some(link) = self.link(&peer) {
                self.set_status(&peer, DialStatus::Linked);
                tokio::select! {
                    _ = link.closed() => {}
                    () = stop.cancelled() => return,
                }
                let lived = link.established_at().elapsed().unwrap_or_default();
                if lived >= STABLE_LINK {
                    // It worked for a while: redial at once, from the start.
                    backoff = self.backoff();
                } else if !pause(backoff.next().unwrap_or(limits.reconnect_max)).await {
                    // A link that dies young (refused, replaced, flapping)
                    // must not make us hammer the peer.
                    return;
                }
                continue;
            }
            let Some(addr) = self.lock().wanted.get(&peer).map(|w| w.addr.clone()) else {
                return;
            };
            self.set_status(&peer, DialStatus::Connecting);
            let attempt = tokio::select! {
                result = self.dial(&addr) => result,
                () = stop.cancelled() => return,
            };
            match attempt {
                Ok(_) => {}
                Err(LinkError::ShuttingDown) => return,
                Err(error) => {
                    let delay = backoff.next().unwrap_or(limits.reconnect_max);
                    tracing::warn!(
                        peer = %peer.short(),
                        address = %addr.address,
                        "cannot link to peer: {error}; retrying in {:.1} s",
                        delay.as_secs_f64()
                    );
                    self.set_status(
                        &peer,
                        DialStatus::Waiting {
                            retry_at: Instant::now() + delay,
                            last_error: error.to_string(),
                        },
                    );
                    if !pause(delay).await {
                        return;
                    }
                }
            }
        }
    }

    /// Dials `addr` once: resolves it, connects, handshakes, registers.
    pub async fn dial(&self, addr: &PeerAddr) -> Result<LinkHandle, LinkError> {
        if self.shared.shutdown.is_cancelled() {
            return Err(LinkError::ShuttingDown);
        }
        let (identity, config) = (&self.shared.identity, self.shared.config.clone());
        match crate::dial(addr, identity, config, self.shared.quic.as_ref()).await {
            Ok(established) => {
                self.shared
                    .metrics
                    .handshake("outbound", established.outcome());
                self.register(crate::spawn(established))
            }
            Err(error) => {
                self.shared.metrics.handshake("outbound", error.reason());
                Err(error.into())
            }
        }
    }

    async fn accept_loop(self, listener: TcpListener) {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tokio::time::sleep(refusals::WINDOW) => {
                    self.shared.refusals.flush();
                    continue;
                }
                () = self.shared.shutdown.cancelled() => return,
            };
            let (stream, remote) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!("cannot accept a connection: {error}; pausing briefly");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            self.shared
                .users
                .iter()
                .for_each(|user| user.accepted(remote));
            let permit = match self.shared.admission.try_admit(remote.ip()) {
                Ok(permit) => permit,
                Err(refused) => {
                    self.shared.metrics.handshake("inbound", refused.reason());
                    let why = format_args!("refused connection: {refused}");
                    self.shared.refusals.refused(remote, refused.reason(), why);
                    drop(stream);
                    continue;
                }
            };
            let stream = LinkStream::Tcp(stream);
            let links = self.clone();
            self.shared
                .tasks
                .spawn(async move { links.inbound(permit, Ok(stream), remote).await });
        }
    }

    /// Accepts links over QUIC: the same admission as over TCP, decided
    /// before any cryptography; a connection from an address that has not
    /// proven it receives there is asked to (a stateless retry) while
    /// handshakes are plentiful, so spoofed floods cost the node nothing.
    async fn accept_loop_quic(self, endpoint: quinn::Endpoint) {
        loop {
            let incoming = tokio::select! {
                incoming = endpoint.accept() => incoming,
                () = self.shared.shutdown.cancelled() => return,
            };
            let Some(incoming) = incoming else { return };
            let remote = incoming.remote_address();
            let busy = self.shared.admission.in_progress() * 4
                >= self.shared.limits.max_pending_handshakes;
            if busy && !incoming.remote_address_validated() && incoming.may_retry() {
                let _ = incoming.retry();
                continue;
            }
            let permit = match self.shared.admission.try_admit(remote.ip()) {
                Ok(permit) => permit,
                Err(refused) => {
                    self.shared.metrics.handshake("inbound", refused.reason());
                    let why = format_args!("refused QUIC connection: {refused}");
                    self.shared.refusals.refused(remote, refused.reason(), why);
                    incoming.refuse();
                    continue;
                }
            };
            let links = self.clone();
            self.shared.tasks.spawn(async move {
                let within = links.shared.config.handshake_timeout;
                let stream = tokio::time::timeout(within, crate::quic::accept(incoming))
                    .await
                    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
                links.inbound(permit, stream, remote).await;
            });
        }
    }

    /// Runs the listener side of an admitted connection's handshake and
    /// registers the link, or logs why not.
    async fn inbound(
        self,
        permit: Admitted,
        stream: std::io::Result<LinkStream>,
        remote: SocketAddr,
    ) {
        let config = self.shared.config.clone();
        let identity = &self.shared.identity;
        let result = match stream {
            // Shrinking timeout; given up if a newcomer takes the slot.
            Ok(stream) => tokio::select! {
                result = permit.establish(stream, remote, identity, config) => result,
                () = self.shared.shutdown.cancelled() => return,
            },
            Err(error) => Err(EstablishError::Io(error)),
        };
        match result {
            Ok(mut established) => {
                let metrics = &self.shared.metrics;
                metrics.handshake("inbound", established.outcome());
                if let Some(why) = self.no_room(&established) {
                    // Its first frame is the CLOSE: it never sees a PONG
                    // that `connect` would take for a welcome.
                    established
                        .link
                        .close(CloseCode::LIMIT, "no room for a link");
                    drop(crate::spawn(established));
                    let log = &self.shared.refusals;
                    log.refused(remote, why.reason(), format_args!("{why}"));
                    return;
                }
                let _ = self.register(crate::spawn(established));
            }
            Err(error) => {
                self.shared.metrics.handshake("inbound", error.reason());
                let why = format_args!("inbound connection closed: {error}");
                self.shared.refusals.refused(remote, error.reason(), why);
            }
        }
    }

    /// Why an inbound link just established gets no slot, if it gets none
    /// (no link to its peer exists, and the slot rules refuse it). Decided
    /// again, with evictions, in [`Links::register`].
    fn no_room(&self, established: &crate::Established) -> Option<NoSlot> {
        let state = self.lock();
        let peer = established.link.peer();
        if state.links.get(&peer).is_some_and(|link| !link.is_closed()) {
            return None;
        }
        let kept = |peer: &NodeId| state.wanted.contains_key(peer);
        let slots = &self.shared.limits.slots;
        let payers = &self.shared.payers;
        match slots.place_established(established, state.links.values(), kept, payers) {
            Decision::Refuse(why) => Some(why),
            Decision::Admit | Decision::Evict(_) => None,
        }
    }

    /// Adds a freshly established link, or closes it if a better link to
    /// the same peer exists or the node is full. Returns the link that
    /// serves the peer.
    fn register(&self, link: LinkHandle) -> Result<LinkHandle, LinkError> {
        let peer = link.peer();
        let local = self.node_id();
        let initiator = |link: &LinkHandle| match link.direction() {
            Direction::Outbound => local,
            Direction::Inbound => link.peer(),
        };
        let (mut replaced, mut evicted) = (None, None);
        {
            let mut state = self.lock();
            if self.shared.shutdown.is_cancelled() {
                drop(state);
                self.close_in_background(&link, CloseCode::SHUTDOWN, "node shutting down");
                return Err(LinkError::ShuttingDown);
            }
            // Only the peer's own dialing: this node's dials are the operator's.
            let blocked = self.shared.book.blocked(&peer, Instant::now());
            if let Some(why) = blocked.filter(|_| link.direction() == Direction::Inbound) {
                drop(state);
                self.close_in_background(&link, CloseCode::OPERATOR, why);
                let reason = why.to_owned();
                return Err(LinkError::Refused { peer, reason });
            }
            match state.links.get(&peer) {
                Some(existing) if !existing.is_closed() => {
                    // Both ends apply the same rule, so they keep the same
                    // link: a redial in the same direction replaces the old
                    // link (its owner evidently lost it); between opposite
                    // directions, the link dialed by the smaller id wins.
                    let keep_new = link.direction() == existing.direction()
                        || initiator(&link) == local.min(peer);
                    if !keep_new {
                        let existing = existing.clone();
                        drop(state);
                        self.close_in_background(
                            &link,
                            CloseCode::DUPLICATE,
                            "a link to this node already exists",
                        );
                        return Ok(existing);
                    }
                    replaced = Some(existing.clone());
                }
                Some(_) => {}
                None => {
                    let slots = &self.shared.limits.slots;
                    let kept = |peer: &NodeId| state.wanted.contains_key(peer);
                    let payers = &self.shared.payers;
                    match slots.place(&link, state.links.values(), kept, payers) {
                        Decision::Admit => {}
                        Decision::Evict(victim) => evicted = state.links.remove(&victim),
                        Decision::Refuse(why) => {
                            drop(state);
                            self.close_in_background(&link, CloseCode::LIMIT, "no room for a link");
                            let (log, reason) = (&self.shared.refusals, why.to_string());
                            log.refused(link.remote_addr(), why.reason(), format_args!("{why}"));
                            return Err(LinkError::Refused { peer, reason });
                        }
                    }
                }
            }
            state.links.insert(peer, link.clone());
            if let Some(wanted) = state.wanted.get_mut(&peer) {
                wanted.status = DialStatus::Linked;
            }
        }
        if let Some(idle) = evicted {
            self.close_in_background(&idle, CloseCode::LIMIT, "evicted: the least used link");
        }
        if let Some(old) = replaced {
            self.close_in_background(&old, CloseCode::DUPLICATE, "replaced by a newer link");
        }
        tracing::info!(
            peer = %peer,
            addr = %link.remote_addr(),
            direction = link.direction().as_str(),
            transport = link.transport().as_str(),
            "link up"
        );
        for user in &self.shared.users {
            user.link_up(link.clone());
        }
        let _ = self.shared.events.send(NodeEvent::LinkUp {
            peer,
            link: link.clone(),
        });
        self.shared.tasks.spawn(self.clone().watch(link.clone()));
        Ok(link)
    }

    fn close_in_background(&self, link: &LinkHandle, code: CloseCode, message: &'static str) {
        let link = link.clone();
        self.shared.tasks.spawn(async move {
            link.close(code, message).await;
        });
    }

    /// Waits for `link` to close, then forgets it and reports why.
    async fn watch(self, link: LinkHandle) {
        let reason = link.closed().await;
        let peer = link.peer();
        for user in &self.shared.users {
            user.link_down(peer, link.id());
        }
        {
            let mut state = self.lock();
            if state
                .links
                .get(&peer)
                .is_some_and(|current| current.id() == link.id())
            {
                state.links.remove(&peer);
            }
            if state.closed_totals.len() >= CLOSED_TOTALS_MAX
                && !state.closed_totals.contains_key(&peer)
                && let Some(forget) = state.closed_totals.keys().next().copied()
            {
                state.closed_totals.remove(&forget);
            }
            state
                .closed_totals
                .entry(peer)
                .or_default()
                .add_counts(&link.snapshot());
        }
        let side = match reason.side {
            CloseSide::Local => "local",
            CloseSide::Remote => "remote",
            CloseSide::Transport => "transport",
        };
        self.shared.metrics.link_closed(side, reason.code.name());
        let _ = self
            .shared
            .events
            .send(NodeEvent::LinkDown { peer, reason });
    }

    /// Closes every link with a reason, at once (a peer that stopped
    /// reading must not hold up the goodbyes to the others), waiting a few
    /// seconds at most.
    pub async fn close_all(&self) {
        let links = self.all();
        tracing::info!(links = links.len(), "shutting down: closing links");
        let mut closing = tokio::task::JoinSet::new();
        for link in links {
            closing
                .spawn(async move { link.close(CloseCode::SHUTDOWN, "node shutting down").await });
        }
        let all_closed = async { while closing.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, all_closed)
            .await
            .is_err()
        {
            tracing::warn!("some links did not close in time; dropping them");
        }
    }

    // ----- reports -----

    /// Links up, peers wanted, and handshakes in progress.
    pub fn counts(&self) -> (usize, usize, usize) {
        let state = self.lock();
        (
            state.links.len(),
            state.wanted.len(),
            state.pending_handshakes(),
        )
    }

    /// Every linked or wanted peer, sorted by id.
    pub fn peers(&self) -> Vec<fogwire_api::Peer> {
        let state = self.lock();
        let now = Instant::now();
        let mut ids: Vec<NodeId> = state
            .links
            .keys()
            .chain(state.wanted.keys())
            .copied()
            .collect();
        ids.sort();
        ids.dedup();
        ids.into_iter()
            .map(|id| {
                let link = state.links.get(&id);
                let wanted = state.wanted.get(&id);
                let snapshot = link.map(LinkHandle::snapshot).unwrap_or_default();
                let (state, last_error, retry_in_ms) = match (link, wanted.map(|w| &w.status)) {
                    (Some(_), _) => (fogwire_api::PeerState::Linked, None, None),
                    (
                        None,
                        Some(DialStatus::Waiting {
                            retry_at,
                            last_error,
                        }),
                    ) => (
                        fogwire_api::PeerState::Waiting,
                        Some(last_error.clone()),
                        Some(retry_at.saturating_duration_since(now).as_millis() as u64),
                    ),
                    (None, _) => (fogwire_api::PeerState::Connecting, None, None),
                };
                fogwire_api::Peer {
                    node_id: id.to_string(),
                    state,
                    address: link
                        .map(|l| l.remote_addr().to_string())
                        .or_else(|| wanted.map(|w| w.addr.address.clone())),
                    direction: link.map(|l| l.direction().as_str().to_owned()),
                    transport: link.map(|l| l.transport().as_str().to_owned()),
                    wanted: wanted.is_some(),
                    pays: self.shared.payers.pays(&id, now),
                    linked_since_unix: link.and_then(|l| {
                        l.established_at()
                            .duration_since(UNIX_EPOCH)
                            .ok()
                            .map(|d| d.as_secs())
                    }),
                    rtt_ms: snapshot.rtt.map(|rtt| rtt.as_secs_f64() * 1000.0),
                    bytes_in: snapshot.bytes_in,
                    bytes_out: snapshot.bytes_out,
                    frames_in: snapshot.records_in,
                    frames_out: snapshot.records_out,
                    messages_in: snapshot.messages_in,
                    messages_out: snapshot.messages_out,
                    last_error,
                    retry_in_ms,
                }
            })
            .collect()
    }

    /// The links' metrics in the OpenMetrics text format.
    pub fn metrics_text(&self) -> String {
        self.shared.metrics.encode()
    }
}
