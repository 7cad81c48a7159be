//! A cap on the bytes per second this node serves, across all peers: a
//! GCRA rate limiter (governor) that serving threads wait on before each
//! message, counting in KiB.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// At most this much can be sent in one burst after idling.
const BURST: Duration = Duration::from_millis(100);
/// The limiter counts in units of this many bytes.
const UNIT: u64 = 1024;

#[derive(Debug)]
pub(crate) struct Limiter {
    limiter: DefaultDirectRateLimiter,
    clock: DefaultClock,
    /// Units one check may take (the burst).
    burst: NonZeroU32,
}

impl Limiter {
    /// None: no cap.
    pub(crate) fn new(bytes_per_sec: u64) -> Option<Limiter> {
        let per_sec = u32::try_from(bytes_per_sec.div_ceil(UNIT)).unwrap_or(u32::MAX);
        let per_sec = NonZeroU32::new(per_sec)?;
        let burst_units = (u64::from(per_sec.get()) * BURST.as_millis() as u64 / 1000).max(1);
        let burst = NonZeroU32::new(u32::try_from(burst_units).unwrap_or(u32::MAX))?;
        let clock = DefaultClock::default();
        let quota = Quota::per_second(per_sec).allow_burst(burst);
        Some(Limiter {
            limiter: RateLimiter::direct_with_clock(quota, clock.clone()),
            clock,
            burst,
        })
    }

    /// Takes `bytes`, sleeping (this is a blocking thread) until the rate
    /// allows them.
    pub(crate) fn take_blocking(&self, bytes: u64) {
        let mut units = bytes.div_ceil(UNIT);
        while units > 0 {
            let take = units.min(u64::from(self.burst.get())) as u32;
            let Some(n) = NonZeroU32::new(take) else {
                return;
            };
            // At most the burst: never refused for capacity.
            while let Ok(Err(not_until)) = self.limiter.check_n(n) {
                std::thread::sleep(not_until.wait_time_from(self.clock.now()));
            }
            units -= u64::from(take);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_rate_means_no_limiter() {
        assert!(Limiter::new(0).is_none());
    }

    #[test]
    fn sending_waits_for_the_rate_and_idling_buys_only_a_short_burst() {
        // 1 MB/s: about 977 KiB a second, a burst of 97 KiB.
        let limiter = Limiter::new(1_000_000).unwrap();
        assert_eq!(limiter.burst.get(), 97);
        // After idling, the burst is there at once, and no more.
        assert!(matches!(limiter.limiter.check_n(limiter.burst), Ok(Ok(_))));
        assert!(matches!(limiter.limiter.check_n(limiter.burst), Ok(Err(_))));
        // 400 KiB more cannot go faster than the rate: at least 0.4 s
        // less what refilled meanwhile.
        let started = std::time::Instant::now();
        limiter.take_blocking(400 * 1024);
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
}
