//! Relays (`relay.md` §2): nodes that others cannot dial keep links to a
//! few reachable nodes that offer to carry traffic for them, so routes can
//! reach them through those links.
//!
//! [`Clients`] is a relay's side: which nodes it carries for, up to its
//! limit. [`Relays`] is a client's side: while its node is private, it
//! keeps links with reservations at [`ClientSettings::keep`] relays,
//! chosen among those the adverts offer within its price by rendezvous
//! hashing of the two node ids — so clients spread evenly over relays
//! without talking to each other, and a client keeps choosing the same
//! relays across restarts. A relay that cannot be linked, refuses, or
//! drops the link is passed over for a while (1 min doubling to 30 min)
//! and the next one is taken; new relays appearing never make a client
//! leave one that works.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fogwire_identity::NodeId;

use crate::wire::{Message, ReserveOutcome};

/// The service a relay's advert names (with an offer of that name: its
/// price per GiB).
pub const SERVICE: &str = "relay";
/// Relays a client remembers having failed; beyond, the oldest failure
/// is forgotten.
const FAILED_MAX: usize = 1024;
/// Candidates considered at once (adverts are bounded too).
pub const CANDIDATES_MAX: usize = 4096;
const RETRY_FIRST: Duration = Duration::from_secs(60);
const RETRY_MAX: Duration = Duration::from_secs(30 * 60);

/// What a relay offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeSettings {
    /// Clients carried at once; beyond, reservations are refused.
    pub clients_max: usize,
    /// Price per GiB carried for a client, in the ledger's smallest unit.
    pub price_per_gib: u64,
}

/// A relay's clients.
#[derive(Debug)]
pub struct Clients {
    settings: Option<ServeSettings>,
    clients: BTreeSet<NodeId>,
}

impl Clients {
    /// `settings`: none if this node is not a relay.
    pub fn new(settings: Option<ServeSettings>) -> Self {
        Self {
            settings,
            clients: BTreeSet::new(),
        }
    }

    /// `client` asks for a reservation, paying at most `price_max` per
    /// GiB: the answer.
    pub fn reserve(&mut self, client: NodeId, price_max: u64) -> ReserveOutcome {
        let Some(settings) = &self.settings else {
            return ReserveOutcome::NotServing;
        };
        if self.clients.contains(&client) {
            return ReserveOutcome::Accepted;
        }
        if settings.price_per_gib > price_max {
            return ReserveOutcome::TooExpensive;
        }
        if self.clients.len() >= settings.clients_max {
            return ReserveOutcome::Full;
        }
        self.clients.insert(client);
        ReserveOutcome::Accepted
    }

    /// The client's link is gone: so is its reservation.
    pub fn link_down(&mut self, client: &NodeId) {
        self.clients.remove(client);
    }

    pub fn is_client(&self, peer: &NodeId) -> bool {
        self.clients.contains(peer)
    }

    pub fn clients(&self) -> impl Iterator<Item = &NodeId> {
        self.clients.iter()
    }

    pub fn settings(&self) -> Option<&ServeSettings> {
        self.settings.as_ref()
    }
}

/// A relay the adverts offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: NodeId,
    pub price_per_gib: u64,
}

/// How a client uses relays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    /// Relays kept while the node is private.
    pub keep: usize,
    /// The most it pays a relay per GiB.
    pub price_max: u64,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            keep: 2,
            price_max: u64::MAX,
        }
    }
}

/// Where a chosen relay stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayState {
    /// Dialing it.
    Linking,
    /// Linked; the reservation was asked for.
    Reserving,
    /// It carries for this node.
    Reserved,
}

impl RelayState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Linking => "linking",
            Self::Reserving => "reserving",
            Self::Reserved => "reserved",
        }
    }
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayAction {
    /// Link to the relay (and keep the link), then report
    /// [`Relays::linked`] or [`Relays::link_failed`].
    Link(NodeId),
    /// Let the link go: this node no longer needs the relay.
    Unlink(NodeId),
}

#[derive(Debug, Clone, Copy)]
struct Chosen {
    state: RelayState,
    price_per_gib: u64,
}

#[derive(Debug, Clone, Copy)]
struct Failure {
    until: Instant,
    count: u32,
}

/// A client's relays: see the module documentation.
#[derive(Debug)]
pub struct Relays {
    me: NodeId,
    settings: ClientSettings,
    needed: bool,
    candidates: Vec<Candidate>,
    chosen: BTreeMap<NodeId, Chosen>,
    failed: BTreeMap<NodeId, Failure>,
    actions: VecDeque<RelayAction>,
    transmits: VecDeque<(NodeId, Bytes)>,
}

impl Relays {
    pub fn new(me: NodeId, settings: ClientSettings) -> Self {
        Self {
            me,
            settings,
            needed: false,
            candidates: Vec::new(),
            chosen: BTreeMap::new(),
            failed: BTreeMap::new(),
            actions: VecDeque::new(),
            transmits: VecDeque::new(),
        }
    }

    /// Whether this node needs relays (it is private).
    pub fn set_needed(&mut self, needed: bool, now: Instant) {
        if needed == self.needed {
            return;
        }
        self.needed = needed;
        if !needed {
            for (id, _) in std::mem::take(&mut self.chosen) {
                self.actions.push_back(RelayAction::Unlink(id));
            }
        }
        self.choose(now);
    }

    /// The relays the adverts offer now.
    pub fn set_candidates(&mut self, mut candidates: Vec<Candidate>, now: Instant) {
        candidates.retain(|candidate| candidate.id != self.me);
        candidates.truncate(CANDIDATES_MAX);
        self.candidates = candidates;
        self.choose(now);
    }

    /// The link to `relay` is up: ask it for a reservation.
    pub fn linked(&mut self, relay: NodeId) {
        if let Some(chosen) = self.chosen.get_mut(&relay)
            && chosen.state == RelayState::Linking
        {
            chosen.state = RelayState::Reserving;
            let price_max = self.settings.price_max;
            self.send(relay, Message::Reserve { price_max });
        }
    }

    /// The link to `relay` could not be made, or went down.
    pub fn link_failed(&mut self, relay: NodeId, now: Instant) {
        if self.chosen.remove(&relay).is_some() {
            self.fail(relay, now);
            self.choose(now);
        }
    }

    /// A message from `relay` on the reachability channel about its
    /// reservation.
    pub fn reservation(&mut self, relay: NodeId, outcome: ReserveOutcome, now: Instant) {
        let Some(chosen) = self.chosen.get_mut(&relay) else {
            return;
        };
        if outcome == ReserveOutcome::Accepted {
            chosen.state = RelayState::Reserved;
            self.failed.remove(&relay);
            return;
        }
        self.chosen.remove(&relay);
        self.fail(relay, now);
        self.actions.push_back(RelayAction::Unlink(relay));
        self.choose(now);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.needed || self.chosen.len() >= self.settings.keep {
            return None;
        }
        self.failed.values().map(|failure| failure.until).min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.choose(now);
    }

    pub fn poll_action(&mut self) -> Option<RelayAction> {
        self.actions.pop_front()
    }

    pub fn poll_transmit(&mut self) -> Option<(NodeId, Bytes)> {
        self.transmits.pop_front()
    }

    /// The chosen relays and where each stands, with its price.
    pub fn chosen(&self) -> impl Iterator<Item = (NodeId, RelayState, u64)> + '_ {
        self.chosen
            .iter()
            .map(|(id, chosen)| (*id, chosen.state, chosen.price_per_gib))
    }

    pub fn is_chosen(&self, relay: &NodeId) -> bool {
        self.chosen.contains_key(relay)
    }

    pub fn is_needed(&self) -> bool {
        self.needed
    }

    fn send(&mut self, relay: NodeId, message: Message) {
        self.transmits
            .push_back((relay, Bytes::from(message.encode())));
    }

    fn fail(&mut self, relay: NodeId, now: Instant) {
        let count = self.failed.get(&relay).map_or(0, |failure| failure.count) + 1;
        let wait = RETRY_FIRST
            .saturating_mul(1 << (count - 1).min(10))
            .min(RETRY_MAX);
        if !self.failed.contains_key(&relay) && self.failed.len() >= FAILED_MAX {
            let oldest = self
                .failed
                .iter()
                .min_by_key(|(_, failure)| failure.until)
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                self.failed.remove(&oldest);
            }
        }
        self.failed.insert(
            relay,
            Failure {
                until: now + wait,
                count,
            },
        );
    }

    /// Tops the chosen relays up to `keep` from the eligible candidates,
    /// best rendezvous score first.
    fn choose(&mut self, now: Instant) {
        if !self.needed || self.chosen.len() >= self.settings.keep {
            return;
        }
        let mut eligible: Vec<(u64, &Candidate)> = self
            .candidates
            .iter()
            .filter(|candidate| {
                candidate.price_per_gib <= self.settings.price_max
                    && !self.chosen.contains_key(&candidate.id)
                    && self
                        .failed
                        .get(&candidate.id)
                        .is_none_or(|failure| failure.until <= now)
            })
            .map(|candidate| (score(&self.me, &candidate.id), candidate))
            .collect();
        eligible.sort_by_key(|(score, candidate)| (std::cmp::Reverse(*score), candidate.id));
        let wanted = self.settings.keep - self.chosen.len();
        let picks: Vec<Candidate> = eligible
            .into_iter()
            .take(wanted)
            .map(|(_, candidate)| candidate.clone())
            .collect();
        for pick in picks {
            self.chosen.insert(
                pick.id,
                Chosen {
                    state: RelayState::Linking,
                    price_per_gib: pick.price_per_gib,
                },
            );
            self.actions.push_back(RelayAction::Link(pick.id));
        }
    }
}

/// The rendezvous score of `relay` for `client`: every client ranks the
/// relays differently, so their choices spread evenly.
pub fn score(client: &NodeId, relay: &NodeId) -> u64 {
    let mut hasher = blake3::Hasher::new_derive_key("fogwire/relay/rendezvous/v1");
    hasher.update(client.as_bytes());
    hasher.update(relay.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests;
