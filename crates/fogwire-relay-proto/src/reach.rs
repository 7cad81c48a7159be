//! One node's view of whether others can dial it (`relay.md` §1).
//!
//! Every peer tells the node the address it sees the node's side of their
//! link come from (OBSERVED). Each IP address peers see the node at makes a
//! **candidate**: that IP with the node's listening port. A candidate is
//! checked by asking the peers that see the node there to dial it back
//! (DIAL_BACK), one peer at a time. The asked peer dials that IP — only the
//! one it sees, so a node cannot be used to dial a third party — and runs
//! the link handshake until the other end has proven who it is.
//!
//! A peer's word alone never makes an address reachable: the node counts a
//! check as passed only if a connection from the checking peer's address
//! reached its own listener while the check ran (the **evidence**), so a
//! lying peer cannot make a node behind a NAT believe it can be dialed. A
//! peer that says it failed refutes the candidate; a candidate is refuted
//! once as many peers refuted it as the fewer of two and of the peers that
//! see the node there, with none passing. Verdicts are checked again every
//! [`Settings::recheck`].
//!
//! The node is **public** when a candidate on a public IP address passed,
//! **private** when every candidate on a public address was refuted (it is
//! behind a NAT or a firewall), **local** when only peers on private
//! networks know it and it can be dialed there, and **unknown** until then.
//!
//! Bounds: one outstanding check per candidate, [`CANDIDATES_MAX`]
//! candidates, [`PEERS_MAX`] peers; as the checked side, at most
//! [`Settings::serve_per_peer`] checks per peer per
//! [`Settings::serve_window`] and [`Settings::serve_in_flight_max`] at
//! once — beyond them the answer is REFUSED at once, for nothing.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fogwire_identity::NodeId;

use crate::wire::{DialOutcome, Message};

/// Candidate addresses kept at once.
pub const CANDIDATES_MAX: usize = 16;
/// Peers whose observations and checks are kept (links are fewer).
pub const PEERS_MAX: usize = 4096;
/// Messages waiting to be sent; beyond, the oldest are dropped (every
/// message is repeated or answered by a timeout).
const TRANSMITS_MAX: usize = 1024;
/// Addresses an advert names at most.
pub const ADVERTISED_MAX: usize = 8;

/// How a node checks itself and answers others' checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The port this node accepts links on: the one DIAL_BACK names.
    pub listen_port: u16,
    /// How long an asked peer has to answer a check.
    pub answer_timeout: Duration,
    /// How long a verdict holds before it is checked again.
    pub recheck: Duration,
    /// Checks one peer may ask of this node per `serve_window`.
    pub serve_per_peer: usize,
    pub serve_window: Duration,
    /// Checks this node runs for others at once.
    pub serve_in_flight_max: usize,
}

impl Settings {
    pub fn new(listen_port: u16) -> Self {
        Self {
            listen_port,
            answer_timeout: Duration::from_secs(20),
            recheck: Duration::from_secs(30 * 60),
            serve_per_peer: 4,
            serve_window: Duration::from_secs(10 * 60),
            serve_in_flight_max: 8,
        }
    }
}

/// Whether others can dial this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reachability {
    /// Not checked yet, or no verdict.
    Unknown,
    /// Dialed at a public address.
    Public,
    /// Peers on public addresses cannot dial it: behind a NAT or firewall.
    Private,
    /// Only peers on private networks know it, and they can dial it.
    Local,
}

impl Reachability {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Public => "public",
            Self::Private => "private",
            Self::Local => "local",
        }
    }
}

/// Where the check of one candidate stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressState {
    Checking,
    /// A peer dialed it, and its connection arrived.
    Confirmed,
    /// Peers could not dial it.
    Refuted,
}

impl AddressState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Checking => "checking",
            Self::Confirmed => "confirmed",
            Self::Refuted => "refuted",
        }
    }
}

/// One candidate, for reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressReport {
    pub address: SocketAddr,
    pub public: bool,
    pub state: AddressState,
    /// Linked peers that see this node at the address's IP.
    pub seen_by: usize,
    pub confirmed_by: Vec<NodeId>,
    pub refuted_by: Vec<NodeId>,
}

/// What the node knows of its reachability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub reachability: Reachability,
    pub addresses: Vec<AddressReport>,
    /// Checks this node is running for others now.
    pub serving: usize,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Dial `address` and run the link handshake until the answering node
    /// proves it is `peer`, then hang up; report with [`Reach::probe_done`].
    Probe {
        peer: NodeId,
        nonce: u64,
        address: SocketAddr,
    },
}

#[derive(Debug)]
struct Peer {
    /// The IP address its link comes from.
    remote_ip: IpAddr,
    /// Where it says it sees this node.
    sees_us_at: Option<SocketAddr>,
    /// When it asked for checks, within the window.
    served: VecDeque<Instant>,
    /// The check run for it now.
    serving: Option<u64>,
}

#[derive(Debug)]
struct Ask {
    peer: NodeId,
    nonce: u64,
    deadline: Instant,
    /// A connection from the asked peer's address arrived meanwhile.
    evidence: bool,
}

#[derive(Debug)]
struct Candidate {
    confirmed_by: BTreeSet<NodeId>,
    refuted_by: BTreeSet<NodeId>,
    /// Peers asked this round (they are not asked again before the next).
    asked: BTreeSet<NodeId>,
    ask: Option<Ask>,
    /// When this round's verdict was reached; the next round starts
    /// `recheck` later.
    decided_at: Option<Instant>,
    /// The last round's verdict, shown until this round has one.
    verdict: Option<AddressState>,
}

impl Candidate {
    fn new() -> Self {
        Self {
            confirmed_by: BTreeSet::new(),
            refuted_by: BTreeSet::new(),
            asked: BTreeSet::new(),
            ask: None,
            decided_at: None,
            verdict: None,
        }
    }

    /// This round's verdict, if it has one.
    fn decided(&self, seen_by: usize) -> Option<AddressState> {
        if !self.confirmed_by.is_empty() {
            Some(AddressState::Confirmed)
        } else if !self.refuted_by.is_empty() && self.refuted_by.len() >= seen_by.clamp(1, 2) {
            Some(AddressState::Refuted)
        } else {
            None
        }
    }

    /// Keeps this round's verdict once there is one: a peer that starts
    /// seeing the node there later asks for one more refutation, but until
    /// it answers the verdict stands (a node does not flip back to unknown
    /// each time a peer links).
    fn settle(&mut self, seen_by: usize, now: Instant) {
        if let Some(state) = self.decided(seen_by) {
            self.verdict = Some(state);
            self.decided_at.get_or_insert(now);
        }
    }

    fn state(&self, seen_by: usize) -> AddressState {
        self.decided(seen_by)
            .or(self.verdict)
            .unwrap_or(AddressState::Checking)
    }
}

/// One node's reachability: see the module documentation.
#[derive(Debug)]
pub struct Reach {
    settings: Settings,
    peers: BTreeMap<NodeId, Peer>,
    candidates: BTreeMap<IpAddr, Candidate>,
    transmits: VecDeque<(NodeId, Bytes)>,
    actions: VecDeque<Action>,
    nonce_key: u64,
    nonces: u64,
    /// What the last [`Reach::take_changed`] saw.
    shown: (Reachability, Vec<SocketAddr>),
}

impl Reach {
    /// `nonce_key` makes this node's check nonces its own (randomness from
    /// the driver).
    pub fn new(settings: Settings, nonce_key: u64) -> Self {
        Self {
            settings,
            peers: BTreeMap::new(),
            candidates: BTreeMap::new(),
            transmits: VecDeque::new(),
            actions: VecDeque::new(),
            nonce_key,
            nonces: 0,
            shown: (Reachability::Unknown, Vec::new()),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// A link to `peer` came up, its other end at `remote`: tell it where
    /// this node sees it.
    pub fn link_up(&mut self, peer: NodeId, remote: SocketAddr, now: Instant) {
        let remote = canonical(remote);
        if !self.peers.contains_key(&peer) && self.peers.len() >= PEERS_MAX {
            return;
        }
        let entry = self.peers.entry(peer).or_insert_with(|| Peer {
            remote_ip: remote.ip(),
            sees_us_at: None,
            served: VecDeque::new(),
            serving: None,
        });
        entry.remote_ip = remote.ip();
        self.send(peer, Message::Observed(remote));
        self.schedule(now);
    }

    pub fn link_down(&mut self, peer: NodeId, now: Instant) {
        self.peers.remove(&peer);
        for candidate in self.candidates.values_mut() {
            if candidate.ask.as_ref().is_some_and(|ask| ask.peer == peer) {
                candidate.ask = None;
            }
        }
        self.schedule(now);
    }

    /// A message from `peer` on the reachability channel (those about
    /// relays are [`crate::relays`]' and are passed over).
    pub fn handle_message(&mut self, peer: NodeId, message: Message, now: Instant) {
        if !self.peers.contains_key(&peer) {
            // Its link is gone (or was never announced): nothing to do.
            return;
        }
        match message {
            Message::Observed(address) => self.observed(peer, canonical(address)),
            Message::DialBack { nonce, port } => self.dial_back(peer, nonce, port, now),
            Message::DialBackResult { nonce, outcome } => {
                self.result(peer, nonce, Some(outcome), now)
            }
            Message::Reserve { .. } | Message::Reservation { .. } => return,
        }
        self.schedule(now);
    }

    /// A connection from `remote` reached this node's listener: evidence
    /// for a check asked of a peer at that address.
    pub fn accepted(&mut self, remote: SocketAddr) {
        let ip = canonical(remote).ip();
        for candidate in self.candidates.values_mut() {
            if let Some(ask) = &mut candidate.ask
                && self
                    .peers
                    .get(&ask.peer)
                    .is_some_and(|peer| peer.remote_ip == ip)
            {
                ask.evidence = true;
            }
        }
    }

    /// The probe of [`Action::Probe`] with `nonce`, run for `peer`, ended.
    pub fn probe_done(&mut self, peer: NodeId, nonce: u64, outcome: DialOutcome) {
        if let Some(entry) = self.peers.get_mut(&peer)
            && entry.serving == Some(nonce)
        {
            entry.serving = None;
            self.send(peer, Message::DialBackResult { nonce, outcome });
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let asks = self
            .candidates
            .values()
            .filter_map(|candidate| candidate.ask.as_ref().map(|ask| ask.deadline));
        let rechecks = self
            .candidates
            .values()
            .filter_map(|candidate| candidate.decided_at.map(|at| at + self.settings.recheck));
        asks.chain(rechecks).min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<(NodeId, u64)> = self
            .candidates
            .values()
            .filter_map(|candidate| candidate.ask.as_ref())
            .filter(|ask| ask.deadline <= now)
            .map(|ask| (ask.peer, ask.nonce))
            .collect();
        for (peer, nonce) in expired {
            self.result(peer, nonce, None, now);
        }
        let recheck = self.settings.recheck;
        let seen = self.seen_by();
        self.candidates.retain(|ip, candidate| {
            let Some(decided_at) = candidate.decided_at else {
                return true;
            };
            if decided_at + recheck > now {
                return true;
            }
            // A new round; an address nobody sees any more goes.
            let seen_by = seen.get(ip).copied().unwrap_or(0);
            candidate.verdict = candidate.decided(seen_by).or(candidate.verdict);
            candidate.confirmed_by.clear();
            candidate.refuted_by.clear();
            candidate.asked.clear();
            candidate.decided_at = None;
            seen_by > 0
        });
        self.schedule(now);
    }

    pub fn poll_transmit(&mut self) -> Option<(NodeId, Bytes)> {
        self.transmits.pop_front()
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Whether the reachability or the advertised addresses changed since
    /// the last call.
    pub fn take_changed(&mut self) -> bool {
        let now = (self.reachability(), self.advertised());
        if now == self.shown {
            return false;
        }
        self.shown = now;
        true
    }

    pub fn reachability(&self) -> Reachability {
        let states = self.states();
        let (public, private): (Vec<_>, Vec<_>) =
            states.iter().partition(|(ip, _, _)| is_public(*ip));
        let any = |states: &[&(IpAddr, usize, AddressState)], wanted| {
            states.iter().any(|(_, _, state)| *state == wanted)
        };
        if any(&public, AddressState::Confirmed) {
            Reachability::Public
        } else if !public.is_empty()
            && public
                .iter()
                .all(|(_, _, state)| *state == AddressState::Refuted)
        {
            Reachability::Private
        } else if public.is_empty() && any(&private, AddressState::Confirmed) {
            Reachability::Local
        } else {
            Reachability::Unknown
        }
    }

    /// The addresses others dialed this node at: public ones first.
    pub fn advertised(&self) -> Vec<SocketAddr> {
        let mut confirmed: Vec<SocketAddr> = self
            .states()
            .into_iter()
            .filter(|(_, _, state)| *state == AddressState::Confirmed)
            .map(|(ip, _, _)| SocketAddr::new(ip, self.settings.listen_port))
            .collect();
        confirmed.sort_by_key(|address| (!is_public(address.ip()), *address));
        confirmed.truncate(ADVERTISED_MAX);
        confirmed
    }

    pub fn report(&self) -> Report {
        let addresses = self
            .states()
            .into_iter()
            .map(|(ip, seen_by, state)| {
                let candidate = &self.candidates[&ip];
                AddressReport {
                    address: SocketAddr::new(ip, self.settings.listen_port),
                    public: is_public(ip),
                    state,
                    seen_by,
                    confirmed_by: candidate.confirmed_by.iter().copied().collect(),
                    refuted_by: candidate.refuted_by.iter().copied().collect(),
                }
            })
            .collect();
        Report {
            reachability: self.reachability(),
            addresses,
            serving: self
                .peers
                .values()
                .filter(|peer| peer.serving.is_some())
                .count(),
        }
    }

    fn send(&mut self, peer: NodeId, message: Message) {
        if self.transmits.len() >= TRANSMITS_MAX {
            self.transmits.pop_front();
        }
        self.transmits
            .push_back((peer, Bytes::from(message.encode())));
    }

    /// Each candidate's IP, how many linked peers see this node there, and
    /// where its check stands.
    fn states(&self) -> Vec<(IpAddr, usize, AddressState)> {
        let seen = self.seen_by();
        self.candidates
            .iter()
            .map(|(ip, candidate)| {
                let seen_by = seen.get(ip).copied().unwrap_or(0);
                (*ip, seen_by, candidate.state(seen_by))
            })
            .collect()
    }

    /// How many linked peers see this node at each IP.
    fn seen_by(&self) -> BTreeMap<IpAddr, usize> {
        let mut seen = BTreeMap::new();
        for peer in self.peers.values() {
            if let Some(at) = peer.sees_us_at {
                *seen.entry(at.ip()).or_insert(0) += 1;
            }
        }
        seen
    }

    fn observed(&mut self, peer: NodeId, address: SocketAddr) {
        let ip = address.ip();
        if ip.is_unspecified() || ip.is_multicast() {
            return;
        }
        if let Some(entry) = self.peers.get_mut(&peer) {
            entry.sees_us_at = Some(address);
        }
        if self.candidates.contains_key(&ip) {
            return;
        }
        if self.candidates.len() >= CANDIDATES_MAX {
            // Room only by dropping an address nobody sees any more.
            let seen = self.seen_by();
            let Some(stale) = self
                .candidates
                .keys()
                .find(|ip| !seen.contains_key(ip))
                .copied()
            else {
                return;
            };
            self.candidates.remove(&stale);
        }
        self.candidates.insert(ip, Candidate::new());
    }

    /// `peer` asks to be dialed back at `port`.
    fn dial_back(&mut self, peer: NodeId, nonce: u64, port: u16, now: Instant) {
        let busy = self.peers.values().filter(|p| p.serving.is_some()).count();
        let window = self.settings.serve_window;
        let per_peer = self.settings.serve_per_peer;
        let in_flight_max = self.settings.serve_in_flight_max;
        let Some(entry) = self.peers.get_mut(&peer) else {
            return;
        };
        while entry
            .served
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= window)
        {
            entry.served.pop_front();
        }
        if entry.serving.is_some() || entry.served.len() >= per_peer || busy >= in_flight_max {
            self.send(
                peer,
                Message::DialBackResult {
                    nonce,
                    outcome: DialOutcome::Refused,
                },
            );
            return;
        }
        entry.served.push_back(now);
        entry.serving = Some(nonce);
        let address = SocketAddr::new(entry.remote_ip, port);
        self.actions.push_back(Action::Probe {
            peer,
            nonce,
            address,
        });
    }

    /// The answer to a check asked of `peer` (none: it timed out).
    fn result(&mut self, peer: NodeId, nonce: u64, outcome: Option<DialOutcome>, now: Instant) {
        let seen = self.seen_by();
        let Some((ip, candidate)) = self.candidates.iter_mut().find(|(_, candidate)| {
            candidate
                .ask
                .as_ref()
                .is_some_and(|ask| ask.peer == peer && ask.nonce == nonce)
        }) else {
            return;
        };
        let Some(ask) = candidate.ask.take() else {
            return;
        };
        candidate.asked.insert(peer);
        if ask.evidence {
            // Its connection arrived: whatever it says, the address works.
            candidate.confirmed_by.insert(peer);
        } else {
            match outcome {
                Some(DialOutcome::Unreachable | DialOutcome::WrongNode) => {
                    candidate.refuted_by.insert(peer);
                }
                // "Reached" with no connection seen proves nothing; a
                // refusal or silence says nothing.
                Some(DialOutcome::Reached | DialOutcome::Refused) | None => {}
            }
        }
        let seen_by = seen.get(ip).copied().unwrap_or(0);
        candidate.settle(seen_by, now);
    }

    /// Asks the next peer for each candidate without a verdict this round.
    fn schedule(&mut self, now: Instant) {
        let seen = self.seen_by();
        let mut asks = Vec::new();
        for (ip, candidate) in &mut self.candidates {
            let seen_by = seen.get(ip).copied().unwrap_or(0);
            // (Peers that left can decide a round too.)
            candidate.settle(seen_by, now);
            if candidate.decided(seen_by).is_some() {
                continue;
            }
            if candidate.ask.is_some() {
                continue;
            }
            let next = self.peers.iter().find(|(id, peer)| {
                peer.sees_us_at.is_some_and(|at| at.ip() == *ip) && !candidate.asked.contains(*id)
            });
            if let Some((id, _)) = next {
                asks.push((*ip, *id));
            }
        }
        for (ip, peer) in asks {
            self.nonces += 1;
            let nonce = mix(self.nonces ^ self.nonce_key);
            if let Some(candidate) = self.candidates.get_mut(&ip) {
                candidate.ask = Some(Ask {
                    peer,
                    nonce,
                    deadline: now + self.settings.answer_timeout,
                    evidence: false,
                });
            }
            let port = self.settings.listen_port;
            self.send(peer, Message::DialBack { nonce, port });
        }
    }
}

/// An IPv4 address that a dual-stack socket shows as IPv6 is the IPv4 one.
fn canonical(address: SocketAddr) -> SocketAddr {
    SocketAddr::new(address.ip().to_canonical(), address.port())
}

/// Whether peers across the internet could know `ip`: anything but
/// loopback, unspecified, private (RFC 1918), shared (RFC 6598),
/// link-local and unique-local addresses.
pub fn is_public(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(ip) => {
            let [a, b, ..] = ip.octets();
            !(ip.is_loopback()
                || ip.is_unspecified()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_broadcast()
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(ip) => {
            let first = ip.segments()[0];
            !(ip.is_loopback()
                || ip.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// splitmix64's finaliser: distinct counters give unrelated nonces.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests;
