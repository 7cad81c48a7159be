//! Routes: label-switched paths set up in one round trip, forwarded by
//! every hop, with end-to-end sessions and streams at their ends.
//!
//! One [`Router`] per node holds the rule table and the node's route ends.
//! Sans-IO: messages from neighbours and the time come in through
//! `handle_*`, messages to neighbours come out of [`Router::poll_transmit`],
//! and what the application should know comes out of
//! [`Router::poll_event`]. The byte layouts are in `message`, `onion`,
//! `session`, `stream` and `receipt`, and in `docs/protocol/routing.md`.
//!
//! When a route breaks, the router reports [`Event::RouteBroken`] with
//! what it knows of where; the application (which holds the topology)
//! answers with [`Router::repair_route`] on a new path, and the session —
//! with every stream on it — resumes there, or with
//! [`Router::abandon_route`].

mod control;
pub mod message;
pub mod onion;
pub mod receipt;
pub mod session;
pub mod stream;
mod streams;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fogwire_identity::NodeId;
use fogwire_link_proto::LinkIdentity;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

use message::{
    CONFIRM_BLOB_MAX, Control, DATA_HEADER_LEN, DATA_KIND_SESSION, DataHeader, FailReason,
    FailReport, SEALED_REASON_LEN, TeardownReason,
};
use onion::LayerRole;
use receipt::Receipt;
use session::{Hello, Initiator, SessionCipher, TOKEN_LEN};
use stream::{Frame, ReceiveHalf, SendHalf, StreamError};

/// Link channel of route control messages.
pub const CHANNEL_CONTROL: u16 = 0x0100;
/// Link channel of route data packets.
pub const CHANNEL_DATA: u16 = 0x0101;
/// Largest datagram a session carries: a link message minus the data
/// header, the session's overhead and the datagram's port.
pub const DATAGRAM_LEN_MAX: usize =
    65_516 - DATA_HEADER_LEN - session::PACKET_OVERHEAD - DATAGRAM_PORT_LEN;
/// A datagram starts with the port of the service it is for.
const DATAGRAM_PORT_LEN: usize = 2;

/// Fixed nonces of the two things a reply key seals at most once each.
const FAIL_NONCE: [u8; 12] = [0xfa; 12];
const NOTE_NONCE: [u8; 12] = [0xfb; 12];

/// The time, twice: a monotonic instant for timers, and the wall clock in
/// Unix milliseconds for what crosses the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub instant: Instant,
    pub unix_ms: u64,
}

/// Settings of a router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// A setup not confirmed this long after it was sent fails.
    pub setup_timeout: Duration,
    /// Resend an unanswered SETUP after this long (doubling each time).
    pub setup_retransmit: Duration,
    /// The source sends a keepalive along each route this often.
    pub keepalive_interval: Duration,
    /// A source whose keepalives are not echoed for this long declares the
    /// route broken.
    pub broken_after: Duration,
    /// A rule that sees no keepalive for this long is removed.
    pub rule_timeout: Duration,
    /// Most rules (routes through, from or to this node).
    pub rules_max: usize,
    /// How far a setup layer's issue time may be from this node's clock.
    pub clock_skew_max: Duration,
    /// A destination keeps a session whose route broke this long, for its
    /// source to resume it on another path.
    pub resume_grace: Duration,
    /// A source gives up on a broken route not repaired this long after it
    /// broke.
    pub repair_timeout: Duration,
    /// The source signs a receipt for each relay this often (when there is
    /// traffic to account for).
    pub receipt_interval: Duration,
    pub stream: stream::Config,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            setup_timeout: Duration::from_secs(5),
            setup_retransmit: Duration::from_millis(300),
            keepalive_interval: Duration::from_millis(500),
            broken_after: Duration::from_millis(1500),
            rule_timeout: Duration::from_secs(5),
            rules_max: 65_536,
            clock_skew_max: Duration::from_secs(600),
            resume_grace: Duration::from_secs(15),
            repair_timeout: Duration::from_secs(12),
            receipt_interval: Duration::from_secs(5),
            stream: stream::Config::default(),
        }
    }
}

/// A hop of a path: its node and the link key it advertises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    pub node: NodeId,
    pub link_key: [u8; 32],
}

/// Names a route at its source.
pub type RouteId = u64;
/// Names a session at one end.
pub type SessionId = u64;
/// Names a stream within its session.
pub type StreamId = u32;

/// Why a route setup failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    #[error("hop {index} ({node}) {}", reason.describe())]
    Hop {
        index: usize,
        node: NodeId,
        reason: FailReason,
    },
    #[error("no answer within {} ms", timeout.as_millis())]
    Timeout { timeout: Duration },
    #[error("the route broke while being set up ({0:?})")]
    TornDown(TeardownReason),
    #[error("the destination's answer did not authenticate")]
    BadAnswer,
}

/// Why a route could not be started or repaired.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error("a route needs at least one hop and at most 8")]
    BadLength,
    #[error("no link to the first hop {0}")]
    NoLink(NodeId),
    #[error("the rule table is full")]
    RulesFull,
    #[error("cannot build the setup: {0}")]
    Build(String),
    #[error("no such route")]
    UnknownRoute,
    #[error("the route is not broken")]
    NotBroken,
    #[error("a repaired route must end at the same destination")]
    OtherDestination,
}

/// Why a datagram, ping or stream operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    #[error("no such session")]
    UnknownSession,
    #[error("the session's route is not up")]
    NotUp,
    #[error("datagram of {len} bytes exceeds {DATATGRAM_MAX}", DATATGRAM_MAX = DATAGRAM_LEN_MAX)]
    TooLong { len: usize },
    #[error("session nonces exhausted")]
    Exhausted,
    #[error("no such stream")]
    UnknownStream,
    #[error("the stream was already finished")]
    Finished,
    #[error("the session has as many streams open as allowed")]
    TooManyStreams,
}

/// What the source knows of where a route broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broken {
    /// The link from `from` to `to` died (`from` may be the source).
    LinkDown { from: NodeId, to: NodeId },
    /// Echoes stopped, or a hop tore the route down without saying where.
    Silent,
    /// A setup onto a new path failed.
    Setup(SetupError),
}

/// Why a route this node opened ended for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteEnd {
    /// This node closed it.
    Closed,
    /// The destination closed it.
    ClosedByPeer,
    /// It broke and could not be repaired.
    Abandoned(String),
}

impl std::fmt::Display for RouteEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteEnd::Closed => f.write_str("closed"),
            RouteEnd::ClosedByPeer => f.write_str("closed by the destination"),
            RouteEnd::Abandoned(detail) => write!(f, "broken and not repaired: {detail}"),
        }
    }
}

/// What the router tells the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A route this node opened is ready; its session carries data.
    RouteUp {
        route: RouteId,
        session: SessionId,
        setup_time: Duration,
    },
    /// A route's first setup failed; the route is gone.
    RouteFailed { route: RouteId, error: SetupError },
    /// A route that was up broke. Its session waits: answer with
    /// [`Router::repair_route`] or [`Router::abandon_route`].
    RouteBroken {
        route: RouteId,
        /// The hops of the broken path, after the source.
        path: Vec<NodeId>,
        cause: Broken,
    },
    /// A broken route runs again on a new path; its session and streams
    /// carried on.
    RouteRepaired {
        route: RouteId,
        session: SessionId,
        setup_time: Duration,
    },
    /// A route this node opened is gone, with its session.
    RouteDown { route: RouteId, reason: RouteEnd },
    /// A route to this node was set up by `peer`.
    SessionOpened { session: SessionId, peer: NodeId },
    /// The source of a session moved it to a new route.
    SessionResumed { session: SessionId },
    /// A session this node was the destination of has ended.
    SessionClosed {
        session: SessionId,
        reason: TeardownReason,
    },
    /// A datagram for the service on `port`.
    Datagram {
        session: SessionId,
        port: u16,
        data: Bytes,
    },
    Pong {
        session: SessionId,
        id: u64,
        rtt: Duration,
    },
    /// The other end opened a stream.
    StreamOpened {
        session: SessionId,
        stream: StreamId,
    },
    /// In-order bytes of a stream. Report them consumed with
    /// [`Router::stream_consumed`] once the application has taken them.
    StreamData {
        session: SessionId,
        stream: StreamId,
        data: Bytes,
    },
    /// The other end finished its side: no more data will come.
    StreamFinished {
        session: SessionId,
        stream: StreamId,
    },
    /// A write that was cut short can go on.
    StreamWritable {
        session: SessionId,
        stream: StreamId,
    },
    /// A stream is gone: both sides finished (`error` none), or not.
    StreamClosed {
        session: SessionId,
        stream: StreamId,
        error: Option<StreamError>,
    },
    /// A relay received a valid receipt for a route through it.
    Receipt { receipt: Receipt, encoded: Bytes },
}

/// A message for a neighbour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    Control {
        to: NodeId,
        message: Bytes,
    },
    /// A data packet: `header` then `body`, sent as one link message.
    Data {
        to: NodeId,
        header: [u8; DATA_HEADER_LEN],
        body: Bytes,
    },
}

/// Bytes and packets a rule has carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets_forward: u64,
    pub bytes_forward: u64,
    pub packets_backward: u64,
    pub bytes_backward: u64,
}

impl Counters {
    fn add(&mut self, other: &Counters) {
        self.packets_forward += other.packets_forward;
        self.bytes_forward += other.bytes_forward;
        self.packets_backward += other.packets_backward;
        self.bytes_backward += other.bytes_backward;
    }

    fn count(&mut self, forward: bool, bytes: usize) {
        if forward {
            self.packets_forward += 1;
            self.bytes_forward += bytes as u64;
        } else {
            self.packets_backward += 1;
            self.bytes_backward += bytes as u64;
        }
    }
}

/// What a hop knows of one route through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleInfo {
    pub label: u32,
    /// The neighbour towards the source (none at the source).
    pub prev: Option<NodeId>,
    /// The neighbour towards the destination (none at the destination).
    pub next: Option<NodeId>,
    /// Names the route in this hop's receipts (zero at the source).
    pub route_tag: [u8; 16],
    pub counters: Counters,
    /// Whether this node relays the route (rather than ending it).
    pub relay: bool,
}

/// Where a route this node opened stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteStatus {
    SettingUp,
    Up,
    /// Broken; a repair is awaited or under way.
    Repairing,
}

/// A route this node opened, for reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    pub id: RouteId,
    /// Hops after the source, the last being the destination.
    pub path: Vec<NodeId>,
    pub status: RouteStatus,
    /// Everything the route carried, across repairs.
    pub counters: Counters,
    pub repairs: u32,
    pub session: Option<SessionId>,
    pub setup_time: Option<Duration>,
    pub streams: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Relay,
    Source(RouteId),
    Destination(SessionId),
}

#[derive(Debug)]
struct Rule {
    role: Role,
    /// Towards the source: neighbour and its label for this route.
    prev: Option<(NodeId, u32)>,
    /// Towards the destination: neighbour, and its label once confirmed.
    next: Option<(NodeId, Option<u32>)>,
    expires_at: Instant,
    reply_key: [u8; 32],
    route_tag: [u8; 16],
    counters: Counters,
    /// What this hop last sent for the setup (the forwarded SETUP, or the
    /// CONFIRM), to resend if the source retransmits.
    last_setup_message: Option<(NodeId, Bytes)>,
    /// Highest receipt seq accepted (relays).
    receipt_seq: u64,
}

impl Rule {
    fn next_label(&self) -> Option<(NodeId, u32)> {
        self.next.and_then(|(node, label)| label.map(|l| (node, l)))
    }
}

#[derive(Debug)]
enum RouteState {
    Setting {
        setup: Bytes,
        started_at: Instant,
        retransmit_at: Instant,
        retransmit_every: Duration,
        initiator: Initiator,
    },
    Up {
        keepalive_at: Instant,
        last_echo: Instant,
        keepalive_seq: u32,
    },
    Broken,
}

#[derive(Debug)]
struct SourceRoute {
    /// Hops after the source; the last is the destination.
    hops: Vec<NodeId>,
    /// The source's rule, while one exists.
    label: Option<u32>,
    reply_keys: Vec<[u8; 32]>,
    route_tags: Vec<[u8; 16]>,
    state: RouteState,
    token: [u8; TOKEN_LEN],
    session: Option<SessionId>,
    /// Counters of the rules of earlier paths.
    earlier: Counters,
    repairs: u32,
    setup_time: Option<Duration>,
    broken_since: Option<Instant>,
    receipt_seq: u64,
    receipt_at: Instant,
    /// Counters of the current rule when the last receipts were sent.
    receipted: Counters,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Source(RouteId),
    Destination,
}

#[derive(Debug)]
struct Stream {
    send: SendHalf,
    receive: ReceiveHalf,
    /// A write was cut short: report [`Event::StreamWritable`] on room.
    writer_blocked: bool,
    /// The entry of this stream in the router's timer set, if any.
    timer: Option<Instant>,
}

#[derive(Debug)]
struct Session {
    peer: NodeId,
    end: End,
    token: [u8; TOKEN_LEN],
    /// The rule of the route the session runs on, while it has one.
    label: Option<u32>,
    cipher: Option<SessionCipher>,
    pings: VecDeque<(u64, Instant)>,
    streams: BTreeMap<StreamId, Stream>,
    next_stream: StreamId,
    highest_peer_stream: StreamId,
    /// A destination whose route broke: since when, and why.
    detached: Option<(Instant, TeardownReason)>,
}

impl Session {
    /// Whether `stream` is numbered like the streams the peer opens.
    fn opened_by_peer(&self, stream: StreamId) -> bool {
        // The source opens odd streams, the destination even ones.
        let peer_parity = match self.end {
            End::Source(_) => 0,
            End::Destination => 1,
        };
        stream % 2 == peer_parity
    }
}

/// Pings in flight per session whose send time is remembered.
const PINGS_MAX: usize = 64;

/// How a rule is being removed.
#[derive(Debug, Clone, Copy)]
struct Removal {
    /// The neighbour the news came from (not told again).
    from: Option<NodeId>,
    reason: TeardownReason,
    /// A note from further along, sealed for the source.
    note: Option<[u8; SEALED_REASON_LEN]>,
    /// This node lost its link to this neighbour.
    lost_link_to: Option<NodeId>,
    now: Instant,
}

impl Removal {
    fn local(reason: TeardownReason, now: Instant) -> Self {
        Self {
            from: None,
            reason,
            note: None,
            lost_link_to: None,
            now,
        }
    }
}

/// A SETUP sent, with what the source keeps of it.
struct StartedSetup {
    label: u32,
    setup: Bytes,
    initiator: Initiator,
    reply_keys: Vec<[u8; 32]>,
    route_tags: Vec<[u8; 16]>,
}

/// One node's routes: the rules it forwards by and the routes it ends.
pub struct Router {
    identity: Arc<LinkIdentity>,
    config: Config,
    links: HashSet<NodeId>,
    rules: BTreeMap<u32, Rule>,
    /// (previous neighbour, its label) → our label, so a retransmitted
    /// SETUP finds the rule it already made.
    by_previous: HashMap<(NodeId, u32), u32>,
    /// Ephemeral keys of layers seen, with when to forget them.
    replay: HashMap<[u8; 32], Instant>,
    routes: BTreeMap<RouteId, SourceRoute>,
    sessions: BTreeMap<SessionId, Session>,
    /// Session tokens of the sessions this node is the destination of.
    tokens: HashMap<[u8; TOKEN_LEN], SessionId>,
    /// Stream retransmission timers: (when, session, stream). Entries may
    /// be stale; the stream's own `timer` says which one counts.
    stream_timers: BTreeSet<(Instant, SessionId, StreamId)>,
    next_route: RouteId,
    next_session: SessionId,
    next_tick: Option<Instant>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    random: RandomSource,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("node", &self.identity.node_id())
            .field("rules", &self.rules.len())
            .field("routes", &self.routes.len())
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

/// Where a router gets its random bytes (labels, reply keys, route tags,
/// session tokens): the OS by default. A seeded source makes a simulation
/// replay exactly; never use one outside tests.
pub type RandomSource = Box<dyn FnMut(&mut [u8]) + Send>;

fn os_random(bytes: &mut [u8]) {
    // Without randomness keys would be predictable; the OS generator
    // failing is not something to carry on through.
    if getrandom::fill(bytes).is_err() {
        std::process::abort();
    }
}

fn reply_cipher(reply_key: &[u8; 32]) -> Option<LessSafeKey> {
    UnboundKey::new(&CHACHA20_POLY1305, reply_key)
        .map(LessSafeKey::new)
        .ok()
}

/// Seals a reason for the source. A reply key seals at most one failure
/// (nonce `FAIL_NONCE`) and one teardown note (`NOTE_NONCE`): a rule is
/// removed after either, so each fixed nonce is used once per key.
fn seal_reason(
    reply_key: &[u8; 32],
    nonce: [u8; 12],
    reason: FailReason,
) -> [u8; SEALED_REASON_LEN] {
    let mut out = [0u8; SEALED_REASON_LEN];
    out[0] = reason.code();
    if let Some(key) = reply_cipher(reply_key)
        && let Ok(tag) = key.seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::empty(),
            &mut out[..1],
        )
    {
        out[1..].copy_from_slice(tag.as_ref());
    }
    out
}

fn open_reason(
    reply_key: &[u8; 32],
    nonce: [u8; 12],
    sealed: &[u8; SEALED_REASON_LEN],
) -> Option<FailReason> {
    let key = reply_cipher(reply_key)?;
    let mut buffer = *sealed;
    let plain = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::empty(),
            &mut buffer,
        )
        .ok()?;
    FailReason::from_code(plain[0])
}

/// Seals a session packet and queues it on the session's route.
fn transmit_sealed(
    rules: &mut BTreeMap<u32, Rule>,
    transmits: &mut VecDeque<Transmit>,
    label: Option<u32>,
    cipher: Option<&mut SessionCipher>,
    kind: u8,
    body_len: usize,
    write_body: impl FnOnce(&mut Vec<u8>),
) -> Result<(), SendError> {
    let (Some(label), Some(cipher)) = (label, cipher) else {
        return Err(SendError::NotUp);
    };
    let rule = rules.get_mut(&label).ok_or(SendError::NotUp)?;
    let ((to, their_label), forward) = match rule.role {
        Role::Source(_) => (rule.next_label().ok_or(SendError::NotUp)?, true),
        Role::Destination(_) => (rule.prev.ok_or(SendError::NotUp)?, false),
        Role::Relay => return Err(SendError::NotUp),
    };
    let packet = cipher
        .seal_with(kind, body_len, write_body)
        .map_err(|_| SendError::Exhausted)?;
    // An end counts what it sends as travelling away from it.
    rule.counters.count(forward, DATA_HEADER_LEN + packet.len());
    let header = DataHeader {
        label: their_label,
        kind: DATA_KIND_SESSION,
        len: packet.len() as u16,
    };
    transmits.push_back(Transmit::Data {
        to,
        header: header.encode(),
        body: Bytes::from(packet),
    });
    Ok(())
}

/// Makes sure the timer set has an entry at or before the stream's
/// retransmission time.
fn arm_stream_timer(
    timers: &mut BTreeSet<(Instant, SessionId, StreamId)>,
    session: SessionId,
    stream_id: StreamId,
    stream: &mut Stream,
) {
    if let Some(at) = stream.send.rto_at
        && stream.timer.is_none_or(|entry| entry > at)
    {
        timers.insert((at, session, stream_id));
        stream.timer = Some(at);
    }
}

impl Router {
    pub fn new(identity: Arc<LinkIdentity>, config: Config) -> Self {
        Self {
            identity,
            config,
            links: HashSet::new(),
            rules: BTreeMap::new(),
            by_previous: HashMap::new(),
            replay: HashMap::new(),
            routes: BTreeMap::new(),
            sessions: BTreeMap::new(),
            tokens: HashMap::new(),
            stream_timers: BTreeSet::new(),
            next_route: 1,
            next_session: 1,
            next_tick: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            random: Box::new(os_random),
        }
    }

    /// Replaces the source of random bytes (for replayable simulations).
    pub fn with_random_source(mut self, source: RandomSource) -> Self {
        self.random = source;
        self
    }

    fn random<const N: usize>(&mut self) -> [u8; N] {
        let mut bytes = [0u8; N];
        (self.random)(&mut bytes);
        bytes
    }

    pub fn node_id(&self) -> NodeId {
        self.identity.node_id()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Rules held now (routes through, from and to this node).
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Sessions held now (both ends).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Every rule: its label, neighbours, route tag and counters.
    pub fn rules(&self) -> impl Iterator<Item = RuleInfo> + '_ {
        self.rules.iter().map(|(label, rule)| RuleInfo {
            label: *label,
            prev: rule.prev.map(|(node, _)| node),
            next: rule.next.map(|(node, _)| node),
            route_tag: rule.route_tag,
            counters: rule.counters,
            relay: rule.role == Role::Relay,
        })
    }

    /// The hops of a route this node opened, if it still exists.
    pub fn route_path(&self, route: RouteId) -> Option<&[NodeId]> {
        self.routes.get(&route).map(|r| r.hops.as_slice())
    }

    /// What a route this node opened has carried, across repairs.
    pub fn route_counters(&self, route: RouteId) -> Option<Counters> {
        let entry = self.routes.get(&route)?;
        let mut counters = entry.earlier;
        if let Some(rule) = entry.label.and_then(|label| self.rules.get(&label)) {
            counters.add(&rule.counters);
        }
        Some(counters)
    }

    /// Every route this node opened.
    pub fn routes(&self) -> impl Iterator<Item = RouteInfo> + '_ {
        self.routes.iter().map(|(id, entry)| RouteInfo {
            id: *id,
            path: entry.hops.clone(),
            status: match entry.state {
                RouteState::Up { .. } => RouteStatus::Up,
                _ if entry.session.is_some() => RouteStatus::Repairing,
                _ => RouteStatus::SettingUp,
            },
            counters: self.route_counters(*id).unwrap_or_default(),
            repairs: entry.repairs,
            session: entry.session,
            setup_time: entry.setup_time,
            streams: entry
                .session
                .and_then(|s| self.sessions.get(&s))
                .map_or(0, |s| s.streams.len()),
        })
    }

    /// The node at the other end of a session.
    pub fn session_peer(&self, session: SessionId) -> Option<NodeId> {
        self.sessions.get(&session).map(|s| s.peer)
    }

    /// Whether a session can send now (its route is up).
    pub fn session_is_up(&self, session: SessionId) -> bool {
        self.sessions
            .get(&session)
            .is_some_and(|s| s.label.is_some())
    }

    // ----- links -----

    pub fn link_up(&mut self, neighbour: NodeId) {
        self.links.insert(neighbour);
    }

    /// The link to `neighbour` is gone: every route over it is torn down,
    /// and both directions are told at once; the side towards the source
    /// learns, sealed, which hop lost which link.
    pub fn link_down(&mut self, neighbour: NodeId, now: Now) {
        self.links.remove(&neighbour);
        let affected: Vec<u32> = self
            .rules
            .iter()
            .filter(|(_, rule)| {
                rule.prev.is_some_and(|(node, _)| node == neighbour)
                    || rule.next.is_some_and(|(node, _)| node == neighbour)
            })
            .map(|(label, _)| *label)
            .collect();
        for label in affected {
            self.remove_rule(
                label,
                Removal {
                    from: Some(neighbour),
                    reason: TeardownReason::LinkDown,
                    note: None,
                    lost_link_to: Some(neighbour),
                    now: now.instant,
                },
            );
        }
    }

    // ----- opening and repairing routes -----

    /// Builds a SETUP along `hops` and installs the source's rule for it.
    fn start_setup(
        &mut self,
        route: RouteId,
        hops: &[Hop],
        hello: Hello,
        now: Now,
    ) -> Result<StartedSetup, OpenError> {
        if hops.is_empty() || hops.len() > crate::path::HOPS_MAX {
            return Err(OpenError::BadLength);
        }
        let first = hops[0].node;
        if !self.links.contains(&first) {
            return Err(OpenError::NoLink(first));
        }
        if self.rules.len() >= self.config.rules_max {
            return Err(OpenError::RulesFull);
        }
        let destination = hops[hops.len() - 1];
        let (initiator, first_message) =
            Initiator::start(&self.identity, &destination.link_key, hello)
                .map_err(|error| OpenError::Build(error.to_string()))?;
        let headers: Vec<(u64, [u8; 32], [u8; 16])> = hops
            .iter()
            .map(|_| (now.unix_ms, self.random(), self.random()))
            .collect();
        let keyed: Vec<(NodeId, [u8; 32])> = hops.iter().map(|h| (h.node, h.link_key)).collect();
        let onion = onion::build(&keyed, &headers, &first_message)
            .map_err(|error| OpenError::Build(error.to_string()))?;
        let label = self.allocate_label();
        let setup = Control::Setup {
            prev_label: label,
            onion: Bytes::from(onion),
        }
        .encode();
        self.rules.insert(
            label,
            Rule {
                role: Role::Source(route),
                prev: None,
                next: Some((first, None)),
                expires_at: now.instant + self.config.setup_timeout + self.config.rule_timeout,
                reply_key: [0; 32],
                route_tag: [0; 16],
                counters: Counters::default(),
                last_setup_message: None,
                receipt_seq: 0,
            },
        );
        self.arm_tick(now.instant);
        self.transmits.push_back(Transmit::Control {
            to: first,
            message: setup.clone(),
        });
        Ok(StartedSetup {
            label,
            setup,
            initiator,
            reply_keys: headers.iter().map(|(_, key, _)| *key).collect(),
            route_tags: headers.iter().map(|(_, _, tag)| *tag).collect(),
        })
    }

    fn setting_state(&self, setup: Bytes, initiator: Initiator, now: Instant) -> RouteState {
        RouteState::Setting {
            setup,
            started_at: now,
            retransmit_at: now + self.config.setup_retransmit,
            retransmit_every: self.config.setup_retransmit,
            initiator,
        }
    }

    /// Starts setting up a route along `hops` (the first is a neighbour,
    /// the last the destination). [`Event::RouteUp`] or
    /// [`Event::RouteFailed`] follows.
    pub fn open_route(&mut self, hops: &[Hop], now: Now) -> Result<RouteId, OpenError> {
        let route = self.next_route;
        let token = self.random();
        let StartedSetup {
            label,
            setup,
            initiator,
            reply_keys,
            route_tags,
        } = self.start_setup(
            route,
            hops,
            Hello {
                resume: false,
                token,
            },
            now,
        )?;
        self.next_route += 1;
        let state = self.setting_state(setup, initiator, now.instant);
        self.routes.insert(
            route,
            SourceRoute {
                hops: hops.iter().map(|h| h.node).collect(),
                label: Some(label),
                reply_keys,
                route_tags,
                state,
                token,
                session: None,
                earlier: Counters::default(),
                repairs: 0,
                setup_time: None,
                broken_since: None,
                receipt_seq: 0,
                receipt_at: now.instant + self.config.receipt_interval,
                receipted: Counters::default(),
            },
        );
        Ok(route)
    }

    /// Moves a broken route onto `hops` (which must end at the same
    /// destination); its session resumes there. [`Event::RouteRepaired`]
    /// or another [`Event::RouteBroken`] follows.
    pub fn repair_route(
        &mut self,
        route: RouteId,
        hops: &[Hop],
        now: Now,
    ) -> Result<(), OpenError> {
        let entry = self.routes.get(&route).ok_or(OpenError::UnknownRoute)?;
        if !matches!(entry.state, RouteState::Broken) {
            return Err(OpenError::NotBroken);
        }
        if hops.last().map(|h| h.node) != entry.hops.last().copied() {
            return Err(OpenError::OtherDestination);
        }
        let hello = Hello {
            resume: true,
            token: entry.token,
        };
        let StartedSetup {
            label,
            setup,
            initiator,
            reply_keys,
            route_tags,
        } = self.start_setup(route, hops, hello, now)?;
        let state = self.setting_state(setup, initiator, now.instant);
        if let Some(entry) = self.routes.get_mut(&route) {
            entry.hops = hops.iter().map(|h| h.node).collect();
            entry.label = Some(label);
            entry.reply_keys = reply_keys;
            entry.route_tags = route_tags;
            entry.state = state;
            entry.receipted = Counters::default();
        }
        Ok(())
    }

    /// Closes a route this node opened, telling every hop.
    pub fn close_route(&mut self, route: RouteId, now: Now) -> bool {
        if !self.routes.contains_key(&route) {
            return false;
        }
        // What the relays carried since the last receipts is owed to them.
        self.send_receipts(route, now, true);
        self.end_route(route, RouteEnd::Closed, now.instant);
        true
    }

    /// Gives up on a broken route: its session and streams end with
    /// `detail`.
    pub fn abandon_route(&mut self, route: RouteId, detail: impl Into<String>, now: Now) -> bool {
        if !self.routes.contains_key(&route) {
            return false;
        }
        self.end_route(route, RouteEnd::Abandoned(detail.into()), now.instant);
        true
    }

    fn end_route(&mut self, route: RouteId, reason: RouteEnd, now: Instant) {
        let Some(entry) = self.routes.remove(&route) else {
            return;
        };
        if let Some(label) = entry.label {
            self.remove_rule(label, Removal::local(TeardownReason::Closed, now));
        }
        if let Some(session) = entry.session {
            let error = match &reason {
                RouteEnd::Closed => StreamError::Cancelled,
                RouteEnd::ClosedByPeer => StreamError::SessionClosed,
                RouteEnd::Abandoned(detail) => StreamError::RouteLost(detail.clone()),
            };
            self.end_session(session, error);
        }
        self.events.push_back(Event::RouteDown { route, reason });
    }

    /// Closes a session this node is the destination of.
    pub fn close_session(&mut self, session: SessionId, now: Now) -> bool {
        let Some(entry) = self.sessions.get(&session) else {
            return false;
        };
        match (entry.end, entry.label) {
            (End::Source(route), _) => return self.close_route(route, now),
            (End::Destination, Some(label)) => {
                self.remove_rule(label, Removal::local(TeardownReason::Closed, now.instant));
            }
            (End::Destination, None) => {
                self.end_session(session, StreamError::Cancelled);
                self.events.push_back(Event::SessionClosed {
                    session,
                    reason: TeardownReason::Closed,
                });
            }
        }
        true
    }

    /// Removes a session and reports each of its streams closed.
    fn end_session(&mut self, session_id: SessionId, error: StreamError) {
        let Some(session) = self.sessions.remove(&session_id) else {
            return;
        };
        if session.end == End::Destination {
            self.tokens.remove(&session.token);
        }
        for stream in session.streams.keys() {
            self.events.push_back(Event::StreamClosed {
                session: session_id,
                stream: *stream,
                error: Some(error.clone()),
            });
        }
    }

    fn new_session(
        &mut self,
        peer: NodeId,
        end: End,
        token: [u8; TOKEN_LEN],
        label: u32,
        keys: session::SessionKeys,
    ) -> SessionId {
        let session = self.next_session;
        self.next_session += 1;
        self.sessions.insert(
            session,
            Session {
                peer,
                end,
                token,
                label: Some(label),
                cipher: Some(SessionCipher::new(keys)),
                pings: VecDeque::new(),
                streams: BTreeMap::new(),
                next_stream: match end {
                    End::Source(_) => 1,
                    End::Destination => 2,
                },
                highest_peer_stream: 0,
                detached: None,
            },
        );
        if end == End::Destination {
            self.tokens.insert(token, session);
        }
        session
    }

    fn allocate_label(&mut self) -> u32 {
        loop {
            let label = u32::from_be_bytes(self.random());
            if label != 0 && !self.rules.contains_key(&label) {
                return label;
            }
        }
    }

    /// Removes a rule, tells the neighbours on the other sides than the
    /// one the news came from, and updates the route end it belonged to.
    fn remove_rule(&mut self, label: u32, removal: Removal) {
        let Some(rule) = self.rules.remove(&label) else {
            return;
        };
        let next_node = rule.next.map(|(node, _)| node);
        if let Some((node, their_label)) = rule.prev {
            self.by_previous.remove(&(node, their_label));
            if Some(node) != removal.from {
                // Towards the source, say where the route broke if this
                // hop knows: it lost its link to its next hop, or a hop
                // further on did and said so.
                let note = if rule.role == Role::Relay
                    && removal.lost_link_to.is_some()
                    && removal.lost_link_to == next_node
                {
                    Some(seal_reason(
                        &rule.reply_key,
                        NOTE_NONCE,
                        FailReason::NextLinkDown,
                    ))
                } else if removal.from.is_some() && removal.from == next_node {
                    removal.note
                } else {
                    None
                };
                self.send_control(
                    node,
                    Control::Teardown {
                        label: their_label,
                        reason: removal.reason,
                        note,
                    },
                );
            }
        }
        if let Some((node, Some(their_label))) = rule.next
            && Some(node) != removal.from
        {
            self.send_control(
                node,
                Control::Teardown {
                    label: their_label,
                    reason: removal.reason,
                    note: None,
                },
            );
        }
        match rule.role {
            Role::Relay => {}
            Role::Source(route) => self.source_rule_gone(route, label, &rule, removal),
            Role::Destination(session) => self.destination_rule_gone(session, label, removal),
        }
    }

    fn source_rule_gone(&mut self, route: RouteId, label: u32, rule: &Rule, removal: Removal) {
        let node_id = self.node_id();
        let Some(entry) = self.routes.get_mut(&route) else {
            return;
        };
        if entry.label != Some(label) {
            return;
        }
        entry.label = None;
        entry.earlier.add(&rule.counters);
        let located = if removal.lost_link_to.is_some() {
            Some(Broken::LinkDown {
                from: node_id,
                to: entry.hops[0],
            })
        } else {
            removal.note.and_then(|note| {
                entry
                    .reply_keys
                    .iter()
                    .enumerate()
                    .find_map(|(index, key)| {
                        (open_reason(key, NOTE_NONCE, &note)? == FailReason::NextLinkDown).then(
                            || Broken::LinkDown {
                                from: entry.hops[index],
                                to: entry.hops[(index + 1).min(entry.hops.len() - 1)],
                            },
                        )
                    })
            })
        };
        let session = entry.session;
        match (&entry.state, session) {
            (RouteState::Setting { .. }, None) => {
                self.routes.remove(&route);
                self.events.push_back(Event::RouteFailed {
                    route,
                    error: SetupError::TornDown(removal.reason),
                });
            }
            (RouteState::Up { .. }, Some(session))
                if removal.reason == TeardownReason::Closed && removal.from.is_some() =>
            {
                let _ = session;
                self.end_route(route, RouteEnd::ClosedByPeer, removal.now);
            }
            (RouteState::Broken, _) => {}
            (state, _) => {
                let cause = located.unwrap_or(match state {
                    RouteState::Setting { .. } => {
                        Broken::Setup(SetupError::TornDown(removal.reason))
                    }
                    _ => Broken::Silent,
                });
                self.route_broke(route, cause, removal.now);
            }
        }
    }

    /// A route whose session lives on lost its path.
    fn route_broke(&mut self, route: RouteId, cause: Broken, now: Instant) {
        let Some(entry) = self.routes.get_mut(&route) else {
            return;
        };
        entry.state = RouteState::Broken;
        entry.broken_since.get_or_insert(now);
        let path = entry.hops.clone();
        if let Some(session) = entry.session.and_then(|s| self.sessions.get_mut(&s)) {
            session.label = None;
        }
        self.events
            .push_back(Event::RouteBroken { route, path, cause });
    }

    fn destination_rule_gone(&mut self, session_id: SessionId, label: u32, removal: Removal) {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        if session.label != Some(label) {
            return;
        }
        session.label = None;
        if removal.reason == TeardownReason::Closed {
            self.end_session(session_id, StreamError::SessionClosed);
            self.events.push_back(Event::SessionClosed {
                session: session_id,
                reason: removal.reason,
            });
        } else {
            // The source may resume it on another path.
            session.detached = Some((removal.now, removal.reason));
            self.arm_tick(removal.now);
        }
    }

    fn send_control(&mut self, to: NodeId, message: Control) {
        self.transmits.push_back(Transmit::Control {
            to,
            message: message.encode(),
        });
    }

    // ----- data -----

    /// A data packet from neighbour `from`.
    pub fn handle_data(&mut self, from: NodeId, packet: Bytes, now: Now) {
        let Ok(header) = DataHeader::decode(&packet) else {
            return;
        };
        let Some(rule) = self.rules.get_mut(&header.label) else {
            return;
        };
        let from_prev = rule.prev.is_some_and(|(node, _)| node == from);
        let from_next = rule.next.is_some_and(|(node, _)| node == from);
        if !(from_prev || from_next) {
            return;
        }
        rule.counters.count(from_prev, packet.len());
        let body = packet.slice(DATA_HEADER_LEN..);
        match rule.role {
            Role::Relay => {
                let onward = if from_prev {
                    rule.next_label()
                } else {
                    rule.prev
                };
                if let Some((to, label)) = onward {
                    let header = DataHeader { label, ..header };
                    self.transmits.push_back(Transmit::Data {
                        to,
                        header: header.encode(),
                        body,
                    });
                }
            }
            Role::Source(route) => {
                if let Some(session) = self.routes.get(&route).and_then(|r| r.session)
                    && from_next
                {
                    self.deliver(session, header.label, &body, now);
                }
            }
            Role::Destination(session) => {
                if from_prev {
                    self.deliver(session, header.label, &body, now);
                }
            }
        }
    }

    fn deliver(&mut self, session_id: SessionId, label: u32, body: &[u8], now: Now) {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        if session.label != Some(label) {
            return;
        }
        let Some(Ok((kind, payload))) = session.cipher.as_mut().map(|c| c.open(body)) else {
            return;
        };
        match kind {
            session::KIND_DATAGRAM if payload.len() >= DATAGRAM_PORT_LEN => {
                let port = u16::from_be_bytes([payload[0], payload[1]]);
                self.events.push_back(Event::Datagram {
                    session: session_id,
                    port,
                    data: payload.slice(DATAGRAM_PORT_LEN..),
                });
            }
            session::KIND_PING => {
                let _ = self.send_packet(session_id, session::KIND_PONG, &payload);
            }
            session::KIND_PONG => {
                let Ok(id) = <[u8; 8]>::try_from(&payload[..]).map(u64::from_be_bytes) else {
                    return;
                };
                if let Some(position) = session.pings.iter().position(|(p, _)| *p == id)
                    && let Some((_, sent)) = session.pings.remove(position)
                {
                    self.events.push_back(Event::Pong {
                        session: session_id,
                        id,
                        rtt: now.instant.saturating_duration_since(sent),
                    });
                }
            }
            session::KIND_STREAM_DATA | session::KIND_STREAM_ACK | session::KIND_STREAM_RESET => {
                if let Ok(frame) = Frame::decode(kind, payload) {
                    self.on_stream_frame(session_id, frame, now.instant);
                }
            }
            _ => {}
        }
    }

    fn send_packet(
        &mut self,
        session_id: SessionId,
        kind: u8,
        body: &[u8],
    ) -> Result<(), SendError> {
        let session = self
            .sessions
            .get_mut(&session_id)
            .ok_or(SendError::UnknownSession)?;
        transmit_sealed(
            &mut self.rules,
            &mut self.transmits,
            session.label,
            session.cipher.as_mut(),
            kind,
            body.len(),
            |out| out.extend_from_slice(body),
        )
    }

    /// Sends a datagram on a session to the service on `port` at the other
    /// end (unreliable: lost if the route breaks).
    pub fn send_datagram(
        &mut self,
        session: SessionId,
        port: u16,
        data: &[u8],
    ) -> Result<(), SendError> {
        if data.len() > DATAGRAM_LEN_MAX {
            return Err(SendError::TooLong { len: data.len() });
        }
        let mut body = Vec::with_capacity(DATAGRAM_PORT_LEN + data.len());
        body.extend_from_slice(&port.to_be_bytes());
        body.extend_from_slice(data);
        self.send_packet(session, session::KIND_DATAGRAM, &body)
    }

    /// Sends an end-to-end ping; [`Event::Pong`] reports its round trip.
    pub fn ping(&mut self, session_id: SessionId, id: u64, now: Now) -> Result<(), SendError> {
        self.send_packet(session_id, session::KIND_PING, &id.to_be_bytes())?;
        if let Some(session) = self.sessions.get_mut(&session_id) {
            if session.pings.len() >= PINGS_MAX {
                session.pings.pop_front();
            }
            session.pings.push_back((id, now.instant));
        }
        Ok(())
    }

    // ----- time -----

    /// When [`Router::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let repair_timeout = self.config.repair_timeout;
        let routes = self.routes.values().filter_map(|route| {
            let own = match &route.state {
                RouteState::Setting {
                    retransmit_at,
                    started_at,
                    ..
                } => Some((*retransmit_at).min(*started_at + self.config.setup_timeout)),
                RouteState::Up { keepalive_at, .. } => Some(*keepalive_at),
                RouteState::Broken => None,
            };
            let give_up = route.broken_since.map(|since| since + repair_timeout);
            own.into_iter().chain(give_up).min()
        });
        let streams = self.stream_timers.first().map(|(at, _, _)| *at);
        routes.chain(streams).chain(self.next_tick).min()
    }

    /// Retransmits setups and stream data, sends keepalives and receipts,
    /// and expires rules, routes and sessions.
    pub fn handle_timeout(&mut self, now: Now) {
        let instant = now.instant;
        let route_ids: Vec<RouteId> = self.routes.keys().copied().collect();
        for route in route_ids {
            self.route_timers(route, now);
        }
        while let Some(&(at, session, stream)) = self.stream_timers.first() {
            if at > instant {
                break;
            }
            self.stream_timers.pop_first();
            self.stream_timer_fired(at, session, stream, instant);
        }
        if self.next_tick.is_some_and(|tick| instant >= tick) {
            // Rule expiry needs no precision; a tick a fifth of the timeout
            // keeps it cheap with many rules. It stops when nothing is left
            // to expire.
            let detached = self.sessions.values().any(|s| s.detached.is_some());
            self.next_tick = (!self.rules.is_empty() || !self.replay.is_empty() || detached)
                .then(|| instant + self.config.rule_timeout / 5);
            let expired: Vec<u32> = self
                .rules
                .iter()
                .filter(|(_, rule)| rule.expires_at <= instant)
                .map(|(label, _)| *label)
                .collect();
            for label in expired {
                self.remove_rule(label, Removal::local(TeardownReason::Expired, instant));
            }
            self.replay.retain(|_, forget_at| *forget_at > instant);
            let grace = self.config.resume_grace;
            let abandoned: Vec<(SessionId, TeardownReason)> = self
                .sessions
                .iter()
                .filter_map(|(id, s)| match s.detached {
                    Some((since, reason)) if since + grace <= instant => Some((*id, reason)),
                    _ => None,
                })
                .collect();
            for (session, reason) in abandoned {
                self.end_session(
                    session,
                    StreamError::RouteLost("the source did not resume the session".into()),
                );
                self.events
                    .push_back(Event::SessionClosed { session, reason });
            }
        }
    }

    fn route_timers(&mut self, route: RouteId, now: Now) {
        let instant = now.instant;
        let Some(entry) = self.routes.get_mut(&route) else {
            return;
        };
        if let Some(since) = entry.broken_since
            && instant >= since + self.config.repair_timeout
        {
            let timeout = self.config.repair_timeout.as_secs();
            self.end_route(
                route,
                RouteEnd::Abandoned(format!("no working path within {timeout} s")),
                instant,
            );
            return;
        }
        let Some(label) = entry.label else {
            return;
        };
        let first = entry.hops[0];
        match &mut entry.state {
            RouteState::Setting {
                setup,
                started_at,
                retransmit_at,
                retransmit_every,
                ..
            } => {
                if instant >= *started_at + self.config.setup_timeout {
                    let timeout = self.config.setup_timeout;
                    self.setup_failed(route, SetupError::Timeout { timeout }, instant);
                } else if instant >= *retransmit_at {
                    *retransmit_every *= 2;
                    *retransmit_at = instant + *retransmit_every;
                    let message = setup.clone();
                    self.transmits
                        .push_back(Transmit::Control { to: first, message });
                }
            }
            RouteState::Up {
                keepalive_at,
                last_echo,
                keepalive_seq,
            } => {
                if instant >= *last_echo + self.config.broken_after {
                    self.remove_rule(label, Removal::local(TeardownReason::Expired, instant));
                } else if instant >= *keepalive_at {
                    *keepalive_at = instant + self.config.keepalive_interval;
                    *keepalive_seq = keepalive_seq.wrapping_add(1);
                    let seq = *keepalive_seq;
                    let receipts_due = instant >= entry.receipt_at;
                    let next = self.rules.get_mut(&label).and_then(|rule| {
                        rule.expires_at = instant + self.config.rule_timeout;
                        rule.next_label()
                    });
                    if let Some((to, their_label)) = next {
                        self.send_control(
                            to,
                            Control::Keepalive {
                                label: their_label,
                                seq,
                                echo: false,
                            },
                        );
                    }
                    if receipts_due {
                        self.send_receipts(route, now, false);
                    }
                }
            }
            RouteState::Broken => {}
        }
    }

    // ----- output -----

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}
