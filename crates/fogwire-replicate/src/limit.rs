//! A cap on the bytes per second this node serves, across all peers: a
//! token bucket that serving threads draw from before each message.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::lock;

/// At most this much can be sent in one burst after idling.
const BURST: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub(crate) struct Limiter {
    bytes_per_sec: u64,
    /// Bytes that may be sent now (negative: owed), and when last filled.
    bucket: Mutex<(f64, Instant)>,
}

impl Limiter {
    /// None: no cap.
    pub(crate) fn new(bytes_per_sec: u64) -> Option<Limiter> {
        (bytes_per_sec > 0).then(|| Limiter {
            bytes_per_sec,
            bucket: Mutex::new((0.0, Instant::now())),
        })
    }

    /// Takes `bytes` from the bucket, sleeping (this is a blocking thread)
    /// while it owes.
    pub(crate) fn take_blocking(&self, bytes: u64) {
        let wait = self.debit(bytes, Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }

    /// Takes `bytes` at `now`; returns how long until the debt is paid.
    fn debit(&self, bytes: u64, now: Instant) -> Duration {
        let rate = self.bytes_per_sec as f64;
        let mut bucket = lock(&self.bucket);
        let refill = now.saturating_duration_since(bucket.1).as_secs_f64() * rate;
        bucket.0 = (bucket.0 + refill).min(rate * BURST.as_secs_f64());
        bucket.1 = now;
        bucket.0 -= bytes as f64;
        if bucket.0 < 0.0 {
            Duration::from_secs_f64(-bucket.0 / rate)
        } else {
            Duration::ZERO
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
        let limiter = Limiter::new(1_000_000).unwrap();
        let start = lock(&limiter.bucket).1;
        let at = |ms: u64| start + Duration::from_millis(ms);
        // 500 kB at 1 MB/s: half a second owed.
        assert_eq!(limiter.debit(500_000, at(0)).as_millis(), 500);
        // Paid by then: nothing more owed for nothing more sent.
        assert_eq!(limiter.debit(0, at(500)), Duration::ZERO);
        // A long idle allows a burst of 100 ms worth, no more.
        assert_eq!(limiter.debit(100_000, at(10_500)), Duration::ZERO);
        assert_eq!(limiter.debit(100_000, at(10_500)).as_millis(), 100);
    }
}
