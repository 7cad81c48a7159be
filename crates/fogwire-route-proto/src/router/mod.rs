//! Routes: label-switched paths set up in one round trip, forwarded by
//! every hop, with end-to-end sessions at their ends.
//!
//! One [`Router`] per node holds the rule table and the node's route ends.
//! Sans-IO: messages from neighbours and the time come in through
//! `handle_*`, messages to neighbours come out of [`Router::poll_transmit`],
//! and what the application should know comes out of
//! [`Router::poll_event`]. The byte layouts are in `message`, `onion` and
//! `session`, and in `docs/protocol/routing.md`.

pub mod message;
pub mod onion;
pub mod session;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
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
use session::{Initiator, SessionCipher};

/// Link channel of route control messages.
pub const CHANNEL_CONTROL: u16 = 0x0100;
/// Link channel of route data packets.
pub const CHANNEL_DATA: u16 = 0x0101;
/// Largest datagram a session carries: a link message minus the data
/// header and the session's overhead.
pub const DATAGRAM_LEN_MAX: usize = 65_516 - DATA_HEADER_LEN - session::PACKET_OVERHEAD;

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

/// Why a route could not be started.
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
}

/// Why a datagram or ping was not sent.
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
    RouteFailed {
        route: RouteId,
        error: SetupError,
    },
    /// A route that was up is gone.
    RouteDown {
        route: RouteId,
        reason: TeardownReason,
    },
    /// A route to this node was set up by `peer`.
    SessionOpened {
        session: SessionId,
        peer: NodeId,
    },
    /// A session this node was the destination of has ended.
    SessionClosed {
        session: SessionId,
        reason: TeardownReason,
    },
    Datagram {
        session: SessionId,
        data: Bytes,
    },
    Pong {
        session: SessionId,
        id: u64,
        rtt: Duration,
    },
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
}

#[derive(Debug)]
enum RouteState {
    Setting {
        setup: Bytes,
        sent_at: Instant,
        started_at: Instant,
        retransmit_at: Instant,
        retransmit_every: Duration,
        initiator: Initiator,
    },
    Up {
        session: SessionId,
        keepalive_at: Instant,
        last_echo: Instant,
        keepalive_seq: u32,
    },
}

#[derive(Debug)]
struct SourceRoute {
    path: Vec<NodeId>,
    label: u32,
    reply_keys: Vec<[u8; 32]>,
    state: RouteState,
}

#[derive(Debug)]
struct Session {
    peer: NodeId,
    label: u32,
    cipher: SessionCipher,
    pings: VecDeque<(u64, Instant)>,
}

/// Pings in flight per session whose send time is remembered.
const PINGS_MAX: usize = 64;

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
    next_route: RouteId,
    next_session: SessionId,
    next_tick: Option<Instant>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("node", &self.identity.node_id())
            .field("rules", &self.rules.len())
            .field("routes", &self.routes.len())
            .finish_non_exhaustive()
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // Without randomness keys would be predictable; the OS generator
    // failing is not something to carry on through.
    if getrandom::fill(&mut bytes).is_err() {
        std::process::abort();
    }
    bytes
}

fn seal_reason(reply_key: &[u8; 32], reason: FailReason) -> [u8; SEALED_REASON_LEN] {
    let mut out = [0u8; SEALED_REASON_LEN];
    out[0] = reason.code();
    if let Ok(key) = UnboundKey::new(&CHACHA20_POLY1305, reply_key).map(LessSafeKey::new) {
        // A reply key seals exactly one failure: a fixed nonce is safe.
        let nonce = Nonce::assume_unique_for_key([0xfa; 12]);
        if let Ok(tag) = key.seal_in_place_separate_tag(nonce, Aad::empty(), &mut out[..1]) {
            out[1..].copy_from_slice(tag.as_ref());
        }
    }
    out
}

fn open_reason(reply_key: &[u8; 32], sealed: &[u8; SEALED_REASON_LEN]) -> Option<FailReason> {
    let key = UnboundKey::new(&CHACHA20_POLY1305, reply_key)
        .map(LessSafeKey::new)
        .ok()?;
    let mut buffer = *sealed;
    let nonce = Nonce::assume_unique_for_key([0xfa; 12]);
    let plain = key.open_in_place(nonce, Aad::empty(), &mut buffer).ok()?;
    FailReason::from_code(plain[0])
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
            next_route: 1,
            next_session: 1,
            next_tick: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.identity.node_id()
    }

    /// Rules held now (routes through, from and to this node).
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Every rule: its label, neighbours, route tag and counters.
    pub fn rules(&self) -> impl Iterator<Item = RuleInfo> + '_ {
        self.rules.iter().map(|(label, rule)| RuleInfo {
            label: *label,
            prev: rule.prev.map(|(node, _)| node),
            next: rule.next.map(|(node, _)| node),
            route_tag: rule.route_tag,
            counters: rule.counters,
        })
    }

    /// The path of a route this node opened, if it still exists.
    pub fn route_path(&self, route: RouteId) -> Option<&[NodeId]> {
        self.routes.get(&route).map(|r| r.path.as_slice())
    }

    /// The counters of a route this node opened.
    pub fn route_counters(&self, route: RouteId) -> Option<Counters> {
        let label = self.routes.get(&route)?.label;
        self.rules.get(&label).map(|rule| rule.counters)
    }

    // ----- links -----

    pub fn link_up(&mut self, neighbour: NodeId) {
        self.links.insert(neighbour);
    }

    /// The link to `neighbour` is gone: every route over it is torn down,
    /// and both directions are told at once.
    pub fn link_down(&mut self, neighbour: NodeId) {
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
            self.remove_rule(label, Some(neighbour), TeardownReason::LinkDown);
        }
    }

    // ----- opening routes -----

    /// Starts setting up a route along `hops` (the first is a neighbour,
    /// the last the destination). [`Event::RouteUp`] or
    /// [`Event::RouteFailed`] follows.
    pub fn open_route(&mut self, hops: &[Hop], now: Now) -> Result<RouteId, OpenError> {
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
        let (initiator, first_message) = Initiator::start(&self.identity, &destination.link_key)
            .map_err(|error| OpenError::Build(error.to_string()))?;
        let headers: Vec<(u64, [u8; 32], [u8; 16])> = hops
            .iter()
            .map(|_| (now.unix_ms, random(), random()))
            .collect();
        let keyed: Vec<(NodeId, [u8; 32])> = hops.iter().map(|h| (h.node, h.link_key)).collect();
        let onion = onion::build(&keyed, &headers, &first_message)
            .map_err(|error| OpenError::Build(error.to_string()))?;
        let route = self.next_route;
        self.next_route += 1;
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
            },
        );
        self.arm_tick(now.instant);
        self.transmits.push_back(Transmit::Control {
            to: first,
            message: setup.clone(),
        });
        self.routes.insert(
            route,
            SourceRoute {
                path: hops.iter().map(|h| h.node).collect(),
                label,
                reply_keys: headers.iter().map(|(_, key, _)| *key).collect(),
                state: RouteState::Setting {
                    setup,
                    sent_at: now.instant,
                    started_at: now.instant,
                    retransmit_at: now.instant + self.config.setup_retransmit,
                    retransmit_every: self.config.setup_retransmit,
                    initiator,
                },
            },
        );
        Ok(route)
    }

    /// Closes a route this node opened, telling every hop.
    pub fn close_route(&mut self, route: RouteId) -> bool {
        let Some(label) = self.routes.get(&route).map(|r| r.label) else {
            return false;
        };
        self.remove_rule(label, None, TeardownReason::Closed);
        true
    }

    /// Closes a session this node is the destination of.
    pub fn close_session(&mut self, session: SessionId) -> bool {
        let Some(label) = self.sessions.get(&session).map(|s| s.label) else {
            return false;
        };
        self.remove_rule(label, None, TeardownReason::Closed);
        true
    }

    /// Ends a setup in progress with `error`. The route entry goes first,
    /// so that removing its rule (which tells the hops) reports nothing
    /// else about it.
    fn abandon_setup(&mut self, route: RouteId, label: u32, error: SetupError) {
        self.routes.remove(&route);
        self.remove_rule(label, None, TeardownReason::Closed);
        self.events.push_back(Event::RouteFailed { route, error });
    }

    fn add_session(&mut self, peer: NodeId, label: u32, keys: session::SessionKeys) -> SessionId {
        let session = self.next_session;
        self.next_session += 1;
        self.sessions.insert(
            session,
            Session {
                peer,
                label,
                cipher: SessionCipher::new(keys),
                pings: VecDeque::new(),
            },
        );
        session
    }

    fn allocate_label(&mut self) -> u32 {
        loop {
            let label = u32::from_be_bytes(random());
            if label != 0 && !self.rules.contains_key(&label) {
                return label;
            }
        }
    }

    /// Removes a rule and tells the neighbours on the other sides than
    /// `from` (the side the news came from, if any).
    fn remove_rule(&mut self, label: u32, from: Option<NodeId>, reason: TeardownReason) {
        let Some(rule) = self.rules.remove(&label) else {
            return;
        };
        if let Some((node, their_label)) = rule.prev {
            self.by_previous.remove(&(node, their_label));
            if Some(node) != from {
                self.send_control(
                    node,
                    Control::Teardown {
                        label: their_label,
                        reason,
                    },
                );
            }
        }
        if let Some((node, Some(their_label))) = rule.next
            && Some(node) != from
        {
            self.send_control(
                node,
                Control::Teardown {
                    label: their_label,
                    reason,
                },
            );
        }
        match rule.role {
            Role::Relay => {}
            Role::Source(route) => {
                if let Some(ended) = self.routes.remove(&route) {
                    match ended.state {
                        RouteState::Setting { .. } => self.events.push_back(Event::RouteFailed {
                            route,
                            error: SetupError::TornDown(reason),
                        }),
                        RouteState::Up { session, .. } => {
                            self.sessions.remove(&session);
                            self.events.push_back(Event::RouteDown { route, reason });
                        }
                    }
                }
            }
            Role::Destination(session) => {
                if self.sessions.remove(&session).is_some() {
                    self.events
                        .push_back(Event::SessionClosed { session, reason });
                }
            }
        }
    }

    fn send_control(&mut self, to: NodeId, message: Control) {
        self.transmits.push_back(Transmit::Control {
            to,
            message: message.encode(),
        });
    }

    // ----- control input -----

    /// A control message from neighbour `from`.
    pub fn handle_control(&mut self, from: NodeId, message: Bytes, now: Now) {
        let Ok(message) = Control::decode(message) else {
            return;
        };
        match message {
            Control::Setup { prev_label, onion } => self.on_setup(from, prev_label, &onion, now),
            Control::Confirm {
                to_label,
                from_label,
                blob,
            } => self.on_confirm(from, to_label, from_label, blob, now),
            Control::Fail { to_label, report } => self.on_fail(from, to_label, report),
            Control::Teardown { label, reason } => {
                let known = self.rules.get(&label).is_some_and(|rule| {
                    rule.prev.is_some_and(|(node, _)| node == from)
                        || rule.next.is_some_and(|(node, _)| node == from)
                });
                if known {
                    self.remove_rule(label, Some(from), reason);
                }
            }
            Control::Keepalive { label, seq, echo } => {
                self.on_keepalive(from, label, seq, echo, now)
            }
        }
    }

    fn fail_back(&mut self, to: NodeId, to_label: u32, report: FailReport) {
        self.send_control(to, Control::Fail { to_label, report });
    }

    fn on_setup(&mut self, from: NodeId, prev_label: u32, onion_bytes: &[u8], now: Now) {
        // A retransmission: say again what was said.
        if let Some(label) = self.by_previous.get(&(from, prev_label)).copied() {
            if let Some((to, message)) = self
                .rules
                .get(&label)
                .and_then(|rule| rule.last_setup_message.clone())
            {
                self.transmits.push_back(Transmit::Control { to, message });
            }
            return;
        }
        let (layer, ephemeral) =
            match onion::peel(self.identity.noise_static_private_key(), onion_bytes) {
                Ok(opened) => opened,
                Err(onion::OnionError::Undecryptable) => {
                    return self.fail_back(
                        from,
                        prev_label,
                        FailReport::Clear(FailReason::Undecryptable),
                    );
                }
                Err(_) => {
                    return self.fail_back(
                        from,
                        prev_label,
                        FailReport::Clear(FailReason::Malformed),
                    );
                }
            };
        let sealed = |reason| FailReport::Sealed(seal_reason(&layer.reply_key, reason));
        let skew = self.config.clock_skew_max.as_millis() as u64;
        if layer.issued_at_ms.abs_diff(now.unix_ms) > skew {
            return self.fail_back(from, prev_label, sealed(FailReason::Expired));
        }
        if self.replay.contains_key(&ephemeral) {
            return self.fail_back(from, prev_label, sealed(FailReason::Replayed));
        }
        if self.rules.len() >= self.config.rules_max {
            return self.fail_back(from, prev_label, sealed(FailReason::RulesFull));
        }
        self.replay
            .insert(ephemeral, now.instant + 2 * self.config.clock_skew_max);
        let label = self.allocate_label();
        let mut rule = Rule {
            role: Role::Relay,
            prev: Some((from, prev_label)),
            next: None,
            expires_at: now.instant + self.config.rule_timeout,
            reply_key: layer.reply_key,
            route_tag: layer.route_tag,
            counters: Counters::default(),
            last_setup_message: None,
        };
        match layer.role {
            LayerRole::Relay { next, inner } => {
                if !self.links.contains(&next) || next == from {
                    return self.fail_back(from, prev_label, sealed(FailReason::NoLink));
                }
                let message = Control::Setup {
                    prev_label: label,
                    onion: Bytes::from(inner),
                }
                .encode();
                rule.next = Some((next, None));
                rule.last_setup_message = Some((next, message.clone()));
                self.transmits
                    .push_back(Transmit::Control { to: next, message });
            }
            LayerRole::Destination { end_to_end } => {
                let Ok((peer, reply, keys)) = session::respond(&self.identity, &end_to_end) else {
                    return self.fail_back(from, prev_label, sealed(FailReason::Refused));
                };
                let session = self.add_session(peer, label, keys);
                rule.role = Role::Destination(session);
                let message = Control::Confirm {
                    to_label: prev_label,
                    from_label: label,
                    blob: Bytes::from(reply),
                }
                .encode();
                rule.last_setup_message = Some((from, message.clone()));
                self.transmits
                    .push_back(Transmit::Control { to: from, message });
                self.events
                    .push_back(Event::SessionOpened { session, peer });
            }
        }
        self.by_previous.insert((from, prev_label), label);
        self.rules.insert(label, rule);
        self.arm_tick(now.instant);
    }

    /// Makes sure rule expiry is checked while there are rules.
    fn arm_tick(&mut self, now: Instant) {
        if self.next_tick.is_none() {
            self.next_tick = Some(now + self.config.rule_timeout / 5);
        }
    }

    fn on_confirm(&mut self, from: NodeId, to_label: u32, from_label: u32, blob: Bytes, now: Now) {
        let Some(rule) = self.rules.get_mut(&to_label) else {
            return;
        };
        let Some((next, None)) = rule.next else {
            return;
        };
        if next != from || blob.len() > CONFIRM_BLOB_MAX {
            return;
        }
        rule.next = Some((next, Some(from_label)));
        rule.expires_at = now.instant + self.config.rule_timeout;
        match rule.role {
            Role::Relay => {
                let Some((prev, prev_label)) = rule.prev else {
                    return;
                };
                let message = Control::Confirm {
                    to_label: prev_label,
                    from_label: to_label,
                    blob,
                }
                .encode();
                rule.last_setup_message = Some((prev, message.clone()));
                self.transmits
                    .push_back(Transmit::Control { to: prev, message });
            }
            Role::Source(route) => self.complete_route(route, &blob, now),
            Role::Destination(_) => {}
        }
    }

    fn complete_route(&mut self, route: RouteId, blob: &[u8], now: Now) {
        let Some(entry) = self.routes.get_mut(&route) else {
            return;
        };
        let state = std::mem::replace(
            &mut entry.state,
            RouteState::Up {
                session: 0,
                keepalive_at: now.instant,
                last_echo: now.instant,
                keepalive_seq: 0,
            },
        );
        let RouteState::Setting {
            initiator,
            started_at,
            ..
        } = state
        else {
            entry.state = state;
            return;
        };
        let label = entry.label;
        let peer = entry.path[entry.path.len() - 1];
        let Ok(keys) = initiator.finish(blob) else {
            self.abandon_setup(route, label, SetupError::BadAnswer);
            return;
        };
        let session = self.add_session(peer, label, keys);
        if let Some(entry) = self.routes.get_mut(&route) {
            entry.state = RouteState::Up {
                session,
                keepalive_at: now.instant + self.config.keepalive_interval,
                last_echo: now.instant,
                keepalive_seq: 0,
            };
        }
        self.events.push_back(Event::RouteUp {
            route,
            session,
            setup_time: now.instant.saturating_duration_since(started_at),
        });
    }

    fn on_fail(&mut self, from: NodeId, to_label: u32, report: FailReport) {
        let Some(rule) = self.rules.get(&to_label) else {
            return;
        };
        if rule.next.map(|(node, _)| node) != Some(from) {
            return;
        }
        match rule.role {
            Role::Relay => {
                let report = match report {
                    // Our next hop could not read its layer: say so, sealed,
                    // so the source knows which hop it was.
                    FailReport::Clear(_) => FailReport::Sealed(seal_reason(
                        &rule.reply_key,
                        FailReason::NextUndecryptable,
                    )),
                    sealed => sealed,
                };
                let prev = rule.prev;
                self.rules.remove(&to_label);
                if let Some((prev, prev_label)) = prev {
                    self.by_previous.remove(&(prev, prev_label));
                    self.fail_back(prev, prev_label, report);
                }
            }
            Role::Source(route) => {
                self.rules.remove(&to_label);
                let Some(entry) = self.routes.remove(&route) else {
                    return;
                };
                let error = match report {
                    FailReport::Clear(reason) => SetupError::Hop {
                        index: 0,
                        node: entry.path[0],
                        reason,
                    },
                    FailReport::Sealed(sealed) => entry
                        .reply_keys
                        .iter()
                        .enumerate()
                        .find_map(|(index, key)| {
                            open_reason(key, &sealed).map(|reason| {
                                // "My next hop could not decrypt" names the next hop.
                                let index = if reason == FailReason::NextUndecryptable {
                                    index + 1
                                } else {
                                    index
                                };
                                let index = index.min(entry.path.len() - 1);
                                SetupError::Hop {
                                    index,
                                    node: entry.path[index],
                                    reason: if reason == FailReason::NextUndecryptable {
                                        FailReason::Undecryptable
                                    } else {
                                        reason
                                    },
                                }
                            })
                        })
                        .unwrap_or(SetupError::BadAnswer),
                };
                self.events.push_back(Event::RouteFailed { route, error });
            }
            Role::Destination(_) => {}
        }
    }

    fn on_keepalive(&mut self, from: NodeId, label: u32, seq: u32, echo: bool, now: Now) {
        let timeout = self.config.rule_timeout;
        let Some(rule) = self.rules.get_mut(&label) else {
            return;
        };
        let from_prev = rule.prev.is_some_and(|(node, _)| node == from);
        let from_next = rule.next.is_some_and(|(node, _)| node == from);
        if !(from_prev || from_next) {
            return;
        }
        rule.expires_at = now.instant + timeout;
        let forward = match (rule.role, echo, from_prev) {
            // Outbound, travelling towards the destination.
            (Role::Relay, false, true) => {
                rule.next.and_then(|(node, l)| l.map(|l| (node, l, false)))
            }
            // Echo, travelling back to the source.
            (Role::Relay, true, false) => rule.prev.map(|(node, l)| (node, l, true)),
            // The destination echoes.
            (Role::Destination(_), false, true) => rule.prev.map(|(node, l)| (node, l, true)),
            (Role::Source(route), true, false) => {
                if let Some(SourceRoute {
                    state: RouteState::Up { last_echo, .. },
                    ..
                }) = self.routes.get_mut(&route)
                {
                    *last_echo = now.instant;
                }
                None
            }
            _ => None,
        };
        if let Some((to, their_label, echo)) = forward {
            self.send_control(
                to,
                Control::Keepalive {
                    label: their_label,
                    seq,
                    echo,
                },
            );
        }
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
        let body = packet.slice(DATA_HEADER_LEN..);
        let from_prev = rule.prev.is_some_and(|(node, _)| node == from);
        let from_next = rule.next.is_some_and(|(node, _)| node == from);
        let bytes = packet.len() as u64;
        if from_prev {
            rule.counters.packets_forward += 1;
            rule.counters.bytes_forward += bytes;
        } else if from_next {
            rule.counters.packets_backward += 1;
            rule.counters.bytes_backward += bytes;
        } else {
            return;
        }
        match rule.role {
            Role::Relay => {
                let onward = if from_prev {
                    rule.next.and_then(|(node, label)| label.map(|l| (node, l)))
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
                if !from_next {
                    return;
                }
                let Some(SourceRoute {
                    state: RouteState::Up { session, .. },
                    ..
                }) = self.routes.get(&route)
                else {
                    return;
                };
                let session = *session;
                self.deliver(session, &body, now);
            }
            Role::Destination(session) => {
                if from_prev {
                    self.deliver(session, &body, now);
                }
            }
        }
    }

    fn deliver(&mut self, session_id: SessionId, body: &[u8], now: Now) {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        let Ok((kind, payload)) = session.cipher.open(body) else {
            return;
        };
        match kind {
            session::KIND_DATAGRAM => self.events.push_back(Event::Datagram {
                session: session_id,
                data: Bytes::from(payload),
            }),
            session::KIND_PING => {
                let _ = self.send_packet(session_id, session::KIND_PONG, &payload);
            }
            session::KIND_PONG => {
                let Ok(id) = <[u8; 8]>::try_from(payload.as_slice()).map(u64::from_be_bytes) else {
                    return;
                };
                if let Some(position) = session.pings.iter().position(|(p, _)| *p == id) {
                    let (_, sent) = session.pings.remove(position).unwrap_or((id, now.instant));
                    self.events.push_back(Event::Pong {
                        session: session_id,
                        id,
                        rtt: now.instant.saturating_duration_since(sent),
                    });
                }
            }
            _ => {}
        }
    }

    /// Where a session's packets go: neighbour and its label.
    fn session_next_hop(&self, session: &Session) -> Option<(NodeId, u32)> {
        let rule = self.rules.get(&session.label)?;
        match rule.role {
            Role::Source(_) => rule.next.and_then(|(node, label)| label.map(|l| (node, l))),
            Role::Destination(_) => rule.prev,
            Role::Relay => None,
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
            .get(&session_id)
            .ok_or(SendError::UnknownSession)?;
        let (to, label) = self.session_next_hop(session).ok_or(SendError::NotUp)?;
        let session_label = session.label;
        let session = self
            .sessions
            .get_mut(&session_id)
            .ok_or(SendError::UnknownSession)?;
        let packet = session
            .cipher
            .seal(kind, body)
            .map_err(|_| SendError::Exhausted)?;
        let header = DataHeader {
            label,
            kind: DATA_KIND_SESSION,
            len: packet.len() as u16,
        };
        let bytes = (DATA_HEADER_LEN + packet.len()) as u64;
        if let Some(rule) = self.rules.get_mut(&session_label) {
            // An end counts what it sends as travelling away from it.
            match rule.role {
                Role::Source(_) => {
                    rule.counters.packets_forward += 1;
                    rule.counters.bytes_forward += bytes;
                }
                _ => {
                    rule.counters.packets_backward += 1;
                    rule.counters.bytes_backward += bytes;
                }
            }
        }
        self.transmits.push_back(Transmit::Data {
            to,
            header: header.encode(),
            body: Bytes::from(packet),
        });
        Ok(())
    }

    /// Sends a datagram on a session (unreliable: lost if the route breaks).
    pub fn send_datagram(&mut self, session: SessionId, data: &[u8]) -> Result<(), SendError> {
        if data.len() > DATAGRAM_LEN_MAX {
            return Err(SendError::TooLong { len: data.len() });
        }
        self.send_packet(session, session::KIND_DATAGRAM, data)
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

    /// The node at the other end of a session.
    pub fn session_peer(&self, session: SessionId) -> Option<NodeId> {
        self.sessions.get(&session).map(|s| s.peer)
    }

    // ----- time -----

    /// When [`Router::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let routes = self.routes.values().map(|route| match &route.state {
            RouteState::Setting { retransmit_at, .. } => *retransmit_at,
            RouteState::Up { keepalive_at, .. } => *keepalive_at,
        });
        routes.chain(self.next_tick).min()
    }

    /// Retransmits setups, sends keepalives, and expires rules and routes.
    pub fn handle_timeout(&mut self, now: Now) {
        let instant = now.instant;
        let route_ids: Vec<RouteId> = self.routes.keys().copied().collect();
        for route in route_ids {
            self.route_timers(route, instant);
        }
        if self.next_tick.is_some_and(|tick| instant >= tick) {
            // Rule expiry needs no precision; a tick a fifth of the timeout
            // keeps it cheap with many rules. It stops when nothing is left
            // to expire.
            self.next_tick = (!self.rules.is_empty() || !self.replay.is_empty())
                .then(|| instant + self.config.rule_timeout / 5);
            let expired: Vec<u32> = self
                .rules
                .iter()
                .filter(|(_, rule)| rule.expires_at <= instant)
                .map(|(label, _)| *label)
                .collect();
            for label in expired {
                self.remove_rule(label, None, TeardownReason::Expired);
            }
            self.replay.retain(|_, forget_at| *forget_at > instant);
        }
    }

    fn route_timers(&mut self, route: RouteId, instant: Instant) {
        let Some(entry) = self.routes.get_mut(&route) else {
            return;
        };
        let label = entry.label;
        let first = entry.path[0];
        match &mut entry.state {
            RouteState::Setting {
                setup,
                sent_at,
                started_at,
                retransmit_at,
                retransmit_every,
                ..
            } => {
                if instant >= *started_at + self.config.setup_timeout {
                    let timeout = self.config.setup_timeout;
                    self.abandon_setup(route, label, SetupError::Timeout { timeout });
                } else if instant >= *retransmit_at {
                    *retransmit_every *= 2;
                    *retransmit_at = instant + *retransmit_every;
                    *sent_at = instant;
                    let message = setup.clone();
                    self.transmits
                        .push_back(Transmit::Control { to: first, message });
                }
            }
            RouteState::Up {
                keepalive_at,
                last_echo,
                keepalive_seq,
                ..
            } => {
                if instant >= *last_echo + self.config.broken_after {
                    self.remove_rule(label, None, TeardownReason::Expired);
                } else if instant >= *keepalive_at {
                    *keepalive_at = instant + self.config.keepalive_interval;
                    *keepalive_seq = keepalive_seq.wrapping_add(1);
                    let seq = *keepalive_seq;
                    let next = self.rules.get_mut(&label).and_then(|rule| {
                        rule.expires_at = instant + self.config.rule_timeout;
                        rule.next.and_then(|(node, l)| l.map(|l| (node, l)))
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
                }
            }
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
