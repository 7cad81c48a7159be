//! Per-key rate limits (per origin, per neighbour): governor's GCRA, keyed,
//! on a clock moved to the times the sans-IO core is handed — so a test or
//! a simulation drives it exactly, and the core reads no clock itself.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::time::Duration;

type Limiter<K> = governor::RateLimiter<
    K,
    governor::state::keyed::HashMapStateStore<K>,
    governor::clock::FakeRelativeClock,
    governor::middleware::NoOpMiddleware<governor::nanos::Nanos>,
>;

/// A burst, then one per period, for each key.
pub(crate) struct KeyedRate<K: Hash + Eq + Clone> {
    limiter: Limiter<K>,
    clock: governor::clock::FakeRelativeClock,
    /// The latest time handed in, in milliseconds of the caller's clock
    /// (the limiter's clock never goes back).
    at_ms: Option<u64>,
}

impl<K: Hash + Eq + Clone> std::fmt::Debug for KeyedRate<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedRate").finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone> KeyedRate<K> {
    pub(crate) fn new(burst: u32, period: Duration) -> Self {
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        // A period above zero always makes a quota.
        let quota = governor::Quota::with_period(period.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| governor::Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        let clock = governor::clock::FakeRelativeClock::default();
        Self {
            limiter: governor::RateLimiter::new(quota, Default::default(), clock.clone()),
            clock,
            at_ms: None,
        }
    }

    /// Moves the clock to `now_ms` (never back).
    pub(crate) fn advance_to(&mut self, now_ms: u64) {
        let last = *self.at_ms.get_or_insert(now_ms);
        if now_ms > last {
            self.clock.advance(Duration::from_millis(now_ms - last));
            self.at_ms = Some(now_ms);
        }
    }

    /// Spends one of `key`'s tokens at `now_ms`; false when none is left.
    pub(crate) fn check(&mut self, key: &K, now_ms: u64) -> bool {
        self.advance_to(now_ms);
        self.limiter.check_key(key).is_ok()
    }

    /// Forgets keys back to a full burst (indistinguishable from new), so
    /// the table holds only keys that spent recently.
    pub(crate) fn forget_idle(&self) {
        self.limiter.retain_recent();
    }
}
