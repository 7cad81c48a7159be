//! Fetching one blob from several peers at once.
//!
//! The blob's chunk groups are handed out in runs of up to
//! [`Config::request_groups`] to every peer that has them, a few requests
//! per peer, so all peers work at once and a fast peer simply gets through
//! more runs. When nothing is left to hand out, an idle peer takes over
//! the second half of what a slower peer still has to deliver (work
//! stealing), and the whole of it once that is fewer than
//! [`Config::steal_min_groups`] (the end game: a peer that sends nothing
//! cannot hold the last groups hostage); whichever delivers a group first
//! wins, and a request all of whose groups arrived from elsewhere is
//! cancelled. A peer that sends a
//! chunk group that fails verification is dropped: its requests go back
//! to the others; one whose requests fail [`Config::peer_failures_max`]
//! times is dropped too.
//!
//! Who holds the blob is asked again every [`Config::ask_every`] (peers
//! that fetch it meanwhile join), and at once when nobody is left to ask;
//! a download gives up when an answer after that finds nobody either, or
//! when nothing has arrived for [`Config::stall_cutoff`].
//!
//! Sans-IO: the driver reports what arrived and when; the scheduler says
//! what to ask whom, through [`Download::poll_action`], and whether it is
//! over, through [`Download::outcome`].

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::Hash;
use crate::message::{Groups, group_count, runs};
use crate::stream::all_groups;

/// Settings of a download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Chunk groups per request (256: 4 MiB).
    pub request_groups: u64,
    /// Requests in flight per peer.
    pub per_peer: usize,
    /// A request with fewer groups left than this is stolen whole rather
    /// than halved (at most this many groups are fetched twice).
    pub steal_min_groups: u64,
    /// Requests of one peer that may fail (it refused, or went quiet)
    /// before it is left out of this download.
    pub peer_failures_max: u32,
    /// How often the holders are asked again.
    pub ask_every: Duration,
    /// Nothing verified for this long: the download gives up.
    pub stall_cutoff: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            request_groups: 256,
            per_peer: 4,
            steal_min_groups: 8,
            peer_failures_max: 3,
            ask_every: Duration::from_secs(1),
            stall_cutoff: Duration::from_secs(30),
        }
    }
}

/// Why a request ended without all its groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The peer sent data that failed verification: it is dropped.
    Corrupt,
    /// The peer refused, or went away; it may be asked again later.
    Gone,
    /// The peer serves as many requests as it will at once (other
    /// downloads take its time): it gets fewer at a time from this one,
    /// and none for [`BUSY_PAUSE`].
    Busy,
}

/// How long a peer that answered busy gets no new request.
pub const BUSY_PAUSE: Duration = Duration::from_millis(50);

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<P> {
    Request {
        peer: P,
        key: u64,
        groups: Groups,
    },
    Cancel {
        peer: P,
        key: u64,
    },
    /// Ask who holds the blob now; answer with [`Download::on_holders`].
    AskHolders,
}

/// Why a download gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stuck {
    /// Nobody left to ask, and asking around found nobody.
    NoHolder,
    /// Nothing arrived for this long.
    Silent(Duration),
}

#[derive(Debug)]
struct Request<P> {
    peer: P,
    groups: Groups,
}

#[derive(Debug)]
struct Peer {
    /// What the peer holds; none: all of it.
    available: Option<Groups>,
    in_flight: usize,
    /// Requests it may have at once: the configured number, less after
    /// it answered busy, growing back as requests complete.
    limit: usize,
    /// After a busy answer: no new request before this.
    paused_until: Option<Instant>,
    bytes: u64,
    first_request: Option<Instant>,
    banned: bool,
}

impl Peer {
    fn can_take(&self) -> bool {
        !self.banned && self.paused_until.is_none() && self.in_flight < self.limit
    }

    /// Bytes per second delivered so far (0 until something arrived).
    fn rate(&self, now: Instant) -> f64 {
        match self.first_request {
            Some(first) if self.bytes > 0 => {
                self.bytes as f64 / now.saturating_duration_since(first).as_secs_f64().max(1e-3)
            }
            _ => 0.0,
        }
    }
}

/// One blob being fetched.
#[derive(Debug)]
pub struct Download<P: Ord + Copy> {
    hash: Hash,
    size: u64,
    config: Config,
    have: Groups,
    requests: BTreeMap<u64, Request<P>>,
    peers: BTreeMap<P, Peer>,
    next_key: u64,
    actions: VecDeque<Action<P>>,
    /// Some request's tail was given to another peer: requests may now
    /// owe only groups someone else is fetching.
    stolen: bool,
    /// Failed requests, by peer (kept when a peer is dropped and added
    /// back).
    failures: BTreeMap<P, u32>,
    /// The holders were asked and have not answered yet.
    asking: bool,
    /// The last answer found no usable peer.
    found_nobody: bool,
    next_ask: Option<Instant>,
    last_progress: Option<Instant>,
}

impl<P: Ord + Copy> Download<P> {
    /// A download of a blob of `size` bytes of which `have` is already
    /// held (verified), for resuming.
    pub fn new(hash: Hash, size: u64, have: Groups, config: Config) -> Self {
        Self {
            hash,
            size,
            config,
            have: have & all_groups(size),
            requests: BTreeMap::new(),
            peers: BTreeMap::new(),
            next_key: 1,
            actions: VecDeque::new(),
            stolen: false,
            failures: BTreeMap::new(),
            asking: false,
            found_nobody: false,
            next_ask: None,
            last_progress: None,
        }
    }

    pub fn hash(&self) -> Hash {
        self.hash
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Groups verified so far.
    pub fn have(&self) -> &Groups {
        &self.have
    }

    pub fn missing(&self) -> Groups {
        all_groups(self.size) - &self.have
    }

    pub fn is_complete(&self) -> bool {
        self.missing().is_empty()
    }

    /// Bytes each peer delivered.
    pub fn delivered(&self) -> impl Iterator<Item = (P, u64)> + '_ {
        self.peers.iter().map(|(peer, state)| (*peer, state.bytes))
    }

    /// Peers that may still be asked.
    pub fn usable_peers(&self) -> usize {
        self.peers.values().filter(|p| !p.banned).count()
    }

    /// A peer that holds the blob (`None`: all of it) or more of it.
    pub fn add_peer(&mut self, peer: P, available: Option<Groups>) {
        let entry = self.peers.entry(peer).or_insert(Peer {
            available: Some(Groups::empty()),
            in_flight: 0,
            limit: self.config.per_peer,
            paused_until: None,
            bytes: 0,
            first_request: None,
            banned: false,
        });
        entry.available = available;
    }

    /// A peer is gone: its requests go back to the others.
    pub fn remove_peer(&mut self, peer: P) {
        self.peers.remove(&peer);
        self.requests.retain(|_, request| request.peer != peer);
        // Requests handed out but not yet taken by the driver go too.
        self.actions
            .retain(|action| !matches!(action, Action::Request { peer: p, .. } if *p == peer));
    }

    /// Who holds the blob now, as asked after [`Action::AskHolders`]: each
    /// peer with what it has (`None`: all of it).
    pub fn on_holders(&mut self, holders: impl IntoIterator<Item = (P, Option<Groups>)>) {
        self.asking = false;
        for (peer, available) in holders {
            self.add_peer(peer, available);
        }
        self.found_nobody = self.usable_peers() == 0;
    }

    /// Whether the download is over: done, or given up.
    pub fn outcome(&self, now: Instant) -> Option<Result<(), Stuck>> {
        if self.is_complete() {
            return Some(Ok(()));
        }
        if self.requests.is_empty() && self.usable_peers() == 0 && !self.asking && self.found_nobody
        {
            return Some(Err(Stuck::NoHolder));
        }
        let silent = now.saturating_duration_since(self.last_progress?);
        (silent > self.config.stall_cutoff).then_some(Err(Stuck::Silent(silent)))
    }

    /// Chunk groups of request `key` arrived and were verified and stored.
    /// Data for a request already finished or cancelled still counts (it
    /// is real, verified data).
    pub fn on_verified(&mut self, key: u64, groups: &Groups, now: Instant) {
        self.last_progress = Some(now);
        let bytes = group_count(&(groups - &self.have)) * 16 * 1024;
        self.have |= groups.clone();
        if let Some(request) = self.requests.get(&key)
            && let Some(peer) = self.peers.get_mut(&request.peer)
        {
            peer.bytes += bytes;
        }
        // Requests whose every group arrived (perhaps from someone else)
        // are done with: their peers are told to stop sending (a request
        // that completes by itself is told too; it costs five bytes, and
        // a peer whose tail was stolen must not resend what arrived).
        let finished: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, request)| (&request.groups - &self.have).is_empty())
            .map(|(key, _)| *key)
            .collect();
        for finished in finished {
            self.finish(finished);
        }
        // A victim of stealing that has sent everything but the stolen
        // tail stops there: the thief is sending the tail, and the victim
        // would only send it again. Oldest first, so that of two requests
        // owing the same groups, one stays.
        if self.stolen {
            let keys: Vec<u64> = self.requests.keys().copied().collect();
            for key in keys {
                let Some(request) = self.requests.get(&key) else {
                    continue;
                };
                let others = self
                    .requests
                    .iter()
                    .filter(|(other, _)| **other != key)
                    .fold(Groups::empty(), |acc, (_, r)| acc | &r.groups);
                if (&(&request.groups - &self.have) - &others).is_empty() {
                    self.finish(key);
                }
            }
        }
    }

    /// Request `key` needs nothing more: its peer is told to stop.
    fn finish(&mut self, key: u64) {
        if let Some(request) = self.requests.remove(&key) {
            self.release(request.peer);
            self.actions.push_back(Action::Cancel {
                peer: request.peer,
                key,
            });
        }
    }

    /// Request `key` has been answered completely.
    pub fn on_done(&mut self, key: u64) {
        if let Some(request) = self.requests.remove(&key) {
            self.release(request.peer);
            let per_peer = self.config.per_peer;
            if let Some(state) = self.peers.get_mut(&request.peer) {
                state.limit = (state.limit + 1).min(per_peer);
            }
        }
    }

    /// When a paused peer may be asked again.
    pub fn wake_at(&self) -> Option<Instant> {
        self.peers.values().filter_map(|p| p.paused_until).min()
    }

    /// When to poll again: a paused peer may be asked, the holders are
    /// due to be asked, or the download gives up for silence.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let ask = self.next_ask.filter(|_| !self.asking);
        let cutoff = self
            .last_progress
            .map(|last| last + self.config.stall_cutoff + Duration::from_millis(1));
        [self.wake_at(), ask, cutoff].into_iter().flatten().min()
    }

    /// Request `key` failed; on [`Failure::Corrupt`] its peer is dropped
    /// and its other requests cancelled; on [`Failure::Gone`] a peer that
    /// failed [`Config::peer_failures_max`] times is dropped.
    pub fn on_failed(&mut self, key: u64, failure: Failure, now: Instant) {
        let Some(request) = self.requests.remove(&key) else {
            return;
        };
        self.release(request.peer);
        if failure == Failure::Gone {
            let count = self.failures.entry(request.peer).or_default();
            *count += 1;
            if *count >= self.config.peer_failures_max {
                self.remove_peer(request.peer);
                return;
            }
        }
        if let Failure::Busy = failure
            && let Some(state) = self.peers.get_mut(&request.peer)
        {
            state.limit = state.in_flight.max(1);
            state.paused_until = Some(now + BUSY_PAUSE);
        }
        if failure == Failure::Corrupt {
            if let Some(peer) = self.peers.get_mut(&request.peer) {
                peer.banned = true;
            }
            let others: Vec<u64> = self
                .requests
                .iter()
                .filter(|(_, r)| r.peer == request.peer)
                .map(|(key, _)| *key)
                .collect();
            for other in others {
                self.requests.remove(&other);
                self.release(request.peer);
                self.actions.push_back(Action::Cancel {
                    peer: request.peer,
                    key: other,
                });
            }
        }
    }

    fn release(&mut self, peer: P) {
        if let Some(state) = self.peers.get_mut(&peer) {
            state.in_flight = state.in_flight.saturating_sub(1);
        }
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self, now: Instant) -> Option<Action<P>> {
        let last_progress = *self.last_progress.get_or_insert(now);
        let next_ask = *self
            .next_ask
            .get_or_insert(last_progress + self.config.ask_every);
        if self.actions.is_empty() {
            self.schedule(now);
        }
        if self.actions.is_empty() && !self.asking && !self.is_complete() {
            // Nobody left: ask around once more before giving up; and ask
            // again now and then, for peers that fetched it meanwhile.
            let starved = self.requests.is_empty() && self.usable_peers() == 0;
            if (starved && !self.found_nobody) || now >= next_ask {
                self.asking = true;
                self.next_ask = Some(now + self.config.ask_every);
                return Some(Action::AskHolders);
            }
        }
        self.actions.pop_front()
    }

    fn in_flight_groups(&self) -> Groups {
        let mut all = Groups::empty();
        for request in self.requests.values() {
            all |= request.groups.clone();
        }
        all
    }

    fn schedule(&mut self, now: Instant) {
        if self.is_complete() {
            return;
        }
        for state in self.peers.values_mut() {
            if state.paused_until.is_some_and(|until| until <= now) {
                state.paused_until = None;
            }
        }
        // One request per peer per round, fastest first: every holder gets
        // work from the start, and a fast peer, whose requests finish
        // sooner, simply comes back for more.
        let mut order: Vec<(P, f64)> = self
            .peers
            .iter()
            .filter(|(_, state)| state.can_take())
            .map(|(peer, state)| (*peer, state.rate(now)))
            .collect();
        order.sort_by(|a, b| b.1.total_cmp(&a.1));
        loop {
            let mut handed_out = false;
            for &(peer, rate) in &order {
                if self.hand_out_one(peer, rate, now) {
                    handed_out = true;
                }
            }
            if !handed_out {
                break;
            }
        }
    }

    /// Gives `peer` one more request, if it has room and there is work it
    /// can do.
    fn hand_out_one(&mut self, peer: P, rate: f64, now: Instant) -> bool {
        let Some(state) = self.peers.get(&peer) else {
            return false;
        };
        if !state.can_take() {
            return false;
        }
        let available = state
            .available
            .clone()
            .unwrap_or_else(|| all_groups(self.size));
        let open = &(&self.missing() - &self.in_flight_groups()) & &available;
        let groups = match first_run(&open, self.config.request_groups) {
            Some(groups) => groups,
            None => match self.steal(peer, rate, &available, now) {
                Some(groups) => {
                    self.stolen = true;
                    groups
                }
                None => return false,
            },
        };
        let key = self.next_key;
        self.next_key += 1;
        if let Some(state) = self.peers.get_mut(&peer) {
            state.in_flight += 1;
            state.first_request.get_or_insert(now);
        }
        self.requests.insert(
            key,
            Request {
                peer,
                groups: groups.clone(),
            },
        );
        self.actions
            .push_back(Action::Request { peer, key, groups });
        true
    }

    /// The second half of what a slower peer still owes (all of it, if
    /// little is left), the most it can take.
    fn steal(&self, thief: P, thief_rate: f64, available: &Groups, now: Instant) -> Option<Groups> {
        let mut best: Option<Groups> = None;
        let mut best_count = 0u64;
        for request in self.requests.values() {
            if request.peer == thief {
                continue;
            }
            let victim_rate = self.peers.get(&request.peer).map_or(0.0, |p| p.rate(now));
            // Only from a peer no faster than the thief (or one that has
            // delivered nothing yet).
            if victim_rate > thief_rate && victim_rate > 0.0 {
                continue;
            }
            let owed = &(&request.groups - &self.have) & available;
            let count = group_count(&owed);
            if count == 0 || count <= best_count {
                continue;
            }
            // Already stolen: another request covers this tail.
            let others = self
                .requests
                .values()
                .filter(|r| r.peer != request.peer)
                .fold(Groups::empty(), |acc, r| acc | &r.groups);
            let tail = if count < self.config.steal_min_groups {
                owed
            } else {
                second_half(&owed)
            };
            if !(&tail & &others).is_empty() {
                continue;
            }
            best_count = count;
            best = Some(tail);
        }
        best
    }
}

/// The first `max` groups of the first run of `groups`.
fn first_run(groups: &Groups, max: u64) -> Option<Groups> {
    let (start, end) = *runs(groups).first()?;
    Some(Groups::from(start..end.min(start + max)))
}

/// The later half of a set of groups (by count).
fn second_half(groups: &Groups) -> Groups {
    let total = group_count(groups);
    let mut skip = total / 2;
    let mut out = Groups::empty();
    for (start, end) in runs(groups) {
        let len = end - start;
        if skip >= len {
            skip -= len;
            continue;
        }
        out |= Groups::from(start + skip..end);
        skip = 0;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MIB: u64 = 1024 * 1024;

    use fogwire_testkit::time::epoch;

    /// Simulates peers delivering at `speeds` (groups per tick); returns
    /// groups delivered per peer.
    fn simulate(size: u64, speeds: &[u64], corrupt: Option<usize>) -> (Download<usize>, Vec<u64>) {
        let start = epoch();
        let mut download =
            Download::new(Hash::of(b"blob"), size, Groups::empty(), Config::default());
        for peer in 0..speeds.len() {
            download.add_peer(peer, None);
        }
        // key → (peer, groups still to deliver in order)
        let mut open: BTreeMap<u64, (usize, Vec<u64>)> = BTreeMap::new();
        let mut delivered = vec![0u64; speeds.len()];
        for tick in 0..100_000u64 {
            let now = start + Duration::from_millis(tick);
            while let Some(action) = download.poll_action(now) {
                match action {
                    Action::Request { peer, key, groups } => {
                        let list = runs(&groups).into_iter().flat_map(|(s, e)| s..e).collect();
                        open.insert(key, (peer, list));
                    }
                    Action::Cancel { key, .. } => {
                        open.remove(&key);
                    }
                    Action::AskHolders => {
                        download.on_holders((0..speeds.len()).map(|peer| (peer, None)));
                    }
                }
            }
            if download.is_complete() {
                return (download, delivered);
            }
            for (peer, &speed) in speeds.iter().enumerate() {
                let mut budget = speed;
                let keys: Vec<u64> = open
                    .iter()
                    .filter(|(_, (p, _))| *p == peer)
                    .map(|(k, _)| *k)
                    .collect();
                for key in keys {
                    while budget > 0 {
                        let Some((_, list)) = open.get_mut(&key) else {
                            break;
                        };
                        let Some(group) = list.first().copied() else {
                            break;
                        };
                        list.remove(0);
                        budget -= 1;
                        if corrupt == Some(peer) {
                            open.remove(&key);
                            download.on_failed(key, Failure::Corrupt, now);
                            break;
                        }
                        delivered[peer] += 1;
                        download.on_verified(key, &Groups::from(group..group + 1), now);
                    }
                    if open.get(&key).is_some_and(|(_, list)| list.is_empty()) {
                        open.remove(&key);
                        download.on_done(key);
                    }
                }
            }
        }
        panic!("the download never completed");
    }

    #[test]
    fn one_peer_fetches_everything() {
        let (download, delivered) = simulate(100 * MIB, &[50], None);
        assert!(download.is_complete());
        assert_eq!(delivered[0], 6400);
    }

    #[test]
    fn a_busy_peer_gets_fewer_requests_after_a_pause() {
        let mut download =
            Download::new(Hash::of(b"x"), 64 * MIB, Groups::empty(), Config::default());
        download.add_peer(0usize, None);
        let now = epoch();
        let mut keys = Vec::new();
        while let Some(action) = download.poll_action(now) {
            if let Action::Request { key, .. } = action {
                keys.push(key);
            }
        }
        assert_eq!(keys.len(), Config::default().per_peer);
        // Two of its four are refused busy: it keeps two, and gets none
        // now.
        download.on_failed(keys[0], Failure::Busy, now);
        download.on_failed(keys[1], Failure::Busy, now);
        assert_eq!(download.poll_action(now), None);
        assert_eq!(download.wake_at(), Some(now + BUSY_PAUSE));
        // After the pause still none: it has as many as it may.
        let later = now + BUSY_PAUSE;
        assert_eq!(download.poll_action(later), None);
        // One completes: one more, then one more again as they complete.
        download.on_done(keys[2]);
        let next: Vec<_> = std::iter::from_fn(|| download.poll_action(later)).collect();
        assert_eq!(next.len(), 2, "{next:?}");
        assert_eq!(download.wake_at(), None);
        // Not counted as a failure: the peer stays usable.
        assert_eq!(download.usable_peers(), 1);
    }

    #[test]
    fn every_holder_gets_work_from_the_start() {
        // Three runs, two peers with room for four requests each: both
        // are asked, not one peer for all three.
        let mut download =
            Download::new(Hash::of(b"x"), 12 * MIB, Groups::empty(), Config::default());
        download.add_peer(0usize, None);
        download.add_peer(1usize, None);
        let now = epoch();
        let mut asked = [0u32; 2];
        while let Some(action) = download.poll_action(now) {
            if let Action::Request { peer, .. } = action {
                asked[peer] += 1;
            }
        }
        assert!(asked[0] >= 1 && asked[1] >= 1, "{asked:?}");
    }

    #[test]
    fn work_spreads_over_peers_and_moves_to_the_fast_one() {
        let (download, delivered) = simulate(200 * MIB, &[40, 40, 4], None);
        assert!(download.is_complete());
        let total: u64 = delivered.iter().sum();
        // Nothing much is fetched twice…
        assert!(total < 12_800 + 2 * 256, "{delivered:?}");
        // …and the slow peer did only a small share.
        assert!(delivered[2] * 8 < total, "{delivered:?}");
        assert!(delivered[0] > 0 && delivered[1] > 0);
    }

    #[test]
    fn the_tail_of_a_slow_peer_is_stolen() {
        // The slow peer holds its requests while the fast one finishes
        // everything else; stealing keeps the end from waiting on it.
        let (_, delivered) = simulate(16 * MIB, &[100, 1], None);
        assert!(delivered[1] < 256, "{delivered:?}");
    }

    #[test]
    fn a_peer_that_sends_nothing_holds_no_group_hostage() {
        // Bound proven: a peer that takes requests and answers none (or a
        // trickle) delays a download by nothing once another peer is
        // idle: its requests are halved away, the last few groups taken
        // whole (the end game), and at most steal_min_groups groups per
        // request are fetched twice.
        let (download, delivered) = simulate(12 * MIB, &[100, 0], None);
        assert!(download.is_complete());
        assert_eq!(delivered, vec![768, 0]);
    }

    #[test]
    fn a_lying_peer_is_dropped_and_the_others_finish() {
        let (download, delivered) = simulate(50 * MIB, &[20, 20, 20], Some(1));
        assert!(download.is_complete());
        assert_eq!(delivered[1], 0);
        assert_eq!(download.usable_peers(), 2);
    }

    #[test]
    fn a_resumed_download_asks_only_for_what_is_missing() {
        let size = 8 * MIB;
        let have = Groups::from(0..300);
        let mut download = Download::new(Hash::of(b"x"), size, have, Config::default());
        download.add_peer(1u8, None);
        let now = epoch();
        let mut asked = Groups::empty();
        while let Some(Action::Request { groups, key, .. }) = download.poll_action(now) {
            asked |= groups.clone();
            download.on_verified(key, &groups, now);
            download.on_done(key);
        }
        assert_eq!(asked, Groups::from(300..512));
        assert!(download.is_complete());
    }

    #[test]
    fn partial_peers_are_asked_only_for_what_they_hold() {
        let mut download =
            Download::new(Hash::of(b"x"), 4 * MIB, Groups::empty(), Config::default());
        download.add_peer(1u8, Some(Groups::from(0..100)));
        let now = epoch();
        while let Some(Action::Request { groups, key, .. }) = download.poll_action(now) {
            assert!(groups.is_subset(&Groups::from(0..100)));
            download.on_verified(key, &groups, now);
            download.on_done(key);
        }
        assert_eq!(download.missing(), Groups::from(100..256));
    }

    #[test]
    fn a_peer_that_keeps_failing_is_left_out() {
        let config = Config::default();
        let mut download = Download::new(Hash::of(b"x"), 64 * MIB, Groups::empty(), config.clone());
        download.add_peer(0usize, None);
        download.add_peer(1usize, None);
        let now = epoch();
        let mut failed = 0;
        while failed < config.peer_failures_max {
            let Some(action) = download.poll_action(now) else {
                break;
            };
            if let Action::Request { peer: 0, key, .. } = action {
                download.on_failed(key, Failure::Gone, now);
                failed += 1;
            }
        }
        assert_eq!(failed, config.peer_failures_max);
        assert_eq!(download.usable_peers(), 1);
        // Its later requests go to the other peer only.
        while let Some(action) = download.poll_action(now) {
            if let Action::Request { peer, .. } = action {
                assert_eq!(peer, 1);
            }
        }
    }

    #[test]
    fn with_nobody_left_the_holders_are_asked_once_more_then_it_gives_up() {
        let mut download: Download<usize> =
            Download::new(Hash::of(b"x"), 4 * MIB, Groups::empty(), Config::default());
        let now = epoch();
        assert_eq!(download.poll_action(now), Some(Action::AskHolders));
        assert_eq!(download.outcome(now), None);
        // Nobody has it: over.
        download.on_holders(Vec::new());
        assert_eq!(download.poll_action(now), None);
        assert_eq!(download.outcome(now), Some(Err(Stuck::NoHolder)));
    }

    #[test]
    fn holders_are_asked_again_and_silence_ends_the_download() {
        let config = Config::default();
        let mut download = Download::new(Hash::of(b"x"), 4 * MIB, Groups::empty(), config.clone());
        download.add_peer(0usize, None);
        let start = epoch();
        let mut keys = Vec::new();
        while let Some(action) = download.poll_action(start) {
            if let Action::Request { key, .. } = action {
                keys.push(key);
            }
        }
        assert!(!keys.is_empty());
        // A second later the holders are asked again; a new one joins.
        let later = start + config.ask_every;
        assert!(download.poll_timeout().is_some_and(|at| at <= later));
        assert_eq!(download.poll_action(later), Some(Action::AskHolders));
        download.on_holders([(0usize, None), (1usize, None)]);
        assert_eq!(download.usable_peers(), 2);
        // Nothing ever arrives: it gives up after the cutoff, not before.
        assert_eq!(download.outcome(start + config.stall_cutoff), None);
        let silent = start + config.stall_cutoff + Duration::from_millis(1);
        assert_eq!(
            download.outcome(silent),
            Some(Err(Stuck::Silent(
                config.stall_cutoff + Duration::from_millis(1)
            )))
        );
    }
}
