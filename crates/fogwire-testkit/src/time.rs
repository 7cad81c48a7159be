//! Virtual time for the sans-IO cores, and two endpoints joined in memory.
//!
//! The cores are handed the time; tests read the clock once ([`epoch`])
//! and compute every later instant from it, so a test steps an hour of
//! timers in microseconds and runs the same way every time.

use std::time::{Duration, Instant};

/// The origin of a test's virtual time: the one reading of the clock.
/// Any instant would do; the cores only compare instants they are handed.
#[allow(clippy::disallowed_methods)]
pub fn epoch() -> Instant {
    Instant::now()
}

/// One end of a [`Pair`]: a sans-IO core that takes bytes and the time
/// and gives bytes for its peer.
pub trait Endpoint {
    /// Takes bytes the peer sent.
    fn receive(&mut self, bytes: &[u8], now: Instant);

    /// The next bytes for the peer, if any are ready.
    fn transmit(&mut self, now: Instant) -> Option<Vec<u8>>;

    /// Time has moved to `now`: fire what is due.
    fn timeout(&mut self, _now: Instant) {}
}

/// Two endpoints joined by a lossless in-memory pipe, on virtual time.
#[derive(Debug)]
pub struct Pair<A, B> {
    pub now: Instant,
    pub a: A,
    pub b: B,
}

impl<A: Endpoint, B: Endpoint> Pair<A, B> {
    pub fn new(a: A, b: B) -> Self {
        Self::at(epoch(), a, b)
    }

    pub fn at(now: Instant, a: A, b: B) -> Self {
        Self { now, a, b }
    }

    /// Moves one batch each way; returns the bytes moved.
    pub fn step(&mut self) -> usize {
        step(&mut self.a, &mut self.b, self.now)
    }

    /// Moves everything each side sends until both are quiet; returns the
    /// bytes moved.
    pub fn pump(&mut self) -> usize {
        pump(&mut self.a, &mut self.b, self.now)
    }

    /// Moves virtual time on by `by` and lets both ends fire their timers.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        self.a.timeout(self.now);
        self.b.timeout(self.now);
    }
}

/// Moves one batch each way between `a` and `b`; returns the bytes moved
/// (an empty message counts as one, so that it is not taken for quiet).
pub fn step(a: &mut impl Endpoint, b: &mut impl Endpoint, now: Instant) -> usize {
    let mut moved = 0;
    if let Some(bytes) = a.transmit(now) {
        moved += bytes.len().max(1);
        b.receive(&bytes, now);
    }
    if let Some(bytes) = b.transmit(now) {
        moved += bytes.len().max(1);
        a.receive(&bytes, now);
    }
    moved
}

/// Moves everything `a` and `b` send each other until both are quiet;
/// returns the bytes moved.
pub fn pump(a: &mut impl Endpoint, b: &mut impl Endpoint, now: Instant) -> usize {
    let mut total = 0;
    loop {
        let moved = step(a, b, now);
        if moved == 0 {
            return total;
        }
        total += moved;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Echoes what it receives, and says "tick" when its timer fires.
    #[derive(Default)]
    struct Echo {
        outbox: Vec<Vec<u8>>,
        heard: Vec<Vec<u8>>,
    }

    impl Endpoint for Echo {
        fn receive(&mut self, bytes: &[u8], _now: Instant) {
            self.heard.push(bytes.to_vec());
            if bytes != b"tick" && self.heard.len() < 3 {
                self.outbox.push(bytes.to_vec());
            }
        }

        fn transmit(&mut self, _now: Instant) -> Option<Vec<u8>> {
            self.outbox.pop()
        }

        fn timeout(&mut self, _now: Instant) {
            self.outbox.push(b"tick".to_vec());
        }
    }

    #[test]
    fn a_pair_pumps_until_both_ends_are_quiet_and_advances_their_timers() {
        let mut pair = Pair::new(Echo::default(), Echo::default());
        pair.a.outbox.push(b"hi".to_vec());
        assert!(pair.pump() > 0);
        // a → b, echoed back, echoed again, until each has heard it thrice
        // or stopped echoing.
        assert_eq!(pair.b.heard.len(), 3);
        assert_eq!(pair.a.heard.len(), 2);
        assert_eq!(pair.pump(), 0);
        let before = pair.now;
        pair.advance(Duration::from_secs(3600));
        assert_eq!(pair.now - before, Duration::from_secs(3600));
        pair.pump();
        assert_eq!(pair.a.heard.last().unwrap(), b"tick");
        assert_eq!(pair.b.heard.last().unwrap(), b"tick");
    }
}
