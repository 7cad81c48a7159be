//! When the outbox tries a recipient again, and when it gives up.
//!
//! A failed attempt to reach a recipient (no route, no answer, a refused
//! stream) waits [`delay_ms`] before the next: 1 s, doubling, at most
//! 30 s, plus up to a second of jitter so many senders do not retry a
//! returning node in step. A message undelivered for [`TTL_MS`] (14 days)
//! is given up on and marked failed.

/// The first wait after a failure.
pub const FIRST_MS: u64 = 1_000;
/// The longest wait between attempts.
pub const MAX_MS: u64 = 30_000;
/// How long a message is tried before it is marked failed.
pub const TTL_MS: u64 = 14 * 24 * 60 * 60 * 1_000;

/// The wait after `failures` failures in a row (at least 1), with
/// `jitter_ms` (taken modulo 1 000) added.
pub fn delay_ms(failures: u32, jitter_ms: u64) -> u64 {
    let doublings = failures.saturating_sub(1).min(16);
    (FIRST_MS << doublings).min(MAX_MS) + jitter_ms % 1_000
}

/// Whether a message sent at `sent_ms` has outlived its time to live.
pub fn expired(sent_ms: u64, now_ms: u64) -> bool {
    now_ms.saturating_sub(sent_ms) >= TTL_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_their_bound() {
        assert_eq!(delay_ms(1, 0), 1_000);
        assert_eq!(delay_ms(2, 0), 2_000);
        assert_eq!(delay_ms(5, 0), 16_000);
        assert_eq!(delay_ms(6, 0), MAX_MS);
        assert_eq!(delay_ms(u32::MAX, 0), MAX_MS);
        assert_eq!(delay_ms(1, 1_999), 1_999);
    }

    #[test]
    fn a_message_expires_after_fourteen_days() {
        assert!(!expired(1_000, 1_000 + TTL_MS - 1));
        assert!(expired(1_000, 1_000 + TTL_MS));
        assert!(!expired(5_000, 1_000));
    }
}
