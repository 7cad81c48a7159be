//! The control plane of one node, sans-IO: the adverts it holds, the one
//! it issues, and how adverts flood.
//!
//! - This node's advert is rebuilt whenever its links change (so its own
//!   path queries see the change at once) and flooded once the changes
//!   settle, at most [`ADVERT_BURST`] at once and then one per
//!   [`ADVERT_INTERVAL`] — below what receivers accept from one origin
//!   ([`crate::topology::Config`]), so none is refused — and refreshed at a
//!   third of its lifetime.
//! - An advert from a neighbour that the [`Topology`] accepts is passed on
//!   to every other neighbour, once; a refused one goes no further.
//! - A new neighbour is owed every advert this node holds
//!   ([`PlaneEvent::Sync`]: the driver sends them at its link's pace).
//!
//! The driver feeds it links, adverts, link latencies and the time, and
//! sends what [`ControlPlane::poll_transmit`] gives; what to persist comes
//! out of [`ControlPlane::poll_event`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fogwire_identity::{Keypair, NodeId};

use crate::advert::{Advert, AdvertLink, LIFETIME_MAX_SECS, Offer};
use crate::rates::KeyedRate;
use crate::router::Now;
use crate::topology::{Refused, Topology};

/// How long after a link change the node floods its advert (changes in a
/// burst, like start-up, make one advert).
pub const ADVERT_SETTLE: Duration = Duration::from_millis(300);
/// Locally issued adverts: a burst, then one per interval.
pub const ADVERT_BURST: u32 = 3;
pub const ADVERT_INTERVAL: Duration = Duration::from_secs(15);
/// A link's one-way latency before its RTT is measured.
pub const LATENCY_UNKNOWN_US: u32 = 1_000;
/// How often adverts are aged out and the advert budget refilled.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// Adverts refused only because their origin was over its rate, kept to
/// be taken once it is not: at most this many origins…
const DEFERRED_MAX: usize = 1024;
/// …and bytes.
const DEFERRED_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Adverts waiting to be sent, at most; a flood beyond is dropped (the
/// refresh brings it back).
const OUTGOING_MAX: usize = 65_536;
/// Adverts a neighbour may have checked (any that is not a copy or an
/// older one of an advert held) in a burst, then one per interval: what
/// one neighbour can make this node verify. A new neighbour's sync is
/// paced below it ([`SYNC_BURST`], [`SYNC_INTERVAL`]).
pub const NEIGHBOUR_ADVERT_BURST: u32 = 2048;
pub const NEIGHBOUR_ADVERT_INTERVAL: Duration = Duration::from_millis(10);
/// A sync sends this many adverts at once, then one per interval: below
/// what the receiver takes from one neighbour, with room left for floods.
pub const SYNC_BURST: usize = 1024;
pub const SYNC_INTERVAL: Duration = Duration::from_millis(15);
/// Most origins held that one neighbour introduced (sent first): its share
/// of the topology, a quarter of [`crate::topology::Config::origins_max`].
pub const ORIGINS_PER_NEIGHBOUR_MAX: usize = 50_000;

/// What one neighbour may make this node take in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighbourLimits {
    /// Adverts checked in a burst…
    pub advert_burst: u32,
    /// …then one per this interval.
    pub advert_interval: Duration,
    /// Most origins held that the neighbour introduced.
    pub origins_max: usize,
}

impl Default for NeighbourLimits {
    fn default() -> Self {
        Self {
            advert_burst: NEIGHBOUR_ADVERT_BURST,
            advert_interval: NEIGHBOUR_ADVERT_INTERVAL,
            origins_max: ORIGINS_PER_NEIGHBOUR_MAX,
        }
    }
}

/// What this node says of itself in its adverts.
#[derive(Debug, Clone)]
pub struct Settings {
    pub keypair: Arc<Keypair>,
    /// The static key of its end-to-end sessions.
    pub link_key: [u8; 32],
    /// How long its adverts stay valid; they are refreshed at a third of
    /// it.
    pub lifetime: Duration,
    pub addresses: Vec<String>,
    pub services: Vec<String>,
    /// Paid services offered, with their prices and terms.
    pub offers: Vec<Offer>,
    /// Capacity offered to others' traffic on each link.
    pub capacity_kbps: u32,
}

/// What the driver should know of: to persist, and to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaneEvent {
    /// An advert was taken in (and passed on): keep it.
    Stored { origin: NodeId, bytes: Bytes },
    /// An advert aged out: forget it.
    Expired(NodeId),
    /// This node's advert sequence number moved: keep it, so a restart
    /// outranks what still circulates.
    Seq(u64),
    /// `peer` is a new neighbour: send it every advert held now.
    Sync(NodeId),
    /// A neighbour's advert was refused.
    Refused { from: NodeId, reason: Refused },
}

/// Counters of the control plane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlaneStats {
    pub adverts_sent: u64,
    pub adverts_accepted: u64,
    pub adverts_refused: u64,
}

/// This node's advert budget: governor's GCRA on a clock moved to the
/// instants the control plane is handed.
struct Budget {
    limiter: governor::RateLimiter<
        governor::state::NotKeyed,
        governor::state::InMemoryState,
        governor::clock::FakeRelativeClock,
        governor::middleware::NoOpMiddleware<governor::nanos::Nanos>,
    >,
    clock: governor::clock::FakeRelativeClock,
    at: Instant,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget").finish_non_exhaustive()
    }
}

impl Budget {
    fn new(now: Instant) -> Self {
        let burst = std::num::NonZeroU32::new(ADVERT_BURST).unwrap_or(std::num::NonZeroU32::MIN);
        let quota = governor::Quota::with_period(ADVERT_INTERVAL)
            .unwrap_or_else(|| governor::Quota::per_second(std::num::NonZeroU32::MIN))
            .allow_burst(burst);
        let clock = governor::clock::FakeRelativeClock::default();
        Self {
            limiter: governor::RateLimiter::direct_with_clock(quota, clock.clone()),
            clock,
            at: now,
        }
    }

    /// Spends one advert at `now`; if none is left, when the next is.
    fn spend(&mut self, now: Instant) -> Result<(), Instant> {
        if now > self.at {
            self.clock.advance(now - self.at);
            self.at = now;
        }
        self.limiter.check().map_err(|not_until| {
            use governor::clock::Clock;
            self.at + not_until.wait_time_from(self.clock.now())
        })
    }
}

/// The adverts of one node: held, issued and flooded.
#[derive(Debug)]
pub struct ControlPlane {
    settings: Settings,
    origin: NodeId,
    topology: Topology,
    /// Neighbours and the one-way latency of the link to each.
    neighbours: BTreeMap<NodeId, u32>,
    seq: u64,
    /// The advert budget: a burst, then one per interval (governor).
    budget: Budget,
    /// The budget ran out: no flood before this.
    budget_waits_until: Option<Instant>,
    due: Option<Instant>,
    last_flood: Instant,
    next_housekeeping: Instant,
    outgoing: VecDeque<(NodeId, Bytes)>,
    events: VecDeque<PlaneEvent>,
    /// The newest advert of each origin refused only for the origin's
    /// rate, with the neighbour it came from: an origin floods only when
    /// it changes, so without a second try the news (a service started at
    /// run time, say) would wait for its next change or refresh.
    deferred: BTreeMap<[u8; 32], (NodeId, Bytes)>,
    deferred_bytes: usize,
    stats: PlaneStats,
    /// Adverts checked per neighbour (governor, on ms since `started`).
    neighbour_rates: KeyedRate<NodeId>,
    neighbour_limits: NeighbourLimits,
    started: Instant,
    /// Which neighbour introduced each origin held, and how many each
    /// introduced: its share of the topology.
    introduced_by: HashMap<[u8; 32], NodeId>,
    introduced: HashMap<NodeId, usize>,
}

impl ControlPlane {
    /// A control plane holding `saved` adverts (from disk) that issues its
    /// own above `saved_seq`.
    pub fn new(
        settings: Settings,
        saved: impl IntoIterator<Item = Vec<u8>>,
        saved_seq: u64,
        now: Now,
    ) -> Self {
        let origin = settings.keypair.node_id();
        let mut topology = Topology::new(origin, Default::default());
        for bytes in saved {
            // Those that aged out or are refused now are simply not kept.
            let _ = topology.handle_advert(&bytes, now.unix_ms);
        }
        let mut plane = Self {
            settings,
            origin,
            topology,
            neighbours: BTreeMap::new(),
            seq: saved_seq,
            budget: Budget::new(now.instant),
            budget_waits_until: None,
            due: None,
            last_flood: now.instant,
            next_housekeeping: now.instant + HOUSEKEEPING,
            outgoing: VecDeque::new(),
            events: VecDeque::new(),
            deferred: BTreeMap::new(),
            deferred_bytes: 0,
            stats: PlaneStats::default(),
            neighbour_rates: KeyedRate::new(NEIGHBOUR_ADVERT_BURST, NEIGHBOUR_ADVERT_INTERVAL),
            neighbour_limits: NeighbourLimits::default(),
            started: now.instant,
            introduced_by: HashMap::new(),
            introduced: HashMap::new(),
        };
        // This node is in its own graph from the start.
        plane.issue(now, false);
        plane
    }

    /// Other limits per neighbour than the defaults (tests, simulations).
    pub fn with_neighbour_limits(mut self, limits: NeighbourLimits) -> Self {
        self.neighbour_rates = KeyedRate::new(limits.advert_burst, limits.advert_interval);
        self.neighbour_limits = limits;
        self
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The topology, for path queries (its graph is rebuilt on demand).
    pub fn topology_mut(&mut self) -> &mut Topology {
        &mut self.topology
    }

    pub fn neighbours(&self) -> impl Iterator<Item = &NodeId> {
        self.neighbours.keys()
    }

    pub fn is_neighbour(&self, peer: &NodeId) -> bool {
        self.neighbours.contains_key(peer)
    }

    pub fn stats(&self) -> PlaneStats {
        self.stats
    }

    /// A link to `peer` came up: it is owed every advert, and this node's
    /// advert changes.
    pub fn link_up(&mut self, peer: NodeId, now: Now) {
        self.neighbours.insert(peer, LATENCY_UNKNOWN_US);
        self.events.push_back(PlaneEvent::Sync(peer));
        self.links_changed(now);
    }

    /// The link to `peer` is gone.
    pub fn link_down(&mut self, peer: NodeId, now: Now) {
        if self.neighbours.remove(&peer).is_some() {
            self.outgoing.retain(|(to, _)| *to != peer);
            self.links_changed(now);
        }
    }

    /// The measured round trip of the link to `peer`; it shows in the
    /// next advert — soon, if it is the link's first (a new link's
    /// latency decides whether routes take it: a direct link punched
    /// through NATs, say).
    pub fn set_rtt(&mut self, peer: NodeId, rtt: Duration, now: Now) {
        let Some(latency) = self.neighbours.get_mut(&peer) else {
            return;
        };
        let first = *latency == LATENCY_UNKNOWN_US;
        *latency = u32::try_from(rtt.as_micros() / 2)
            .unwrap_or(u32::MAX)
            .max(1);
        if first && *latency != LATENCY_UNKNOWN_US {
            self.links_changed(now);
        }
    }

    /// Changes the services and offers this node's advert names (an app
    /// started or stopped at run time); the new advert floods soon.
    pub fn set_services(&mut self, services: Vec<String>, offers: Vec<Offer>, now: Now) {
        if self.settings.services == services && self.settings.offers == offers {
            return;
        }
        self.settings.services = services;
        self.settings.offers = offers;
        self.links_changed(now);
    }

    /// Changes the addresses this node's advert names (what reachability
    /// checks found others can dial); the new advert floods soon.
    pub fn set_addresses(&mut self, addresses: Vec<String>, now: Now) {
        if self.settings.addresses == addresses {
            return;
        }
        self.settings.addresses = addresses;
        self.links_changed(now);
    }

    /// Rebuilds this node's advert at once, and floods one soon.
    fn links_changed(&mut self, now: Now) {
        self.issue(now, false);
        let at = now.instant + ADVERT_SETTLE;
        self.due = Some(self.due.map_or(at, |due| due.min(at)));
    }

    /// How many origins held `neighbour` introduced (its share).
    pub fn introduced_by(&self, neighbour: &NodeId) -> usize {
        self.introduced.get(neighbour).copied().unwrap_or(0)
    }

    /// Whether `from` may have this advert checked: a copy (or an older
    /// one) of an advert held costs nothing and is let through to be
    /// recognised; anything else spends one of the neighbour's tokens, and
    /// a new origin needs room in its share. No cryptography is spent on
    /// what is refused here.
    fn admit(&mut self, from: NodeId, bytes: &[u8], now: Now) -> Result<(), Refused> {
        let peeked = Advert::peek(bytes);
        let held = peeked.and_then(|(origin, _)| self.topology.held_seq(&origin));
        if let (Some((_, seq)), Some(held)) = (peeked, held)
            && seq <= held
        {
            return Ok(());
        }
        if held.is_none() && self.introduced_by(&from) >= self.neighbour_limits.origins_max {
            return Err(Refused::NeighbourShareFull);
        }
        let now_ms = now
            .instant
            .saturating_duration_since(self.started)
            .as_millis() as u64;
        if self.neighbour_rates.check(&from, now_ms) {
            Ok(())
        } else {
            Err(Refused::NeighbourRateLimited)
        }
    }

    /// An advert from neighbour `from`.
    pub fn handle_advert(&mut self, from: NodeId, bytes: Bytes, now: Now) {
        let result = self
            .admit(from, &bytes, now)
            .and_then(|()| self.topology.handle_advert(&bytes, now.unix_ms));
        match result {
            Ok(accepted) => self.take(from, accepted.origin, bytes),
            Err(Refused::RateLimited) => {
                self.stats.adverts_refused += 1;
                self.events.push_back(PlaneEvent::Refused {
                    from,
                    reason: Refused::RateLimited,
                });
                self.defer(from, bytes);
            }
            Err(Refused::OwnNewer { seq }) => {
                // An advert of this node's previous run still circulates:
                // outrank it.
                self.seq = self.seq.max(seq);
                self.due = Some(now.instant);
            }
            Err(Refused::Duplicate | Refused::Old { .. }) => {}
            Err(reason) => {
                self.stats.adverts_refused += 1;
                self.events.push_back(PlaneEvent::Refused { from, reason });
            }
        }
    }

    /// When [`ControlPlane::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let flood = self
            .due
            .filter(|_| !self.neighbours.is_empty())
            .map(|due| self.budget_waits_until.map_or(due, |until| due.max(until)));
        [Some(self.next_housekeeping), flood]
            .into_iter()
            .flatten()
            .min()
    }

    /// Ages adverts out, refills the advert budget, refreshes this node's
    /// advert, and floods it if one is due.
    pub fn handle_timeout(&mut self, now: Now) {
        if now.instant >= self.next_housekeeping {
            self.next_housekeeping = now.instant + HOUSEKEEPING;
            for origin in self.topology.expire(now.unix_ms) {
                self.forget_introducer(&origin);
                self.events.push_back(PlaneEvent::Expired(origin));
            }
            self.neighbour_rates.forget_idle();
            if !self.deferred.is_empty() {
                self.retry_deferred(now);
            }
            if now.instant.saturating_duration_since(self.last_flood) >= self.settings.lifetime / 3
            {
                self.due.get_or_insert(now.instant);
            }
        }
        let waiting = self
            .budget_waits_until
            .is_some_and(|until| until > now.instant);
        if self.due.is_some_and(|due| due <= now.instant) && !waiting && !self.neighbours.is_empty()
        {
            match self.budget.spend(now.instant) {
                Ok(()) => {
                    self.budget_waits_until = None;
                    self.due = None;
                    self.issue(now, true);
                }
                Err(until) => self.budget_waits_until = Some(until),
            }
        }
    }

    /// Takes in an accepted advert: passes it on, and reports it.
    fn take(&mut self, from: NodeId, origin: NodeId, bytes: Bytes) {
        self.stats.adverts_accepted += 1;
        if let std::collections::hash_map::Entry::Vacant(entry) =
            self.introduced_by.entry(*origin.as_bytes())
        {
            entry.insert(from);
            *self.introduced.entry(from).or_default() += 1;
        }
        self.flood(Some(from), &bytes);
        self.events.push_back(PlaneEvent::Stored { origin, bytes });
    }

    /// Keeps an advert refused for its origin's rate, replacing an older
    /// one of the same origin, within the bounds.
    fn defer(&mut self, from: NodeId, bytes: Bytes) {
        let Some((origin, seq)) = Advert::peek(&bytes) else {
            return;
        };
        if let Some((_, held)) = self.deferred.get(&origin) {
            if Advert::peek(held).is_some_and(|(_, held_seq)| held_seq >= seq) {
                return;
            }
            self.deferred_bytes -= held.len();
        } else if self.deferred.len() >= DEFERRED_MAX {
            return;
        }
        if self.deferred_bytes + bytes.len() > DEFERRED_BYTES_MAX {
            if let Some((_, held)) = self.deferred.remove(&origin) {
                self.deferred_bytes -= held.len();
            }
            return;
        }
        self.deferred_bytes += bytes.len();
        self.deferred.insert(origin, (from, bytes));
    }

    /// Tries the deferred adverts again (their neighbours' shares were
    /// spent when they first came); those still over their origin's rate
    /// wait for the next round.
    fn retry_deferred(&mut self, now: Now) {
        let deferred = std::mem::take(&mut self.deferred);
        self.deferred_bytes = 0;
        for (_, (from, bytes)) in deferred {
            match self.topology.handle_advert(&bytes, now.unix_ms) {
                Ok(accepted) => self.take(from, accepted.origin, bytes),
                Err(Refused::RateLimited) => self.defer(from, bytes),
                // Superseded, expired or now invalid: nothing to keep.
                Err(_) => {}
            }
        }
    }

    /// An origin is gone: its introducer's share has room again.
    fn forget_introducer(&mut self, origin: &NodeId) {
        if let Some(neighbour) = self.introduced_by.remove(origin.as_bytes())
            && let std::collections::hash_map::Entry::Occupied(mut count) =
                self.introduced.entry(neighbour)
        {
            *count.get_mut() -= 1;
            if *count.get() == 0 {
                count.remove();
            }
        }
    }

    /// An advert to send: to whom, and its bytes.
    pub fn poll_transmit(&mut self) -> Option<(NodeId, Bytes)> {
        self.outgoing.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<PlaneEvent> {
        self.events.pop_front()
    }

    /// Signs this node's advert as its links are now; floods it if asked.
    fn issue(&mut self, now: Now, flood: bool) {
        let seq = (self.seq + 1).max(now.unix_ms);
        self.seq = seq;
        self.events.push_back(PlaneEvent::Seq(seq));
        let links = self
            .neighbours
            .iter()
            .map(|(peer, latency_us)| AdvertLink {
                neighbour: *peer,
                latency_us: *latency_us,
                capacity_kbps: self.settings.capacity_kbps,
            })
            .collect();
        let advert = Advert {
            origin: self.origin,
            seq,
            issued_at_ms: now.unix_ms,
            lifetime_secs: self
                .settings
                .lifetime
                .as_secs()
                .clamp(60, u64::from(LIFETIME_MAX_SECS)) as u32,
            link_key: self.settings.link_key,
            addresses: self.settings.addresses.clone(),
            links,
            services: self.settings.services.clone(),
            offers: self.settings.offers.clone(),
        };
        let (advert, bytes) = advert.sign(&self.settings.keypair);
        self.topology.set_local(advert, bytes.clone());
        if flood {
            self.last_flood = now.instant;
            self.stats.adverts_sent += 1;
            self.flood(None, &Bytes::from(bytes));
        }
    }

    /// Queues `bytes` to every neighbour but `except`.
    fn flood(&mut self, except: Option<NodeId>, bytes: &Bytes) {
        for peer in self.neighbours.keys() {
            if Some(*peer) != except && self.outgoing.len() < OUTGOING_MAX {
                self.outgoing.push_back((*peer, bytes.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(seed: u8) -> Settings {
        Settings {
            keypair: Arc::new(Keypair::from_seed(&[seed; 32])),
            link_key: [seed; 32],
            lifetime: Duration::from_secs(600),
            addresses: Vec::new(),
            services: Vec::new(),
            offers: Vec::new(),
            capacity_kbps: 1000,
        }
    }

    fn at(start: Instant, ms: u64) -> Now {
        Now {
            instant: start + Duration::from_millis(ms),
            unix_ms: 1_800_000_000_000 + ms,
        }
    }

    use fogwire_testkit::time::epoch;

    #[test]
    fn link_changes_settle_into_one_flood_then_the_budget_holds() {
        let start = epoch();
        let mut plane = ControlPlane::new(settings(1), Vec::new(), 0, at(start, 0));
        let peers: Vec<NodeId> = (2..5)
            .map(|seed| Keypair::from_seed(&[seed; 32]).node_id())
            .collect();
        for (i, peer) in peers.iter().enumerate() {
            plane.link_up(*peer, at(start, i as u64 * 10));
        }
        // Nothing flooded before the changes settle; one advert after.
        assert!(plane.poll_transmit().is_none());
        let due = plane.poll_timeout().unwrap();
        assert!(due <= start + ADVERT_SETTLE);
        plane.handle_timeout(at(start, 300));
        let sent: Vec<NodeId> = std::iter::from_fn(|| plane.poll_transmit())
            .map(|(to, _)| to)
            .collect();
        assert_eq!(sent.len(), 3);
        assert_eq!(plane.stats().adverts_sent, 1);
        // Flapping a link spends the budget, then waits for the interval.
        for round in 0..6u64 {
            let t = 400 + round * 400;
            plane.link_down(peers[0], at(start, t));
            plane.link_up(peers[0], at(start, t + 10));
            plane.handle_timeout(at(start, t + 350));
            while plane.poll_transmit().is_some() {}
        }
        assert_eq!(plane.stats().adverts_sent, u64::from(ADVERT_BURST));
        plane.handle_timeout(at(start, 15_400));
        assert_eq!(plane.stats().adverts_sent, u64::from(ADVERT_BURST) + 1);
    }

    #[test]
    fn an_advert_refused_for_its_origins_rate_is_taken_once_the_rate_allows() {
        let start = epoch();
        let mut plane = ControlPlane::new(settings(1), Vec::new(), 0, at(start, 0));
        let (a, b) = (
            Keypair::from_seed(&[2; 32]).node_id(),
            Keypair::from_seed(&[3; 32]).node_id(),
        );
        plane.link_up(a, at(start, 0));
        plane.link_up(b, at(start, 0));
        plane.handle_timeout(at(start, 300));
        while plane.poll_transmit().is_some() {}
        while plane.poll_event().is_some() {}
        // A far origin changes often (links coming up): its adverts come
        // in faster than its rate, and the newest is the one that counts.
        let far = Keypair::from_seed(&[9; 32]);
        let advert = |seq: u64, services: Vec<String>| {
            let advert = Advert {
                origin: far.node_id(),
                seq,
                issued_at_ms: 1_800_000_000_000,
                lifetime_secs: 600,
                link_key: [9; 32],
                addresses: Vec::new(),
                links: Vec::new(),
                services,
                offers: Vec::new(),
            };
            Bytes::from(advert.sign(&far).1)
        };
        let burst = crate::topology::Config::default().rate_burst as u64;
        for seq in 1..=burst {
            plane.handle_advert(a, advert(seq, Vec::new()), at(start, 400 + seq));
        }
        let last = advert(burst + 1, vec!["exit".into()]);
        plane.handle_advert(a, last, at(start, 500));
        let held = |plane: &ControlPlane| plane.topology().get(&far.node_id()).unwrap().seq;
        assert_eq!(held(&plane), burst);
        while plane.poll_transmit().is_some() {}
        // Taken, and passed on to the other neighbour, once the origin's
        // rate allows another.
        let mut t = 1_000;
        while held(&plane) == burst && t < 60_000 {
            plane.handle_timeout(at(start, t));
            t += 1_000;
        }
        assert_eq!(held(&plane), burst + 1);
        assert_eq!(
            plane.topology().get(&far.node_id()).unwrap().services,
            ["exit"]
        );
        let passed: Vec<NodeId> = std::iter::from_fn(|| plane.poll_transmit())
            .map(|(to, _)| to)
            .collect();
        assert!(passed.contains(&b), "{passed:?}");
    }

    #[test]
    fn services_changed_at_run_time_are_flooded_once_they_settle() {
        let start = epoch();
        let mut plane = ControlPlane::new(settings(1), Vec::new(), 0, at(start, 0));
        let peer = Keypair::from_seed(&[2; 32]).node_id();
        plane.link_up(peer, at(start, 0));
        plane.handle_timeout(at(start, 300));
        while plane.poll_transmit().is_some() {}
        assert_eq!(plane.stats().adverts_sent, 1);
        plane.set_services(vec!["exit".into()], Vec::new(), at(start, 1_000));
        let due = plane.poll_timeout().unwrap();
        assert!(due <= start + Duration::from_millis(1_300), "{due:?}");
        plane.handle_timeout(at(start, 1_300));
        let (to, bytes) = plane.poll_transmit().expect("the new advert");
        assert_eq!(to, peer);
        assert_eq!(Advert::decode(&bytes).unwrap().services, ["exit"]);
    }

    #[test]
    fn accepted_adverts_pass_on_to_the_others_once_and_refused_ones_do_not() {
        let start = epoch();
        let now = at(start, 0);
        let mut plane = ControlPlane::new(settings(1), Vec::new(), 0, now);
        let (a, b) = (
            Keypair::from_seed(&[2; 32]).node_id(),
            Keypair::from_seed(&[3; 32]).node_id(),
        );
        plane.link_up(a, now);
        plane.link_up(b, now);
        while plane.poll_event().is_some() {}
        let other = ControlPlane::new(settings(9), Vec::new(), 0, now);
        let (_, bytes) = other.topology().adverts().next().unwrap();
        let bytes = Bytes::copy_from_slice(bytes);
        plane.handle_advert(a, bytes.clone(), now);
        let sent: Vec<NodeId> = std::iter::from_fn(|| plane.poll_transmit())
            .map(|(to, _)| to)
            .collect();
        assert_eq!(sent, vec![b]);
        assert!(matches!(
            plane.poll_event(),
            Some(PlaneEvent::Stored { .. })
        ));
        // The same again: a duplicate, not passed on.
        plane.handle_advert(b, bytes, now);
        assert!(plane.poll_transmit().is_none());
        // Garbage: refused, reported, not passed on.
        plane.handle_advert(b, Bytes::from_static(b"junk"), now);
        assert!(plane.poll_transmit().is_none());
        assert!(matches!(
            plane.poll_event(),
            Some(PlaneEvent::Refused { from, .. }) if from == b
        ));
    }

    /// A fresh origin's advert, issued at `now`, from a key of `seed`.
    fn fresh_advert(seed: u32, now: Now) -> Bytes {
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(&seed.to_be_bytes());
        key[31] = 0xad;
        let keypair = Keypair::from_seed(&key);
        let advert = Advert {
            origin: keypair.node_id(),
            seq: 1,
            issued_at_ms: now.unix_ms,
            lifetime_secs: 60,
            link_key: key,
            addresses: Vec::new(),
            links: Vec::new(),
            services: Vec::new(),
            offers: Vec::new(),
        };
        Bytes::from(advert.sign(&keypair).1)
    }

    fn plane_with(limits: NeighbourLimits, now: Now) -> (ControlPlane, NodeId, NodeId) {
        let mut plane =
            ControlPlane::new(settings(1), Vec::new(), 0, now).with_neighbour_limits(limits);
        let (hostile, honest) = (
            Keypair::from_seed(&[2; 32]).node_id(),
            Keypair::from_seed(&[3; 32]).node_id(),
        );
        plane.link_up(hostile, now);
        plane.link_up(honest, now);
        (plane, hostile, honest)
    }

    fn refusals(plane: &mut ControlPlane) -> Vec<(NodeId, Refused)> {
        std::iter::from_fn(|| plane.poll_event())
            .filter_map(|event| match event {
                PlaneEvent::Refused { from, reason } => Some((from, reason)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_neighbour_flooding_new_origins_is_held_to_its_rate_and_passes_on_no_more() {
        // Bound proven: a neighbour gets `advert_burst` adverts checked at
        // once, then one per interval; what is refused is not passed on,
        // and another neighbour is not held back.
        let start = epoch();
        let limits = NeighbourLimits {
            advert_burst: 50,
            advert_interval: Duration::from_millis(100),
            origins_max: 10_000,
        };
        let (mut plane, hostile, honest) = plane_with(limits, at(start, 0));
        while plane.poll_transmit().is_some() {}
        for seed in 0..200 {
            plane.handle_advert(hostile, fresh_advert(seed, at(start, 0)), at(start, 0));
        }
        assert_eq!(plane.stats().adverts_accepted, 50);
        assert_eq!(plane.introduced_by(&hostile), 50);
        let refused = refusals(&mut plane);
        assert_eq!(refused.len(), 150);
        assert!(
            refused
                .iter()
                .all(|(from, reason)| *from == hostile && *reason == Refused::NeighbourRateLimited)
        );
        // Passed on to the other neighbour: only what was taken in.
        assert_eq!(std::iter::from_fn(|| plane.poll_transmit()).count(), 50);
        // One more per interval.
        plane.handle_advert(hostile, fresh_advert(1000, at(start, 100)), at(start, 100));
        plane.handle_advert(hostile, fresh_advert(1001, at(start, 100)), at(start, 100));
        assert_eq!(plane.stats().adverts_accepted, 51);
        assert_eq!(
            refusals(&mut plane),
            vec![(hostile, Refused::NeighbourRateLimited)]
        );
        // The honest neighbour's adverts are taken in meanwhile; copies of
        // held adverts cost no tokens and are not refusals.
        plane.handle_advert(honest, fresh_advert(5000, at(start, 100)), at(start, 100));
        assert_eq!(plane.stats().adverts_accepted, 52);
        for seed in 0..50 {
            plane.handle_advert(hostile, fresh_advert(seed, at(start, 0)), at(start, 100));
        }
        assert_eq!(refusals(&mut plane), Vec::new());
        assert_eq!(plane.stats().adverts_accepted, 52);
    }

    #[test]
    fn a_neighbour_introduces_at_most_its_share_of_origins_until_they_expire() {
        // Bound proven: the origins one neighbour introduced and the node
        // still holds number at most `origins_max`; when they age out, the
        // share is free again.
        let start = epoch();
        let limits = NeighbourLimits {
            advert_burst: 10_000,
            advert_interval: Duration::from_millis(1),
            origins_max: 20,
        };
        let (mut plane, hostile, honest) = plane_with(limits, at(start, 0));
        for seed in 0..30 {
            plane.handle_advert(hostile, fresh_advert(seed, at(start, 0)), at(start, 0));
        }
        assert_eq!(plane.introduced_by(&hostile), 20);
        let refused = refusals(&mut plane);
        assert_eq!(refused.len(), 10);
        assert!(
            refused
                .iter()
                .all(|(_, reason)| *reason == Refused::NeighbourShareFull)
        );
        // Another neighbour has its own share.
        plane.handle_advert(honest, fresh_advert(100, at(start, 0)), at(start, 0));
        assert_eq!(plane.introduced_by(&honest), 1);
        // The hostile adverts live 60 s: after they expire, room again.
        plane.handle_timeout(at(start, 61_000));
        assert_eq!(plane.introduced_by(&hostile), 0);
        plane.handle_advert(
            hostile,
            fresh_advert(200, at(start, 61_000)),
            at(start, 61_000),
        );
        assert_eq!(plane.introduced_by(&hostile), 1);
    }
}
