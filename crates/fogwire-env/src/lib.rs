//! What the outside world gives fogwire's protocol cores: the time and
//! randomness.
//!
//! - Time: a sans-IO core is handed the time. Timers use a monotonic
//!   [`Instant`]; what crosses the network or lands in records uses the wall
//!   clock in Unix milliseconds ([`UnixMs`]); a core that needs both takes
//!   [`Now`]. Drivers read the time from a [`Clock`] — [`SystemClock`] in a
//!   node, a [`ManualClock`] in tests that step time by hand.
//! - Randomness: a [`RandomSource`] fills buffers; a node uses the
//!   operating system's ([`os_random`]), a simulation one seeded from its
//!   seed ([`seeded`]), so that a run replays exactly. Noise handshakes
//!   (snow) draw their ephemeral and static keys from it too, through
//!   [`NoiseResolver`].
//!
//! Architecture invariant: the only place that reads the system clock and
//! the operating system's generator for the protocol cores.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver, FallbackResolver, RingResolver};
use snow::types::{Cipher, Dh, Hash, Random};

/// Wall-clock time: milliseconds since the Unix epoch.
pub type UnixMs = u64;

/// The time, twice: a monotonic instant for timers, and the wall clock for
/// what crosses the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub instant: Instant,
    pub unix_ms: UnixMs,
}

impl Now {
    /// `duration` later on both clocks.
    pub fn after(self, duration: Duration) -> Now {
        Now {
            instant: self.instant + duration,
            unix_ms: self
                .unix_ms
                .saturating_add(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

/// Where drivers read the time.
pub trait Clock: std::fmt::Debug + Send + Sync {
    fn now(&self) -> Now;

    fn instant(&self) -> Instant {
        self.now().instant
    }

    fn unix_ms(&self) -> UnixMs {
        self.now().unix_ms
    }
}

/// The machine's clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Now {
        Now {
            instant: Instant::now(),
            unix_ms: system_unix_ms(),
        }
    }

    fn unix_ms(&self) -> UnixMs {
        system_unix_ms()
    }
}

fn system_unix_ms() -> UnixMs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// The wall clock now, in Unix milliseconds (from [`SystemClock`]).
pub fn unix_ms() -> UnixMs {
    SystemClock.unix_ms()
}

/// The time now on both clocks (from [`SystemClock`]).
pub fn now() -> Now {
    SystemClock.now()
}

/// A clock that moves only when told: tests step virtual time with it.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<Now>,
}

impl ManualClock {
    /// A clock at `start` (its wall clock at `unix_ms`).
    pub fn new(start: Instant, unix_ms: UnixMs) -> Self {
        Self {
            now: Mutex::new(Now {
                instant: start,
                unix_ms,
            }),
        }
    }

    /// Moves the clock `by` forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self
            .now
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *now = now.after(by);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Now {
        *self
            .now
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Where random bytes come from: it fills the buffer it is given.
pub type RandomSource = Box<dyn FnMut(&mut [u8]) + Send>;

/// The operating system's generator. Without it keys would be
/// predictable; its failing is not something to carry on through.
pub fn os_random() -> RandomSource {
    Box::new(|bytes: &mut [u8]| {
        if getrandom::fill(bytes).is_err() {
            std::process::abort();
        }
    })
}

/// A generator (ChaCha20) that replays from `seed`: for simulations and
/// tests only, never for a node's keys.
pub fn seeded(seed: u64) -> RandomSource {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    Box::new(move |bytes: &mut [u8]| rng.fill_bytes(bytes))
}

/// `len` bytes from `seed` (xorshift64): reproducible data for tests, the
/// demo and benchmarks, incompressible enough that no layer can shortcut
/// it, and the same for the same seed on every run. Not randomness.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A snow resolver whose randomness is a ChaCha20 generator seeded with 32
/// bytes from a [`RandomSource`]: keys made in a Noise handshake then come
/// from that source (the operating system's in a node, a seeded one in a
/// simulation). Everything else is snow's usual (ring, then its own).
#[derive(Debug)]
pub struct NoiseResolver {
    seed: [u8; 32],
}

impl NoiseResolver {
    /// A resolver drawing its seed from `random`.
    pub fn from_source(random: &mut dyn FnMut(&mut [u8])) -> Self {
        let mut seed = [0u8; 32];
        random(&mut seed);
        Self { seed }
    }

    /// A resolver drawing its seed from the operating system.
    pub fn os() -> Self {
        Self::from_source(&mut os_random())
    }

    /// A snow builder for `params` that uses this resolver.
    pub fn builder<'a>(self, params: snow::params::NoiseParams) -> snow::Builder<'a> {
        snow::Builder::with_resolver(params, Box::new(self))
    }

    fn fallback() -> FallbackResolver {
        FallbackResolver::new(Box::new(RingResolver), Box::new(DefaultResolver))
    }
}

struct SeededRandom(ChaCha20Rng);

impl Random for SeededRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoResolver for NoiseResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(SeededRandom(ChaCha20Rng::from_seed(self.seed))))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        Self::fallback().resolve_dh(choice)
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        Self::fallback().resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        Self::fallback().resolve_cipher(choice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seeded_source_replays_and_noise_keys_follow_it() {
        let (mut a, mut b) = (seeded(7), seeded(7));
        let (mut x, mut y) = ([0u8; 64], [0u8; 64]);
        a(&mut x);
        b(&mut y);
        assert_eq!(x, y);
        let params: snow::params::NoiseParams = "Noise_XX_25519_ChaChaPoly_SHA256".parse().unwrap();
        let key = |seed| {
            NoiseResolver::from_source(&mut seeded(seed))
                .builder(params.clone())
                .generate_keypair()
                .unwrap()
                .private
        };
        assert_eq!(key(1), key(1));
        assert_ne!(key(1), key(2));
        // The operating system's differ every time.
        let os = || {
            NoiseResolver::os()
                .builder(params.clone())
                .generate_keypair()
                .unwrap()
        };
        assert_ne!(os().private, os().private);
    }

    #[test]
    fn a_manual_clock_moves_both_clocks_only_when_told() {
        let start = SystemClock.now();
        let clock = ManualClock::new(start.instant, start.unix_ms);
        assert_eq!(clock.now(), start);
        clock.advance(Duration::from_millis(1500));
        assert_eq!(clock.instant(), start.instant + Duration::from_millis(1500));
        assert_eq!(clock.unix_ms(), start.unix_ms + 1500);
    }
}
