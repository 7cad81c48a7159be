//! Reconnect delays: exponential, capped, with jitter so that the boards of
//! a box that lost their switch do not all redial in the same instant.

use std::time::Duration;

/// Delays between attempts to reach a peer.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            next: initial,
        }
    }

    /// The delay before the next attempt. `random` in `[0, 1)` spreads it
    /// over ±25 % of its nominal value. Each call doubles the nominal value
    /// up to the maximum.
    pub fn next_delay(&mut self, random: f64) -> Duration {
        let nominal = self.next;
        self.next = (self.next * 2).min(self.max);
        let factor = 0.75 + 0.5 * random.clamp(0.0, 1.0);
        nominal.mul_f64(factor).min(self.max)
    }

    /// Back to the initial delay, after a link that worked.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// A number in `[0, 1)` from the operating system's generator, for jitter.
pub fn jitter() -> f64 {
    let mut bytes = [0u8; 4];
    // Without randomness the delay is merely not spread; never fatal.
    let _ = getrandom::fill(&mut bytes);
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(4));
        let nominal: Vec<u64> = (0..6)
            .map(|_| backoff.next_delay(0.5).as_millis() as u64)
            .collect();
        assert_eq!(nominal, vec![500, 1000, 2000, 4000, 4000, 4000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(0.5), Duration::from_millis(500));
    }

    #[test]
    fn jitter_stays_within_a_quarter() {
        let mut low = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut high = low.clone();
        assert_eq!(low.next_delay(0.0), Duration::from_millis(750));
        let highest = high.next_delay(0.999_999);
        assert!(highest > Duration::from_millis(1249) && highest < Duration::from_millis(1250));
        for _ in 0..100 {
            let value = jitter();
            assert!((0.0..1.0).contains(&value));
        }
    }
}
