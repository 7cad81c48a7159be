//! Membership: SWIM with Lifeguard's suspicion, sans-IO
//! (`docs/protocol/cluster.md` §5).
//!
//! Every protocol period a board probes one member (round robin over a
//! shuffled list): a Ping, and if no Ack comes within the probe timeout,
//! PingReqs through up to three other members. A member that answers
//! neither way by the end of the period is *suspected*; a suspected member
//! that does not refute (by gossiping its record at a higher incarnation)
//! before its suspicion times out is declared *dead*. News rides on the
//! probes as gossip, each update sent a bounded number of times, and is
//! also pushed to three members every gossip interval.
//!
//! From Lifeguard (Dadgar et al., 2017), which cut memberlist's false
//! failure reports by more than 50×:
//! - **Local health.** A board that misses probes, or must refute a
//!   suspicion of itself, is probably the slow one: its multiplier (0..=8)
//!   stretches its own probe period and timeout, so a loaded board stops
//!   accusing healthy ones.
//! - **Dynamic suspicion.** A suspicion starts long (`max`) and shrinks
//!   towards `min` as other members confirm it independently (K = 3), so
//!   one board's bad view never kills a member quickly, and a real failure
//!   seen by all is declared fast.
//! - **Nacks.** A relay that cannot reach a PingReq's target says so, so a
//!   missing nack counts against the requester's own health.
//! - **Buddy.** A Ping to a suspected member carries the suspicion first,
//!   so the member learns of it and refutes at once.
//!
//! Two additions of ours, because membership runs over links: a link to a
//! member going down starts a probe of it at once (a board killed is
//! noticed in a probe timeout, not in a round), and a member suspected by
//! someone else is probed next, so confirmations come within one period.
//!
//! The member list is keyed by node id and bounded ([`Config::members_max`]):
//! a restarted board replaces its own entry (its boot count is higher), and
//! only boards that proved membership with a signed record are ever added.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fogwire_identity::{Keypair, NodeId};

use crate::key::JoinCode;
use crate::member::{MemberRecord, RecordError, Version};
use crate::message::{MESSAGE_LEN_MAX, Message, MessageError, UPDATES_MAX, Update};
use crate::placement::Resources;

/// Lifeguard's expected number of independent confirmations (K).
const CONFIRMATIONS_EXPECTED: usize = 3;
/// Highest local health multiplier.
const HEALTH_MAX: u32 = 8;
/// Most PingReqs relayed for others at once.
const RELAYS_MAX: usize = 64;
/// Most updates piggybacked on one probe message.
const PIGGYBACK_MAX: usize = 24;

/// The knobs of membership. Defaults are memberlist's LAN settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// One probe per period.
    pub probe_interval: Duration,
    /// How long a direct Ping waits for its Ack before PingReqs go out.
    pub probe_timeout: Duration,
    /// Members asked to probe indirectly.
    pub indirect_probes: usize,
    /// Suspicion timeout: `alpha · max(1, log10 n) · probe_interval` at
    /// least, `beta` times that at most.
    pub suspicion_alpha: f64,
    pub suspicion_beta: f64,
    /// How often news is pushed to `gossip_fanout` members.
    pub gossip_interval: Duration,
    pub gossip_fanout: usize,
    /// Each update is sent `retransmit_mult · ceil(log10(n + 1))` times.
    pub retransmit_mult: u32,
    /// How often a dead member is sent a Hello, so that the two sides of a
    /// healed partition find each other again.
    pub rejoin_interval: Duration,
    /// How long a dead member is remembered.
    pub dead_forget: Duration,
    /// Most members (this board included).
    pub members_max: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            indirect_probes: 3,
            suspicion_alpha: 3.0,
            suspicion_beta: 6.0,
            gossip_interval: Duration::from_millis(200),
            gossip_fanout: 3,
            retransmit_mult: 4,
            rejoin_interval: Duration::from_secs(2),
            dead_forget: Duration::from_secs(300),
            members_max: 128,
        }
    }
}

/// What a member is, as this board sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Alive,
    Suspect,
    Dead,
}

impl State {
    pub fn as_str(&self) -> &'static str {
        match self {
            State::Alive => "alive",
            State::Suspect => "suspect",
            State::Dead => "dead",
        }
    }
}

/// One member as this board sees it.
#[derive(Debug, Clone)]
pub struct MemberView {
    pub record: MemberRecord,
    pub state: State,
    /// When the state last changed.
    pub since: Instant,
    /// Whether this board has an admitted link to it.
    pub linked: bool,
}

/// What membership tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A member is alive: new, restarted, or back after a suspicion or a
    /// failure.
    Up(NodeId),
    Suspected(NodeId),
    Failed(NodeId),
    /// A member was forgotten long after it failed.
    Forgotten(NodeId),
    /// This board refuted a suspicion of itself.
    Refuted {
        incarnation: u32,
    },
}

/// What membership asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `bytes` on the cluster channel of the link to `to`.
    Send {
        to: NodeId,
        bytes: Vec<u8>,
    },
    /// Link to this member (no link to it is up).
    Dial {
        node: NodeId,
        addrs: Vec<SocketAddr>,
    },
    Event(Event),
    /// A peer's Hello was refused: the driver logs it (rate limited).
    Refused {
        peer: NodeId,
        reason: Refusal,
    },
}

/// Why a peer was not admitted, or its message not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    #[error(transparent)]
    Message(#[from] MessageError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("its record is signed by {signer}, not by the linked node")]
    NotTheSigner { signer: NodeId },
    #[error("a membership message before the peer proved membership")]
    NotAdmitted,
    #[error("the cluster has {0} members, its most")]
    Full(usize),
}

/// How many messages of each outcome membership saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub received: u64,
    pub refused: u64,
    pub probes: u64,
    pub probes_failed: u64,
    pub refutations: u64,
}

#[derive(Debug)]
struct Entry {
    record: MemberRecord,
    /// The version the state is at (≥ the record's).
    version: Version,
    state: State,
    since: Instant,
    /// Suspicion: who confirmed it (at most K + 1; `since` is when it
    /// was first heard).
    confirmations: BTreeSet<NodeId>,
    /// Suspected by someone else and not yet probed by this board.
    probe_soon: bool,
}

#[derive(Debug)]
struct Probe {
    target: NodeId,
    started: Instant,
    indirect_sent: bool,
    nacks_expected: usize,
    nacks: usize,
    acked: bool,
}

#[derive(Debug)]
struct Relay {
    requester: NodeId,
    their_seq: u32,
    deadline: Instant,
}

#[derive(Debug)]
struct Pending {
    update: Update,
    sent: u32,
}

/// Who this board is, to membership.
#[derive(Debug, Clone)]
pub struct Board {
    pub key: Arc<Keypair>,
    pub join: JoinCode,
    /// How many times the board has started (kept on its disk): a restart
    /// outranks everything said about the board before it.
    pub boot: u64,
    /// Where it listens for links.
    pub addrs: Vec<SocketAddr>,
    /// What it offers to placement.
    pub resources: Resources,
}

/// This board's membership: feed it links, messages and time; take its
/// outputs.
#[derive(Debug)]
pub struct Membership {
    config: Config,
    key: Arc<Keypair>,
    join: JoinCode,
    me: NodeId,
    record: MemberRecord,
    addrs: Vec<SocketAddr>,
    resources: Resources,
    members: BTreeMap<NodeId, Entry>,
    /// Peers linked to this board that proved membership on the link.
    admitted: BTreeSet<NodeId>,
    /// Peers linked, admitted or not yet.
    linked: BTreeSet<NodeId>,
    /// News to gossip, keyed by (subject, originator).
    gossip: BTreeMap<(NodeId, NodeId), Pending>,
    order: Vec<NodeId>,
    order_index: usize,
    /// Probes in progress by seq: the period's, and those started at once
    /// for members whose link went down.
    probes: BTreeMap<u32, Probe>,
    next_probe: Instant,
    next_gossip: Instant,
    next_rejoin: Instant,
    relays: BTreeMap<u32, Relay>,
    next_seq: u32,
    health: u32,
    rng: u64,
    outputs: VecDeque<Output>,
    counters: Counters,
}

impl Membership {
    /// Membership for `board`, started at `now`; `seed` seeds the
    /// shuffles (probe order, gossip targets).
    pub fn new(config: Config, board: Board, seed: u64, now: Instant) -> Self {
        let Board {
            key,
            join,
            boot,
            addrs,
            resources,
        } = board;
        let version = Version {
            boot,
            incarnation: 0,
        };
        let record = MemberRecord::sign(&key, &join, version, &addrs, resources);
        let me = key.node_id();
        Self {
            config,
            key,
            join,
            me,
            record,
            addrs,
            resources,
            members: BTreeMap::new(),
            admitted: BTreeSet::new(),
            linked: BTreeSet::new(),
            gossip: BTreeMap::new(),
            order: Vec::new(),
            order_index: 0,
            probes: BTreeMap::new(),
            next_probe: now,
            next_gossip: now,
            next_rejoin: now,
            relays: BTreeMap::new(),
            next_seq: 1,
            health: 0,
            rng: seed ^ 0x9e37_79b9_7f4a_7c15,
            outputs: VecDeque::new(),
            counters: Counters::default(),
        }
    }

    pub fn me(&self) -> NodeId {
        self.me
    }

    pub fn join(&self) -> &JoinCode {
        &self.join
    }

    /// This board's own record.
    pub fn record(&self) -> &MemberRecord {
        &self.record
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Lifeguard's local health multiplier: 0 is healthy.
    pub fn health(&self) -> u32 {
        self.health
    }

    /// Every member but this board, by node id.
    pub fn members(&self) -> impl Iterator<Item = MemberView> + '_ {
        self.members.iter().map(|(id, entry)| MemberView {
            record: entry.record.clone(),
            state: entry.state,
            since: entry.since,
            linked: self.admitted.contains(id),
        })
    }

    /// The members that hold services: alive or suspected (a suspected
    /// member keeps its services until it is declared dead), and this
    /// board; sorted by node id.
    pub fn live(&self) -> Vec<(NodeId, Resources)> {
        let mut live: Vec<(NodeId, Resources)> = self
            .members
            .iter()
            .filter(|(_, entry)| entry.state != State::Dead)
            .map(|(id, entry)| (*id, entry.record.resources))
            .collect();
        live.push((self.me, self.resources));
        live.sort_by_key(|(id, _)| *id);
        live
    }

    /// Whether `peer` proved membership on its current link.
    pub fn is_admitted(&self, peer: &NodeId) -> bool {
        self.admitted.contains(peer)
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Membership::tick`] must next be called.
    pub fn next_deadline(&self) -> Instant {
        let mut next = self.next_probe.min(self.next_gossip).min(self.next_rejoin);
        for probe in self.probes.values() {
            next = next.min(probe.started + self.probe_interval());
            if !probe.indirect_sent {
                next = next.min(probe.started + self.probe_timeout());
            }
        }
        if let Some(relay) = self.relays.values().map(|relay| relay.deadline).min() {
            next = next.min(relay);
        }
        for entry in self.members.values() {
            if entry.state == State::Suspect {
                next = next.min(entry.since + self.suspicion_timeout(entry.confirmations.len()));
            }
        }
        next
    }

    /// A link to `peer` came up: introduce this board.
    pub fn link_up(&mut self, peer: NodeId) {
        self.linked.insert(peer);
        self.admitted.remove(&peer);
        // Both ends send one: no reply asked.
        self.send_hello(peer, false);
    }

    /// The link to `peer` went down. If it was a live member, probe it now.
    pub fn link_down(&mut self, peer: NodeId, now: Instant) {
        self.linked.remove(&peer);
        self.admitted.remove(&peer);
        let live = self
            .members
            .get(&peer)
            .is_some_and(|entry| entry.state != State::Dead);
        if !live {
            return;
        }
        let current = self
            .probes
            .iter()
            .find(|(_, probe)| probe.target == peer)
            .map(|(seq, probe)| (*seq, probe.indirect_sent || probe.acked));
        match current {
            // Its Ping went down with the link: ask others now.
            Some((seq, false)) => self.send_indirect(seq),
            Some((_, true)) => {}
            None => self.start_probe(peer, now),
        }
    }

    /// A message from `from` on the cluster channel.
    pub fn receive(&mut self, from: NodeId, bytes: &[u8], now: Instant) {
        self.counters.received += 1;
        let message = match Message::decode(bytes) {
            Ok(message) => message,
            Err(error) => return self.refuse(from, error.into()),
        };
        if let Message::Hello {
            record,
            members,
            reply,
        } = message
        {
            return self.hello(from, &record, members, reply, now);
        }
        if !self.admitted.contains(&from) {
            return self.refuse(from, Refusal::NotAdmitted);
        }
        self.apply_all(message.updates().to_vec(), now);
        match message {
            Message::Hello { .. } => {}
            // Seq 0 is gossip pushed without a probe: nobody waits for it.
            Message::Ping { seq: 0, .. } => {}
            Message::Ping { seq, .. } => {
                let updates = self.piggyback(Some(from));
                self.send(from, &Message::Ack { seq, updates });
            }
            Message::Ack { seq, .. } => self.ack(seq, now),
            Message::PingReq { seq, target, .. } => self.relay(from, seq, target, now),
            Message::Nack { seq } => {
                if let Some(probe) = self.probes.get_mut(&seq) {
                    probe.nacks += 1;
                    // Every relay tried and failed, and the direct ping
                    // went unanswered: no need to wait out the period.
                    if !probe.acked && probe.nacks >= probe.nacks_expected {
                        self.finish_probe(seq, now);
                    }
                }
            }
        }
    }

    /// Runs the timers due at `now`.
    pub fn tick(&mut self, now: Instant) {
        self.expire_relays(now);
        self.probe_timers(now);
        self.suspicion_timers(now);
        if now >= self.next_gossip {
            self.next_gossip = now + self.config.gossip_interval;
            self.push_gossip();
        }
        if now >= self.next_rejoin {
            self.next_rejoin = now + self.config.rejoin_interval;
            self.rejoin(now);
        }
    }

    fn refuse(&mut self, peer: NodeId, reason: Refusal) {
        self.counters.refused += 1;
        self.outputs.push_back(Output::Refused { peer, reason });
    }

    fn hello(
        &mut self,
        from: NodeId,
        record: &[u8],
        members: Vec<Update>,
        reply: bool,
        now: Instant,
    ) {
        let record = match MemberRecord::verify(record, &self.join) {
            Ok(record) => record,
            Err(error) => return self.refuse(from, error.into()),
        };
        if record.node != from {
            return self.refuse(
                from,
                Refusal::NotTheSigner {
                    signer: record.node,
                },
            );
        }
        if !self.members.contains_key(&from) && !self.has_room() {
            return self.refuse(from, Refusal::Full(self.config.members_max));
        }
        // The first Hello on a link is answered even unasked: the sender
        // may have joined after the link came up, when the Hello this
        // board sent on it found nobody to take it.
        let first = self.admitted.insert(from);
        self.apply_alive(record, now);
        self.apply_all(members, now);
        if reply || first {
            self.send_hello(from, false);
        }
    }

    fn send_hello(&mut self, peer: NodeId, reply: bool) {
        let mut members = vec![Update::Alive {
            record: self.record.encoded.clone(),
        }];
        let mut size = self.record.encoded.len() + 64;
        for (id, entry) in &self.members {
            let update = match entry.state {
                State::Alive => Update::Alive {
                    record: entry.record.encoded.clone(),
                },
                State::Suspect => Update::Suspect {
                    node: *id.as_bytes(),
                    version: entry.version,
                    by: *self.me.as_bytes(),
                },
                State::Dead => Update::Dead {
                    node: *id.as_bytes(),
                    version: entry.version,
                    by: *self.me.as_bytes(),
                },
            };
            size += update_len(&update);
            if members.len() >= UPDATES_MAX || size > MESSAGE_LEN_MAX {
                break;
            }
            members.push(update);
        }
        let hello = Message::Hello {
            record: self.record.encoded.clone(),
            members,
            reply,
        };
        self.send(peer, &hello);
    }

    fn has_room(&self) -> bool {
        self.members.len() + 1 < self.config.members_max
            || self
                .members
                .values()
                .any(|entry| entry.state == State::Dead)
    }

    /// Makes room for one more by forgetting the longest-dead member.
    fn make_room(&mut self) -> bool {
        if self.members.len() + 1 < self.config.members_max {
            return true;
        }
        let oldest = self
            .members
            .iter()
            .filter(|(_, entry)| entry.state == State::Dead)
            .min_by_key(|(_, entry)| entry.since)
            .map(|(id, _)| *id);
        match oldest {
            Some(id) => {
                self.forget(id);
                true
            }
            None => false,
        }
    }

    fn forget(&mut self, id: NodeId) {
        self.members.remove(&id);
        self.gossip.retain(|(subject, _), _| *subject != id);
        self.outputs.push_back(Output::Event(Event::Forgotten(id)));
    }

    fn apply_all(&mut self, updates: Vec<Update>, now: Instant) {
        for update in updates.into_iter().take(UPDATES_MAX) {
            match update {
                // Gossip repeats records: one already held (the same bytes,
                // verified when they came first) changes nothing, so its
                // signature is not checked again.
                Update::Alive { record } if self.holds(&record) => {}
                Update::Alive { record } => match MemberRecord::verify(&record, &self.join) {
                    Ok(record) => self.apply_alive(record, now),
                    Err(_) => self.counters.refused += 1,
                },
                Update::Suspect { node, version, by } => {
                    if let (Ok(node), Ok(by)) = (NodeId::from_bytes(&node), NodeId::from_bytes(&by))
                    {
                        self.apply_suspect(node, version, by, now);
                    }
                }
                Update::Dead { node, version, by } => {
                    if let (Ok(node), Ok(by)) = (NodeId::from_bytes(&node), NodeId::from_bytes(&by))
                    {
                        self.apply_dead(node, version, by, now);
                    }
                }
            }
        }
    }

    /// Whether `record` is, byte for byte, one held already (this board's
    /// own or a member's).
    fn holds(&self, record: &[u8]) -> bool {
        if record == self.record.encoded.as_slice() {
            return true;
        }
        record
            .get(..32)
            .and_then(|signer| NodeId::from_slice(signer).ok())
            .and_then(|signer| self.members.get(&signer))
            .is_some_and(|entry| entry.record.encoded == record)
    }

    fn apply_alive(&mut self, record: MemberRecord, now: Instant) {
        let id = record.node;
        if id == self.me {
            return;
        }
        let version = record.version;
        let addrs = record.addrs.clone();
        match self.members.get_mut(&id) {
            Some(entry) => {
                // Alive wins only with a newer version (a refutation or a
                // restart), or at the same version over nothing worse.
                if version <= entry.version {
                    return;
                }
                let was = entry.state;
                entry.record = record;
                entry.version = version;
                entry.confirmations.clear();
                entry.probe_soon = false;
                if was != State::Alive {
                    entry.state = State::Alive;
                    entry.since = now;
                    self.outputs.push_back(Output::Event(Event::Up(id)));
                }
            }
            None => {
                if !self.make_room() {
                    self.counters.refused += 1;
                    return;
                }
                self.members.insert(
                    id,
                    Entry {
                        record,
                        version,
                        state: State::Alive,
                        since: now,
                        confirmations: BTreeSet::new(),
                        probe_soon: false,
                    },
                );
                self.outputs.push_back(Output::Event(Event::Up(id)));
            }
        }
        self.gossip.retain(|(subject, _), _| *subject != id);
        if let Some(entry) = self.members.get(&id) {
            let update = Update::Alive {
                record: entry.record.encoded.clone(),
            };
            self.queue(id, id, update);
        }
        if !self.linked.contains(&id) {
            self.outputs.push_back(Output::Dial { node: id, addrs });
        }
    }

    fn apply_suspect(&mut self, id: NodeId, version: Version, by: NodeId, now: Instant) {
        if id == self.me {
            return self.refute(version);
        }
        {
            let Some(entry) = self.members.get_mut(&id) else {
                return;
            };
            if version < entry.version || entry.state == State::Dead {
                return;
            }
            match entry.state {
                State::Alive => {
                    entry.state = State::Suspect;
                    entry.version = version;
                    entry.since = now;
                    entry.confirmations.clear();
                    entry.confirmations.insert(by);
                    entry.probe_soon = by != self.me;
                    self.outputs.push_back(Output::Event(Event::Suspected(id)));
                }
                State::Suspect => {
                    if version > entry.version {
                        entry.version = version;
                    }
                    if entry.confirmations.len() > CONFIRMATIONS_EXPECTED
                        || !entry.confirmations.insert(by)
                    {
                        return;
                    }
                }
                State::Dead => return,
            }
        }
        self.queue(
            id,
            by,
            Update::Suspect {
                node: *id.as_bytes(),
                version,
                by: *by.as_bytes(),
            },
        );
    }

    fn apply_dead(&mut self, id: NodeId, version: Version, by: NodeId, now: Instant) {
        if id == self.me {
            return self.refute(version);
        }
        let Some(entry) = self.members.get_mut(&id) else {
            return;
        };
        if version < entry.version || entry.state == State::Dead {
            return;
        }
        entry.state = State::Dead;
        entry.version = version;
        entry.since = now;
        entry.confirmations.clear();
        entry.probe_soon = false;
        self.outputs.push_back(Output::Event(Event::Failed(id)));
        self.gossip.retain(|(subject, _), _| *subject != id);
        self.queue(
            id,
            by,
            Update::Dead {
                node: *id.as_bytes(),
                version,
                by: *by.as_bytes(),
            },
        );
    }

    /// Someone suspects or declared this board at `version`: raise the
    /// incarnation past it and say so.
    fn refute(&mut self, version: Version) {
        let mine = self.record.version;
        if version < mine {
            return;
        }
        let next = Version {
            boot: mine.boot.max(version.boot),
            incarnation: version.incarnation.max(mine.incarnation).saturating_add(1),
        };
        self.record = MemberRecord::sign(&self.key, &self.join, next, &self.addrs, self.resources);
        self.counters.refutations += 1;
        self.health = (self.health + 1).min(HEALTH_MAX);
        let me = self.me;
        self.gossip.retain(|(subject, _), _| *subject != me);
        let update = Update::Alive {
            record: self.record.encoded.clone(),
        };
        self.queue(me, me, update);
        self.outputs.push_back(Output::Event(Event::Refuted {
            incarnation: next.incarnation,
        }));
    }

    fn queue(&mut self, subject: NodeId, by: NodeId, update: Update) {
        self.gossip
            .insert((subject, by), Pending { update, sent: 0 });
    }

    fn retransmit_limit(&self) -> u32 {
        let n = self.members.len() as f64 + 1.0;
        let factor = (n + 1.0).log10().ceil().max(1.0) as u32;
        self.config.retransmit_mult.saturating_mul(factor)
    }

    /// Updates to carry on a message to `to`: suspicions of `to` first (the
    /// buddy system), then the least sent.
    fn piggyback(&mut self, to: Option<NodeId>) -> Vec<Update> {
        let limit = self.retransmit_limit();
        let mut keys: Vec<(NodeId, NodeId)> = self.gossip.keys().copied().collect();
        keys.sort_by_key(|key| {
            let about_target = to.is_some_and(|to| key.0 == to);
            let sent = self.gossip.get(key).map_or(0, |pending| pending.sent);
            (!about_target, sent)
        });
        let mut updates = Vec::new();
        let mut size = 16;
        for key in keys.into_iter().take(PIGGYBACK_MAX) {
            let Some(pending) = self.gossip.get_mut(&key) else {
                continue;
            };
            size += update_len(&pending.update);
            if size > MESSAGE_LEN_MAX / 2 {
                break;
            }
            updates.push(pending.update.clone());
            pending.sent += 1;
            if pending.sent >= limit {
                self.gossip.remove(&key);
            }
        }
        updates
    }

    fn send(&mut self, to: NodeId, message: &Message) {
        self.outputs.push_back(Output::Send {
            to,
            bytes: message.encode(),
        });
    }

    fn random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Up to `count` distinct admitted live members, not in `except`.
    fn random_members(&mut self, count: usize, except: &[NodeId]) -> Vec<NodeId> {
        let mut candidates: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(id, entry)| {
                entry.state != State::Dead && self.admitted.contains(id) && !except.contains(id)
            })
            .map(|(id, _)| *id)
            .collect();
        let mut chosen = Vec::new();
        while chosen.len() < count && !candidates.is_empty() {
            let index = (self.random() % candidates.len() as u64) as usize;
            chosen.push(candidates.swap_remove(index));
        }
        chosen
    }

    fn probe_interval(&self) -> Duration {
        self.config.probe_interval * (self.health + 1)
    }

    fn probe_timeout(&self) -> Duration {
        self.config.probe_timeout * (self.health + 1)
    }

    /// Lifeguard's suspicion timeout after `confirmations` suspecters.
    pub fn suspicion_timeout(&self, confirmations: usize) -> Duration {
        let live = self
            .members
            .values()
            .filter(|entry| entry.state != State::Dead)
            .count()
            + 1;
        let min = self.config.probe_interval.as_secs_f64()
            * self.config.suspicion_alpha
            * (live as f64).log10().max(1.0);
        // As memberlist does: only members other than the suspect and the
        // first suspecter can confirm, so a small cluster expects fewer
        // confirmations (none with three members: the minimum at once).
        let expected = CONFIRMATIONS_EXPECTED.min(live.saturating_sub(3));
        if expected == 0 {
            return Duration::from_secs_f64(min);
        }
        let max = min * self.config.suspicion_beta;
        let independent = confirmations.saturating_sub(1) as f64;
        let fraction = (independent + 1.0).ln() / ((expected + 1) as f64).ln();
        Duration::from_secs_f64((max - (max - min) * fraction).max(min))
    }

    fn next_target(&mut self) -> Option<NodeId> {
        let busy: Vec<NodeId> = self.probes.values().map(|probe| probe.target).collect();
        // A member someone else suspects is probed first, to confirm or
        // clear it.
        if let Some((id, _)) = self.members.iter().find(|(id, entry)| {
            entry.probe_soon && entry.state == State::Suspect && !busy.contains(id)
        }) {
            return Some(*id);
        }
        for _ in 0..2 {
            while self.order_index < self.order.len() {
                let id = self.order[self.order_index];
                self.order_index += 1;
                if !busy.contains(&id)
                    && self
                        .members
                        .get(&id)
                        .is_some_and(|entry| entry.state != State::Dead)
                {
                    return Some(id);
                }
            }
            // A new round, in a new random order.
            self.order = self
                .members
                .iter()
                .filter(|(_, entry)| entry.state != State::Dead)
                .map(|(id, _)| *id)
                .collect();
            for index in (1..self.order.len()).rev() {
                let other = (self.random() % (index as u64 + 1)) as usize;
                self.order.swap(index, other);
            }
            self.order_index = 0;
        }
        None
    }

    fn start_probe(&mut self, target: NodeId, now: Instant) {
        self.counters.probes += 1;
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1).max(1);
        if let Some(entry) = self.members.get_mut(&target) {
            entry.probe_soon = false;
        }
        self.probes.insert(
            seq,
            Probe {
                target,
                started: now,
                indirect_sent: false,
                nacks_expected: 0,
                nacks: 0,
                acked: false,
            },
        );
        if self.admitted.contains(&target) {
            let updates = self.piggyback(Some(target));
            self.send(target, &Message::Ping { seq, updates });
        } else {
            // No link: go indirect at once, and ask for a link.
            self.send_indirect(seq);
            if let Some(entry) = self.members.get(&target) {
                let addrs = entry.record.addrs.clone();
                self.outputs.push_back(Output::Dial {
                    node: target,
                    addrs,
                });
            }
        }
    }

    fn send_indirect(&mut self, seq: u32) {
        let Some(target) = self.probes.get(&seq).map(|probe| probe.target) else {
            return;
        };
        let relays = self.random_members(self.config.indirect_probes, &[target]);
        for relay in &relays {
            let updates = self.piggyback(Some(*relay));
            self.send(
                *relay,
                &Message::PingReq {
                    seq,
                    target: *target.as_bytes(),
                    updates,
                },
            );
        }
        if let Some(probe) = self.probes.get_mut(&seq) {
            probe.indirect_sent = true;
            probe.nacks_expected = relays.len();
        }
    }

    fn ack(&mut self, seq: u32, now: Instant) {
        if let Some(relay) = self.relays.remove(&seq) {
            let updates = self.piggyback(Some(relay.requester));
            self.send(
                relay.requester,
                &Message::Ack {
                    seq: relay.their_seq,
                    updates,
                },
            );
            return;
        }
        if let Some(probe) = self.probes.get_mut(&seq) {
            probe.acked = true;
            self.finish_probe(seq, now);
        }
    }

    fn relay(&mut self, requester: NodeId, their_seq: u32, target: [u8; 32], now: Instant) {
        let Ok(target) = NodeId::from_bytes(&target) else {
            return;
        };
        if !self.admitted.contains(&target) || self.relays.len() >= RELAYS_MAX {
            self.send(requester, &Message::Nack { seq: their_seq });
            return;
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1).max(1);
        // Nack within the requester's period (its PingReq went out a
        // probe timeout into it).
        let deadline = now + self.config.probe_timeout.mul_f64(0.8);
        self.relays.insert(
            seq,
            Relay {
                requester,
                their_seq,
                deadline,
            },
        );
        let updates = self.piggyback(Some(target));
        self.send(target, &Message::Ping { seq, updates });
    }

    fn expire_relays(&mut self, now: Instant) {
        let expired: Vec<u32> = self
            .relays
            .iter()
            .filter(|(_, relay)| relay.deadline <= now)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in expired {
            if let Some(relay) = self.relays.remove(&seq) {
                self.send(
                    relay.requester,
                    &Message::Nack {
                        seq: relay.their_seq,
                    },
                );
            }
        }
    }

    fn probe_timers(&mut self, now: Instant) {
        let (timeout, interval) = (self.probe_timeout(), self.probe_interval());
        let indirect: Vec<u32> = self
            .probes
            .iter()
            .filter(|(_, probe)| {
                !probe.acked && !probe.indirect_sent && now >= probe.started + timeout
            })
            .map(|(seq, _)| *seq)
            .collect();
        for seq in indirect {
            self.send_indirect(seq);
        }
        let over: Vec<u32> = self
            .probes
            .iter()
            .filter(|(_, probe)| now >= probe.started + interval)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in over {
            self.finish_probe(seq, now);
        }
        if now >= self.next_probe {
            self.next_probe = now + self.probe_interval();
            if let Some(target) = self.next_target() {
                self.start_probe(target, now);
            }
        }
    }

    /// Ends probe `seq`: success heals, failure suspects.
    fn finish_probe(&mut self, seq: u32, now: Instant) {
        let Some(probe) = self.probes.remove(&seq) else {
            return;
        };
        if probe.acked {
            self.health = self.health.saturating_sub(1);
            return;
        }
        self.counters.probes_failed += 1;
        // Lifeguard: a failed probe, and each missing nack, count against
        // this board's own health.
        let missing_nacks = probe.nacks_expected.saturating_sub(probe.nacks) as u32;
        self.health = (self.health + 1 + missing_nacks).min(HEALTH_MAX);
        let version = match self.members.get(&probe.target) {
            Some(entry) if entry.state != State::Dead => entry.version,
            _ => return,
        };
        let me = self.me;
        self.apply_suspect(probe.target, version, me, now);
    }

    fn suspicion_timers(&mut self, now: Instant) {
        let due: Vec<(NodeId, Version)> = self
            .members
            .iter()
            .filter(|(_, entry)| {
                entry.state == State::Suspect
                    && now >= entry.since + self.suspicion_timeout(entry.confirmations.len())
            })
            .map(|(id, entry)| (*id, entry.version))
            .collect();
        let me = self.me;
        for (id, version) in due {
            self.apply_dead(id, version, me, now);
        }
    }

    /// Pushes pending news to a few members.
    fn push_gossip(&mut self) {
        if self.gossip.is_empty() {
            return;
        }
        for to in self.random_members(self.config.gossip_fanout, &[]) {
            let updates = self.piggyback(Some(to));
            if updates.is_empty() {
                break;
            }
            // Gossip rides on a Ping whose Ack nobody waits for.
            self.send(to, &Message::Ping { seq: 0, updates });
        }
    }

    /// Sends a Hello to one dead member (or asks for a link to it), and
    /// forgets the long dead.
    fn rejoin(&mut self, now: Instant) {
        let forget: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(_, entry)| {
                entry.state == State::Dead
                    && now.duration_since(entry.since) >= self.config.dead_forget
            })
            .map(|(id, _)| *id)
            .collect();
        for id in forget {
            self.forget(id);
        }
        let dead: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(_, entry)| entry.state == State::Dead)
            .map(|(id, _)| *id)
            .collect();
        if dead.is_empty() {
            return;
        }
        let pick = dead[(self.random() % dead.len() as u64) as usize];
        if self.linked.contains(&pick) {
            self.send_hello(pick, true);
        } else if let Some(entry) = self.members.get(&pick) {
            let addrs = entry.record.addrs.clone();
            self.outputs.push_back(Output::Dial { node: pick, addrs });
        }
    }
}

fn update_len(update: &Update) -> usize {
    match update {
        Update::Alive { record } => record.len() + 4,
        Update::Suspect { .. } | Update::Dead { .. } => 80,
    }
}
