//! Routes: label-switched paths set up in one round trip, forwarded by
//! every hop, with end-to-end sessions and streams at their ends.
//!
//! One [`Router`] per node dispatches between three tables, each owning
//! its state: the rule table (`rules`: every route through, from or to the
//! node, the setups seen, the data plane's relabelling), the routes the
//! node opened (`routes`: their state, paths, keys and timers), and the
//! sessions at its route ends with their streams (`sessions`). Control
//! messages are in `control`.
//!
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
mod routes;
mod rules;
pub mod session;
mod sessions;
pub mod stream;
#[cfg(test)]
mod tests;

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fogwire_identity::NodeId;
use fogwire_link_proto::LinkIdentity;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

use crate::rates::KeyedRate;
use message::{
    CONFIRM_BLOB_MAX, Control, DATA_HEADER_LEN, DataHeader, FailReason, FailReport,
    SEALED_REASON_LEN, TeardownReason,
};
use onion::LayerRole;
use receipt::Receipt;
use routes::{RouteState, SourceRoute, SourceRoutes};
use rules::{Forward, Role, Rule, RuleTable};
use session::{Hello, Initiator};
use sessions::{DATAGRAM_PORT_LEN, End, Output, Sessions};
use stream::StreamError;

/// Link channel of route control messages.
pub const CHANNEL_CONTROL: u16 = 0x0100;
/// Link channel of route data packets.
pub const CHANNEL_DATA: u16 = 0x0101;
/// Largest datagram a session carries: a link message minus the data
/// header, the session's overhead and the datagram's port.
pub const DATAGRAM_LEN_MAX: usize =
    65_516 - DATA_HEADER_LEN - session::PACKET_OVERHEAD - DATAGRAM_PORT_LEN;

/// Fixed nonces of the two things a reply key seals at most once each.
const FAIL_NONCE: [u8; 12] = [0xfa; 12];
const NOTE_NONCE: [u8; 12] = [0xfb; 12];

/// The time, twice: a monotonic instant for timers, and the wall clock in
/// Unix milliseconds for what crosses the network.
pub use fogwire_env::Now;

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
    /// SETUPs a neighbour may send in a burst…
    pub setups_per_neighbour_burst: u32,
    /// …then one per this interval; beyond, they are refused (`Busy`)
    /// before any cryptography is spent on them.
    pub setups_per_neighbour_interval: Duration,
    /// Most rules one neighbour may hold as their previous hop (its share
    /// of `rules_max`).
    pub rules_per_neighbour_max: usize,
    /// Most setup layers remembered against replay (20 minutes at most
    /// each), and most of them brought by one neighbour.
    pub remembered_max: usize,
    pub remembered_per_neighbour_max: usize,
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
            setups_per_neighbour_burst: 256,
            setups_per_neighbour_interval: Duration::from_millis(10),
            rules_per_neighbour_max: 4096,
            remembered_max: 262_144,
            remembered_per_neighbour_max: 16_384,
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
    #[error("the route is not up")]
    NotUp,
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
    rules: RuleTable,
    routes: SourceRoutes,
    sessions: Sessions,
    next_tick: Option<Instant>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    random: RandomSource,
    /// SETUPs per neighbour (governor, on milliseconds since `started`).
    setup_rates: KeyedRate<NodeId>,
    started: Option<Instant>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("node", &self.identity.node_id())
            .field("rules", &self.rules.len())
            .field("routes", &self.routes.ids().len())
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

/// Where a router gets its random bytes (labels, reply keys, route tags,
/// session tokens, and the keys of its end-to-end handshakes): the OS by
/// default. A seeded source makes a simulation replay exactly; never use
/// one outside tests.
pub use fogwire_env::RandomSource;

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

impl Router {
    pub fn new(identity: Arc<LinkIdentity>, config: Config) -> Self {
        Self {
            sessions: Sessions::new(config.stream.clone()),
            identity,
            links: HashSet::new(),
            rules: RuleTable::default(),
            routes: SourceRoutes::new(),
            next_tick: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            random: fogwire_env::os_random(),
            setup_rates: KeyedRate::new(
                config.setups_per_neighbour_burst,
                config.setups_per_neighbour_interval,
            ),
            started: None,
            config,
        }
    }

    /// Whether a SETUP from `from` may be opened at all: the neighbour is
    /// within its rate, its share of the rule table, and its share of the
    /// replay memory (and that memory is not full). Cheap, so a flood is
    /// refused before any Diffie–Hellman.
    pub(super) fn admit_setup(&mut self, from: NodeId, now: Instant) -> bool {
        let share = self.rules.share(from);
        if share.rules >= self.config.rules_per_neighbour_max
            || share.remembered >= self.config.remembered_per_neighbour_max
            || self.rules.remembered() >= self.config.remembered_max
        {
            return false;
        }
        let started = *self.started.get_or_insert(now);
        let now_ms = now.saturating_duration_since(started).as_millis() as u64;
        self.setup_rates.check(&from, now_ms)
    }

    /// What neighbour `neighbour` holds of this node's routing state: the
    /// rules it is the previous hop of, and the setup layers it brought
    /// that are still remembered.
    pub fn neighbour_share(&self, neighbour: NodeId) -> (usize, usize) {
        let share = self.rules.share(neighbour);
        (share.rules, share.remembered)
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

    fn allocate_label(&mut self) -> u32 {
        let random = &mut self.random;
        self.rules.allocate(|| {
            let mut bytes = [0u8; 4];
            random(&mut bytes);
            bytes
        })
    }

    /// Session packets this node was an end for that failed to open
    /// (altered on the way, replayed, or too early), and were dropped.
    pub fn session_packets_rejected(&self) -> u64 {
        self.sessions.rejected
    }

    /// The sessions, with what their operations may touch beside them.
    fn sessions_out(&mut self) -> (&mut Sessions, Output<'_>) {
        (
            &mut self.sessions,
            Output {
                rules: &mut self.rules,
                transmits: &mut self.transmits,
                events: &mut self.events,
            },
        )
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
        self.rules.info()
    }

    /// The hops of a route this node opened, if it still exists.
    pub fn route_path(&self, route: RouteId) -> Option<&[NodeId]> {
        self.routes.get(route).map(|r| r.hops.as_slice())
    }

    /// What a route this node opened has carried, across repairs.
    pub fn route_counters(&self, route: RouteId) -> Option<Counters> {
        self.routes.counters(route, &self.rules)
    }

    /// Every route this node opened.
    pub fn routes(&self) -> impl Iterator<Item = RouteInfo> + '_ {
        self.routes.info(&self.rules, &self.sessions)
    }

    /// The node at the other end of a session.
    pub fn session_peer(&self, session: SessionId) -> Option<NodeId> {
        self.sessions.get(session).map(|s| s.peer)
    }

    /// Whether a session can send now (its route is up).
    pub fn session_is_up(&self, session: SessionId) -> bool {
        self.sessions
            .get(session)
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
        for label in self.rules.over(neighbour) {
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
        let resolver = fogwire_env::NoiseResolver::from_source(&mut self.random);
        let (initiator, first_message) =
            Initiator::start(&self.identity, &destination.link_key, hello, resolver)
                .map_err(|error| OpenError::Build(error.to_string()))?;
        let headers: Vec<(u64, [u8; 32], [u8; 16])> = hops
            .iter()
            .map(|_| (now.unix_ms, self.random(), self.random()))
            .collect();
        let keyed: Vec<(NodeId, [u8; 32])> = hops.iter().map(|h| (h.node, h.link_key)).collect();
        let onion = onion::build(&keyed, &headers, &first_message, &mut self.random)
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
        let route = self.routes.next_id();
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
        let state = self.setting_state(setup, initiator, now.instant);
        Ok(self.routes.insert(SourceRoute {
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
        }))
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
        let entry = self.routes.get(route).ok_or(OpenError::UnknownRoute)?;
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
        if let Some(entry) = self.routes.get_mut(route) {
            entry.hops = hops.iter().map(|h| h.node).collect();
            entry.label = Some(label);
            entry.reply_keys = reply_keys;
            entry.route_tags = route_tags;
            entry.state = state;
            entry.receipted = Counters::default();
        }
        Ok(())
    }

    /// Moves a route that is up onto `hops` (a better path, ending at the
    /// same destination): what the old path's relays carried is receipted
    /// to them, the old path is torn down, and the route is set up on the
    /// new one, where its session resumes; its streams pause for the setup
    /// and go on from where they were. [`Event::RouteRepaired`] or
    /// [`Event::RouteBroken`] follows.
    pub fn move_route(&mut self, route: RouteId, hops: &[Hop], now: Now) -> Result<(), OpenError> {
        let entry = self.routes.get(route).ok_or(OpenError::UnknownRoute)?;
        if !matches!(entry.state, RouteState::Up { .. }) {
            return Err(OpenError::NotUp);
        }
        if hops.last().map(|h| h.node) != entry.hops.last().copied() {
            return Err(OpenError::OtherDestination);
        }
        if hops
            .first()
            .is_none_or(|first| !self.links.contains(&first.node))
        {
            return Err(hops
                .first()
                .map_or(OpenError::BadLength, |h| OpenError::NoLink(h.node)));
        }
        self.send_receipts(route, now, true);
        let Some(entry) = self.routes.get_mut(route) else {
            return Err(OpenError::UnknownRoute);
        };
        // Broken first, so that the old rule's removal below reads as this
        // move and not as a break to report.
        entry.state = RouteState::Broken;
        entry.broken_since.get_or_insert(now.instant);
        let old_label = entry.label;
        if let Some(session) = entry.session {
            self.sessions.detach(session, None);
        }
        if let Some(label) = old_label {
            // Not `Closed`: the destination keeps the session for the
            // resume (and drops the old path itself once it resumes).
            self.remove_rule(label, Removal::local(TeardownReason::Expired, now.instant));
        }
        self.repair_route(route, hops, now)
    }

    /// Closes a route this node opened, telling every hop.
    pub fn close_route(&mut self, route: RouteId, now: Now) -> bool {
        if !self.routes.contains(route) {
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
        if !self.routes.contains(route) {
            return false;
        }
        self.end_route(route, RouteEnd::Abandoned(detail.into()), now.instant);
        true
    }

    fn end_route(&mut self, route: RouteId, reason: RouteEnd, now: Instant) {
        let Some(entry) = self.routes.remove(route) else {
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
            self.sessions.end(session, error, &mut self.events);
        }
        self.events.push_back(Event::RouteDown { route, reason });
    }

    /// Closes a session this node is the destination of.
    pub fn close_session(&mut self, session: SessionId, now: Now) -> bool {
        let Some(entry) = self.sessions.get(session) else {
            return false;
        };
        match (entry.end, entry.label) {
            (End::Source(route), _) => return self.close_route(route, now),
            (End::Destination, Some(label)) => {
                self.remove_rule(label, Removal::local(TeardownReason::Closed, now.instant));
            }
            (End::Destination, None) => {
                self.sessions
                    .end(session, StreamError::Cancelled, &mut self.events);
                self.events.push_back(Event::SessionClosed {
                    session,
                    reason: TeardownReason::Closed,
                });
            }
        }
        true
    }

    /// Removes a rule, tells the neighbours on the other sides than the
    /// one the news came from, and updates the route end it belonged to.
    fn remove_rule(&mut self, label: u32, removal: Removal) {
        let Some(rule) = self.rules.remove(label) else {
            return;
        };
        let next_node = rule.next.map(|(node, _)| node);
        if let Some((node, their_label)) = rule.prev
            && Some(node) != removal.from
        {
            // Towards the source, say where the route broke if this hop
            // knows: it lost its link to its next hop, or a hop further on
            // did and said so.
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
        let Some(entry) = self.routes.get_mut(route) else {
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
                self.routes.remove(route);
                self.events.push_back(Event::RouteFailed {
                    route,
                    error: SetupError::TornDown(removal.reason),
                });
            }
            (RouteState::Up { .. }, Some(_))
                if removal.reason == TeardownReason::Closed && removal.from.is_some() =>
            {
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
        let Some(entry) = self.routes.get_mut(route) else {
            return;
        };
        entry.state = RouteState::Broken;
        entry.broken_since.get_or_insert(now);
        let path = entry.hops.clone();
        if let Some(session) = entry.session {
            self.sessions.detach(session, None);
        }
        self.events
            .push_back(Event::RouteBroken { route, path, cause });
    }

    fn destination_rule_gone(&mut self, session_id: SessionId, label: u32, removal: Removal) {
        let Some(session) = self.sessions.get(session_id) else {
            return;
        };
        if session.label != Some(label) {
            return;
        }
        if removal.reason == TeardownReason::Closed {
            self.sessions.detach(session_id, None);
            self.sessions
                .end(session_id, StreamError::SessionClosed, &mut self.events);
            self.events.push_back(Event::SessionClosed {
                session: session_id,
                reason: removal.reason,
            });
        } else {
            // The source may resume it on another path.
            self.sessions
                .detach(session_id, Some((removal.now, removal.reason)));
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
        let session = match self
            .rules
            .forward(from, header, &packet, &mut self.transmits)
        {
            Forward::Relayed | Forward::Dropped => return,
            Forward::Source(route) => {
                let Some(session) = self.routes.get(route).and_then(|r| r.session) else {
                    return;
                };
                session
            }
            Forward::Destination(session) => session,
        };
        let body = packet.slice(DATA_HEADER_LEN..);
        let (sessions, mut out) = self.sessions_out();
        sessions.deliver(session, header.label, &body, now.instant, &mut out);
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
        let (sessions, mut out) = self.sessions_out();
        sessions.send_packet(session, session::KIND_DATAGRAM, &body, &mut out)
    }

    /// Sends an end-to-end ping; [`Event::Pong`] reports its round trip.
    pub fn ping(&mut self, session: SessionId, id: u64, now: Now) -> Result<(), SendError> {
        let (sessions, mut out) = self.sessions_out();
        sessions.ping(session, id, now.instant, &mut out)
    }

    // ----- streams -----

    /// Opens a stream on a session (even one whose route is being
    /// repaired: its data waits).
    pub fn open_stream(&mut self, session: SessionId, now: Now) -> Result<StreamId, SendError> {
        self.sessions.open_stream(session, now.instant)
    }

    /// Queues as much of `data` as the stream has room for and sends what
    /// the windows allow; returns how many bytes were taken. Fewer than
    /// offered means full: [`Event::StreamWritable`] says when to go on.
    pub fn stream_write(
        &mut self,
        session: SessionId,
        stream: StreamId,
        data: &Bytes,
        now: Now,
    ) -> Result<usize, SendError> {
        let (sessions, mut out) = self.sessions_out();
        sessions.write(session, stream, data, now.instant, &mut out)
    }

    /// Ends this side of a stream: a FIN follows the data written.
    pub fn stream_finish(
        &mut self,
        session: SessionId,
        stream: StreamId,
        now: Now,
    ) -> Result<(), SendError> {
        let (sessions, mut out) = self.sessions_out();
        sessions.finish(session, stream, now.instant, &mut out)
    }

    /// The application took `bytes` of a stream's data: the other end may
    /// send that much more.
    pub fn stream_consumed(&mut self, session: SessionId, stream: StreamId, bytes: u64) {
        let (sessions, mut out) = self.sessions_out();
        sessions.consumed(session, stream, bytes, &mut out);
    }

    /// Abandons a stream: the other end hears RESET with `code`.
    pub fn stream_reset(&mut self, session: SessionId, stream: StreamId, code: u8) {
        let (sessions, mut out) = self.sessions_out();
        sessions.reset(session, stream, code, StreamError::Cancelled, &mut out);
    }

    // ----- time -----

    /// When [`Router::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.routes.next_timeout(&self.config),
            self.sessions.next_timer(),
            self.next_tick,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Retransmits setups and stream data, sends keepalives and receipts,
    /// and expires rules, routes and sessions.
    pub fn handle_timeout(&mut self, now: Now) {
        let instant = now.instant;
        for route in self.routes.ids() {
            self.route_timers(route, now);
        }
        let (sessions, mut out) = self.sessions_out();
        sessions.fire_timers(instant, &mut out);
        if self.next_tick.is_some_and(|tick| instant >= tick) {
            // Rule expiry needs no precision; a tick a fifth of the timeout
            // keeps it cheap with many rules. It stops when nothing is left
            // to expire.
            let detached = self.sessions.any_detached();
            self.next_tick = (self.rules.has_expiries() || detached)
                .then(|| instant + self.config.rule_timeout / 5);
            for label in self.rules.expired(instant) {
                self.remove_rule(label, Removal::local(TeardownReason::Expired, instant));
            }
            self.setup_rates.forget_idle();
            let grace = self.config.resume_grace;
            for (session, reason) in self.sessions.detached_too_long(instant, grace) {
                self.sessions.end(
                    session,
                    StreamError::RouteLost("the source did not resume the session".into()),
                    &mut self.events,
                );
                self.events
                    .push_back(Event::SessionClosed { session, reason });
            }
        }
    }

    fn route_timers(&mut self, route: RouteId, now: Now) {
        let instant = now.instant;
        let Some(entry) = self.routes.get_mut(route) else {
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
                    let next = self.rules.get_mut(label).and_then(|rule| {
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
