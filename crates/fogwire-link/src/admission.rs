//! Which inbound connections get a handshake: a bound on handshakes in
//! progress, node-wide and per IP address, checked before a byte of the
//! connection is read. One address cannot hold every handshake slot (each
//! lasts up to the handshake timeout) and lock other peers out; and when
//! every slot is taken, a newcomer takes the slot of the oldest connection
//! that has sent nothing yet, or else of the oldest handshake that has had
//! [`EVICT_AFTER`] to finish, so sockets held open by many addresses
//! cannot keep every peer out either.
//!
//! Past [`PUZZLE_FREE_PER_SEC`] handshakes a second, a newcomer must
//! solve a puzzle before the node spends any X25519 on it
//! ([`crate::proto::puzzle`]): harder as the rate climbs, so a flood of
//! first messages costs its sender more CPU than the node.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::LinkStream;
use tokio_util::sync::CancellationToken;

use crate::establish::{EstablishError, Established};
use crate::proto::{Config, LinkIdentity};

/// Inbound handshakes from one IP address at once, by default.
pub const PER_ADDRESS_DEFAULT: usize = 8;
/// A handshake this old may lose its slot to a newcomer when all are
/// taken: an honest one on loopback or a LAN is done long before; one over
/// a slow path (1.5 round trips above 250 ms) may lose its slot under such
/// an attack, and is dialed again.
pub const EVICT_AFTER: Duration = Duration::from_millis(250);
/// Handshakes a second the node starts without asking for work: an
/// honest crowd (every peer redialing after an outage) rarely comes
/// faster, and a handshake costs the node about 0.2 ms of a core.
pub const PUZZLE_FREE_PER_SEC: u32 = 200;
/// The work asked once past that: 2^16 hashes, a few milliseconds of a
/// core — tens of times what the node spends on the handshake.
pub const PUZZLE_BITS_MIN: u8 = 16;
/// One more bit each time the rate doubles, up to this: 2^20 hashes,
/// about a tenth of a second on a PC and a second on a small ARM board.
pub const PUZZLE_BITS_MAX: u8 = 20;

/// Why a connection was refused a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    #[error("{0} handshakes already in progress (link.max_pending_handshakes)")]
    Busy(usize),
    #[error("{0} handshakes already in progress from this address")]
    AddressBusy(usize),
}

impl Refused {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::Busy(_) => "overloaded",
            Refused::AddressBusy(_) => "address_overloaded",
        }
    }
}

/// One handshake in progress.
#[derive(Debug)]
struct Pending {
    address: IpAddr,
    since: Instant,
    evicted: CancellationToken,
    /// Its first bytes have arrived (a silent socket has sent nothing).
    spoke: bool,
}

/// Handshakes in progress: by admission order, and per address.
#[derive(Debug, Default)]
struct Slots {
    next: u64,
    pending: BTreeMap<u64, Pending>,
    per_address: HashMap<IpAddr, usize>,
    evicted: u64,
    rate: Rate,
    puzzles: u64,
}

/// Handshakes admitted per second, over a sliding second.
#[derive(Debug, Default)]
struct Rate {
    window_start: Option<Instant>,
    current: u32,
    previous: u32,
}

impl Rate {
    /// Counts one at `now`; the rate over the second before it.
    fn count(&mut self, now: Instant) -> f64 {
        const WINDOW: Duration = Duration::from_secs(1);
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= WINDOW {
            self.previous = if elapsed >= 2 * WINDOW {
                0
            } else {
                self.current
            };
            self.current = 0;
            self.window_start = Some(start + WINDOW * (elapsed.as_secs() as u32));
        }
        self.current = self.current.saturating_add(1);
        let into = now
            .saturating_duration_since(self.window_start.unwrap_or(now))
            .as_secs_f64();
        f64::from(self.previous) * (1.0 - into).max(0.0) + f64::from(self.current)
    }
}

/// The puzzle bits a handshake admitted at `rate` per second must solve,
/// if any.
fn puzzle_bits(rate: f64) -> Option<u8> {
    let over = rate / f64::from(PUZZLE_FREE_PER_SEC);
    if over <= 1.0 {
        return None;
    }
    let extra = over
        .log2()
        .floor()
        .min(f64::from(PUZZLE_BITS_MAX - PUZZLE_BITS_MIN));
    Some(PUZZLE_BITS_MIN + extra as u8)
}

impl Slots {
    /// Frees slot `seq` (if it is still held); true if it was.
    fn free(&mut self, seq: u64) -> bool {
        let Some(Pending { address, .. }) = self.pending.remove(&seq) else {
            return false;
        };
        if let Some(count) = self.per_address.get_mut(&address) {
            *count -= 1;
            if *count == 0 {
                self.per_address.remove(&address);
            }
        }
        true
    }
}

/// The handshake slots of a listener. Cheap to clone; clones share slots.
#[derive(Debug, Clone)]
pub struct Admission {
    slots: Arc<Mutex<Slots>>,
    total_max: usize,
    per_address_max: usize,
}

/// A slot held for one handshake; dropping it frees the slot.
#[derive(Debug)]
pub struct Admitted {
    seq: u64,
    slots: Arc<Mutex<Slots>>,
    /// Cancelled when a newcomer takes this slot.
    evicted: CancellationToken,
    /// Handshakes in progress once this one was admitted, of how many.
    load: (usize, usize),
    /// The puzzle bits its dialer must solve first, if the node is under
    /// load.
    puzzle_bits: Option<u8>,
}

impl Admitted {
    /// How long this handshake may take, given `base` (the configured
    /// timeout): all of it while at most half the slots are in use; less
    /// as they fill, down to a tenth of it (never under 500 ms) for the
    /// last slot. Under a flood of connections that never finish, slots
    /// come back sooner, while an honest handshake (a few round trips)
    /// still fits.
    pub fn handshake_timeout(&self, base: Duration) -> Duration {
        let (in_progress, total) = self.load;
        let half = total.div_ceil(2).max(1);
        if in_progress <= half {
            return base;
        }
        let free = total.saturating_sub(in_progress);
        let floor = (base / 10).max(Duration::from_millis(500)).min(base);
        let scaled = base.mul_f64(free as f64 / (total - half).max(1) as f64);
        scaled.max(floor)
    }

    /// Runs the listener side of the handshake in this slot: within
    /// [`Admitted::handshake_timeout`], and given up if a newcomer takes
    /// the slot. The slot is freed when it returns.
    pub async fn establish(
        self,
        stream: LinkStream,
        remote_addr: SocketAddr,
        identity: &LinkIdentity,
        config: Arc<Config>,
    ) -> Result<Established, EstablishError> {
        let within = self.handshake_timeout(config.handshake_timeout);
        let started = tokio::time::Instant::now();
        // Until its first bytes arrive, any newcomer may take this slot
        // when all are taken; after, only once it is EVICT_AFTER old.
        // (A peek waits for a byte: readiness alone may be announced
        // before any arrives.)
        tokio::select! {
            peeked = tokio::time::timeout(within, stream.first_bytes()) => match peeked {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => return Err(EstablishError::Io(error)),
                Err(_) => {
                    return Err(EstablishError::Handshake(
                        crate::proto::HandshakeError::Timeout { timeout_ms: within.as_millis() },
                    ));
                }
            },
            () = self.evicted.cancelled() => return Err(EstablishError::Evicted),
        }
        if let Some(pending) = lock(&self.slots).pending.get_mut(&self.seq) {
            pending.spoke = true;
        }
        // The rest of the same deadline; a timeout names the whole budget.
        let rest = within.saturating_sub(started.elapsed());
        let puzzle = self.puzzle_bits.map(|bits| {
            let mut challenge = [0u8; crate::proto::puzzle::CHALLENGE_LEN];
            fogwire_env::os_random()(&mut challenge);
            crate::proto::puzzle::Puzzle { challenge, bits }
        });
        let handshake = tokio::time::timeout(
            rest,
            crate::establish::establish_asking(stream, remote_addr, identity, config, puzzle),
        );
        tokio::select! {
            result = handshake => result.unwrap_or(Err(EstablishError::Handshake(
                crate::proto::HandshakeError::Timeout { timeout_ms: within.as_millis() },
            ))),
            () = self.evicted.cancelled() => Err(EstablishError::Evicted),
        }
    }
}

fn lock(slots: &Mutex<Slots>) -> MutexGuard<'_, Slots> {
    slots
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Admission {
    /// At most `total` handshakes at once, `per_address` of them from one
    /// IP address.
    pub fn new(total: usize, per_address: usize) -> Self {
        Self {
            slots: Arc::default(),
            total_max: total.max(1),
            per_address_max: per_address.max(1),
        }
    }

    /// A slot for a connection from `address`, or why there is none.
    pub fn try_admit(&self, address: IpAddr) -> Result<Admitted, Refused> {
        self.try_admit_at(address, Instant::now())
    }

    /// [`Admission::try_admit`] at `now`.
    pub fn try_admit_at(&self, address: IpAddr, now: Instant) -> Result<Admitted, Refused> {
        let mut slots = lock(&self.slots);
        let count = slots.per_address.get(&address).copied().unwrap_or(0);
        if count >= self.per_address_max {
            return Err(Refused::AddressBusy(count));
        }
        if slots.pending.len() >= self.total_max {
            // The oldest connection that has sent nothing gives way, or
            // else the oldest handshake that has had its time.
            // The address holding the most slots gives way first (and a
            // newcomer never takes a slot from another address holding
            // fewer than it would): its oldest connection that has sent
            // nothing, or else its oldest handshake that has had its time.
            let held = |pending: &Pending| slots.per_address.get(&pending.address).copied();
            let pick = |evictable: &dyn Fn(&Pending) -> bool| {
                slots
                    .pending
                    .iter()
                    .filter(|(_, pending)| evictable(pending))
                    .filter(|(_, pending)| {
                        pending.address == address || held(pending).unwrap_or(0) > count
                    })
                    .max_by_key(|(seq, pending)| (held(pending), std::cmp::Reverse(**seq)))
                    .map(|(seq, pending)| (*seq, pending.evicted.clone()))
            };
            let oldest = pick(&|pending| !pending.spoke).or_else(|| {
                pick(&|pending| now.saturating_duration_since(pending.since) >= EVICT_AFTER)
            });
            let Some((seq, token)) = oldest else {
                return Err(Refused::Busy(self.total_max));
            };
            token.cancel();
            slots.free(seq);
            slots.evicted += 1;
        }
        let seq = slots.next;
        slots.next += 1;
        let evicted = CancellationToken::new();
        slots.pending.insert(
            seq,
            Pending {
                address,
                since: now,
                evicted: evicted.clone(),
                spoke: false,
            },
        );
        *slots.per_address.entry(address).or_default() += 1;
        let puzzle_bits = puzzle_bits(slots.rate.count(now));
        slots.puzzles += u64::from(puzzle_bits.is_some());
        Ok(Admitted {
            seq,
            slots: self.slots.clone(),
            evicted,
            load: (slots.pending.len(), self.total_max),
            puzzle_bits,
        })
    }

    /// Handshakes in progress.
    pub fn in_progress(&self) -> usize {
        lock(&self.slots).pending.len()
    }

    /// Handshakes that gave their slot to a newcomer, since the start.
    pub fn evicted(&self) -> u64 {
        lock(&self.slots).evicted
    }

    /// Handshakes asked to solve a puzzle first, since the start.
    pub fn puzzles(&self) -> u64 {
        lock(&self.slots).puzzles
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        lock(&self.slots).free(self.seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn handshakes_get_less_time_as_the_slots_fill() {
        let admission = Admission::new(8, 8);
        let base = Duration::from_secs(10);
        let mut held = Vec::new();
        let mut timeouts = Vec::new();
        for _ in 0..8 {
            let admitted = admission.try_admit(A).unwrap();
            timeouts.push(admitted.handshake_timeout(base));
            held.push(admitted);
        }
        let secs: Vec<f64> = timeouts.iter().map(Duration::as_secs_f64).collect();
        // Half the slots: the whole timeout; then less, to a tenth.
        assert_eq!(secs, vec![10.0, 10.0, 10.0, 10.0, 7.5, 5.0, 2.5, 1.0]);
        // Slots freed: the whole timeout again.
        held.clear();
        let admitted = admission.try_admit(A).unwrap();
        assert_eq!(admitted.handshake_timeout(base), base);
        // Never under 500 ms, nor over the base.
        let mut last = admission.try_admit(B).unwrap();
        last.load = (8, 8);
        assert_eq!(
            last.handshake_timeout(Duration::from_secs(2)),
            Duration::from_millis(500)
        );
        assert_eq!(
            last.handshake_timeout(Duration::from_millis(300)),
            Duration::from_millis(300)
        );
    }

    #[test]
    fn one_address_cannot_take_every_slot_and_slots_come_back() {
        let admission = Admission::new(3, 2);
        let first = admission.try_admit(A).unwrap();
        let second = admission.try_admit(A).unwrap();
        assert_eq!(admission.try_admit(A).unwrap_err(), Refused::AddressBusy(2));
        let other = admission.try_admit(B).unwrap();
        assert_eq!(admission.in_progress(), 3);
        // The node is full, every handshake has spoken and is young: B is
        // refused.
        for admitted in [&first, &second, &other] {
            spoke(&admission, admitted);
        }
        assert_eq!(admission.try_admit(B).unwrap_err(), Refused::Busy(3));
        drop(first);
        assert_eq!(admission.in_progress(), 2);
        let _again = admission.try_admit(A).unwrap();
    }

    fn spoke(admission: &Admission, admitted: &Admitted) {
        if let Some(pending) = lock(&admission.slots).pending.get_mut(&admitted.seq) {
            pending.spoke = true;
        }
    }

    #[test]
    fn past_the_free_rate_handshakes_must_solve_a_puzzle_harder_as_the_rate_climbs() {
        // Bound: at most PUZZLE_FREE_PER_SEC handshakes a second get the
        // node's X25519 for free; above, each costs its sender 2^16 hashes
        // or more, one bit more per doubling, never above the maximum.
        let admission = Admission::new(1_000_000, 1_000_000);
        let start = fogwire_testkit::time::epoch();
        let free = PUZZLE_FREE_PER_SEC as usize;
        let bits_at = |at: Instant| admission.try_admit_at(A, at).unwrap().puzzle_bits;
        let first: Vec<Option<u8>> = (0..free).map(|_| bits_at(start)).collect();
        assert!(first.iter().all(Option::is_none));
        assert_eq!(bits_at(start), Some(PUZZLE_BITS_MIN));
        // Twice the free rate: one bit more.
        for _ in free + 1..2 * free {
            bits_at(start);
        }
        assert_eq!(bits_at(start), Some(PUZZLE_BITS_MIN + 1));
        // A flood: never above the maximum.
        for _ in 0..100 * free {
            bits_at(start);
        }
        assert_eq!(bits_at(start), Some(PUZZLE_BITS_MAX));
        assert!(admission.puzzles() > 100 * free as u64);
        // Two quiet seconds later the rate is forgotten.
        assert_eq!(bits_at(start + Duration::from_secs(2)), None);
        // Half a second into the next window, half the last one counts.
        let later = start + Duration::from_secs(5);
        for _ in 0..2 * free {
            bits_at(later);
        }
        let half_past = later + Duration::from_millis(1500);
        assert_eq!(bits_at(half_past), Some(PUZZLE_BITS_MIN));
    }

    #[test]
    fn an_address_with_no_handshake_left_is_forgotten() {
        let admission = Admission::new(4, 4);
        drop(admission.try_admit(A).unwrap());
        assert!(lock(&admission.slots).per_address.is_empty());
    }

    #[test]
    fn when_full_a_newcomer_takes_the_slot_of_the_oldest_handshake_past_its_grace() {
        // Bound: with every slot held by handshakes that have spoken but not
        // finished, a newcomer still gets one once the oldest is EVICT_AFTER
        // old; the evicted handshake is told, and its slot counted once.
        let admission = Admission::new(2, 8);
        let start = fogwire_testkit::time::epoch();
        let oldest = admission.try_admit_at(A, start).unwrap();
        let younger = admission.try_admit_at(A, start + EVICT_AFTER / 2).unwrap();
        spoke(&admission, &oldest);
        spoke(&admission, &younger);
        assert_eq!(
            admission
                .try_admit_at(B, start + EVICT_AFTER / 2)
                .unwrap_err(),
            Refused::Busy(2)
        );
        let newcomer = admission.try_admit_at(B, start + EVICT_AFTER).unwrap();
        assert!(oldest.evicted.is_cancelled());
        assert_eq!(admission.in_progress(), 2);
        assert_eq!(admission.evicted(), 1);
        // The evicted handshake ending frees nothing more.
        drop(oldest);
        assert_eq!(admission.in_progress(), 2);
        drop(newcomer);
        assert_eq!(admission.in_progress(), 1);
        assert_eq!(lock(&admission.slots).per_address.get(&A), Some(&1));
        drop(younger);
    }

    #[test]
    fn a_connection_that_has_sent_nothing_gives_way_at_once_when_all_slots_are_taken() {
        // Bound: silent sockets hold no slot a newcomer needs, whatever
        // their age; a handshake whose bytes arrived keeps its slot.
        let admission = Admission::new(2, 8);
        let start = fogwire_testkit::time::epoch();
        let talking = admission.try_admit_at(A, start).unwrap();
        spoke(&admission, &talking);
        let silent = admission.try_admit_at(A, start).unwrap();
        let newcomer = admission.try_admit_at(B, start).unwrap();
        assert!(silent.evicted.is_cancelled());
        assert!(!talking.evicted.is_cancelled());
        drop(newcomer);
    }

    #[test]
    fn the_address_holding_most_slots_gives_way_and_never_takes_from_a_lighter_one() {
        // Bound: sockets from many connections per address cannot push out
        // an address that holds fewer; a newcomer from a light address
        // takes a heavy address's slot.
        let admission = Admission::new(4, 8);
        let start = fogwire_testkit::time::epoch();
        let light = admission.try_admit_at(A, start).unwrap();
        let heavy: Vec<Admitted> = (0..3)
            .map(|_| admission.try_admit_at(B, start).unwrap())
            .collect();
        // B (3 held) cannot take A's only slot, silent as it is; it takes
        // its own oldest silent one.
        let c = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 3));
        let again = admission.try_admit_at(B, start).unwrap();
        assert!(heavy[0].evicted.is_cancelled());
        assert!(!light.evicted.is_cancelled());
        // A newcomer from a third address takes B's next oldest.
        let newcomer = admission.try_admit_at(c, start).unwrap();
        assert!(heavy[1].evicted.is_cancelled());
        assert!(!light.evicted.is_cancelled());
        drop((again, newcomer));
    }
}
