//! The work a listener under load asks of a dialer before it spends any
//! Diffie–Hellman on it.
//!
//! Over TCP the dialer's address is already proven by the TCP handshake,
//! so a cookie alone (WireGuard's, QUIC's Retry) would prove nothing more.
//! What a flood of handshake openers costs a listener is CPU: four X25519
//! operations for every first message, which costs the attacker nothing
//! to send. Under load the listener answers a first message with a RETRY
//! carrying a fresh random challenge and a difficulty, at the cost of one
//! random draw; the dialer must find a nonce whose hash with the challenge
//! starts with that many zero bits (2^bits hashes on average) and send its
//! first message again, with the solution, on the same connection. The
//! listener checks it with one hash. The challenge is new for every
//! connection, so a solution cannot be replayed. The byte layout is in
//! `docs/protocol/link.md` §3.

/// The body of a RETRY record starts with these four bytes.
pub const RETRY_MAGIC: &[u8; 4] = b"RTRY";
/// Length of a challenge.
pub const CHALLENGE_LEN: usize = 16;
/// Length of a RETRY record's body: magic, bits, challenge. No message 2
/// is this short, so a dialer tells the two apart by length.
pub const RETRY_LEN: usize = RETRY_MAGIC.len() + 1 + CHALLENGE_LEN;
/// Length of a first message's payload that carries a solution: version,
/// challenge, nonce.
pub const SOLUTION_PAYLOAD_LEN: usize = 1 + CHALLENGE_LEN + 8;
/// The most zero bits a listener may ask for (a puzzle's bits are
/// `1..=BITS_MAX`).
pub const BITS_MAX: u8 = 32;
/// The most zero bits a fogwire dialer agrees to find: 2^24 hashes, about
/// two seconds of one core. A listener asking for more is refused.
pub const BITS_ACCEPTED_MAX: u8 = 24;
/// Domain separation: the hash input starts with this.
const DOMAIN: &[u8] = b"fogwire/link/puzzle/v1";

/// A challenge and how many leading zero bits its solution's hash needs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Puzzle {
    pub challenge: [u8; CHALLENGE_LEN],
    pub bits: u8,
}

impl Puzzle {
    /// Whether `nonce` solves the puzzle: BLAKE3(domain ‖ challenge ‖
    /// nonce as 8 big-endian bytes) starts with `bits` zero bits.
    pub fn check(&self, nonce: u64) -> bool {
        leading_zero_bits(&self.hash(nonce)) >= u32::from(self.bits)
    }

    fn hash(&self, nonce: u64) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new();
        hasher.update(DOMAIN);
        hasher.update(&self.challenge);
        hasher.update(&nonce.to_be_bytes());
        *hasher.finalize().as_bytes()
    }

    /// The smallest nonce that solves the puzzle, trying at most 2^(bits +
    /// 8) of them (the odds of needing more are e^-256); `None` past that.
    /// CPU-bound: 2^bits hashes on average, so a driver runs it off its
    /// event loop.
    pub fn solve(&self) -> Option<u64> {
        let tries = 1u64 << (u32::from(self.bits.min(BITS_MAX)) + 8);
        (0..tries).find(|nonce| self.check(*nonce))
    }

    /// The RETRY record's body.
    pub fn encode_retry(&self) -> [u8; RETRY_LEN] {
        let mut body = [0u8; RETRY_LEN];
        body[..4].copy_from_slice(RETRY_MAGIC);
        body[4] = self.bits;
        body[5..].copy_from_slice(&self.challenge);
        body
    }

    /// Reads a RETRY record's body; `None` if it is not one (a message 2).
    pub fn decode_retry(body: &[u8]) -> Option<Result<Self, u8>> {
        if body.len() != RETRY_LEN || !body.starts_with(RETRY_MAGIC) {
            return None;
        }
        let bits = body[4];
        if bits == 0 || bits > BITS_MAX {
            return Some(Err(bits));
        }
        let mut challenge = [0u8; CHALLENGE_LEN];
        challenge.copy_from_slice(&body[5..]);
        Some(Ok(Self { challenge, bits }))
    }

    /// A first message's payload carrying `nonce` as this puzzle's
    /// solution.
    pub fn solution_payload(&self, version: u8, nonce: u64) -> [u8; SOLUTION_PAYLOAD_LEN] {
        let mut payload = [0u8; SOLUTION_PAYLOAD_LEN];
        payload[0] = version;
        payload[1..1 + CHALLENGE_LEN].copy_from_slice(&self.challenge);
        payload[1 + CHALLENGE_LEN..].copy_from_slice(&nonce.to_be_bytes());
        payload
    }

    /// Whether a first message's payload (after its version byte) answers
    /// this puzzle: the same challenge, and a nonce that solves it.
    pub fn accepts(&self, solution: &[u8]) -> bool {
        let Some((challenge, nonce)) = solution.split_first_chunk::<CHALLENGE_LEN>() else {
            return false;
        };
        let Ok(nonce) = <[u8; 8]>::try_from(nonce) else {
            return false;
        };
        challenge == &self.challenge && self.check(u64::from_be_bytes(nonce))
    }
}

fn leading_zero_bits(hash: &[u8; 32]) -> u32 {
    let mut bits = 0;
    for byte in hash {
        bits += byte.leading_zeros();
        if *byte != 0 {
            break;
        }
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_solution_has_the_bits_asked_and_a_wrong_one_is_refused() {
        let puzzle = Puzzle {
            challenge: [7; CHALLENGE_LEN],
            bits: 12,
        };
        let nonce = puzzle.solve().unwrap();
        assert!(puzzle.check(nonce));
        assert!(leading_zero_bits(&puzzle.hash(nonce)) >= 12);
        // Every smaller nonce fails: solve returns the first.
        assert!((0..nonce).all(|n| !puzzle.check(n)));
        // The solution is bound to its challenge.
        let other = Puzzle {
            challenge: [8; CHALLENGE_LEN],
            ..puzzle
        };
        let payload = puzzle.solution_payload(1, nonce);
        assert!(puzzle.accepts(&payload[1..]));
        assert!(!other.accepts(&payload[1..]));
        assert!(!puzzle.accepts(&payload[1..SOLUTION_PAYLOAD_LEN - 1]));
    }

    #[test]
    fn retry_records_round_trip_and_others_are_not_retries() {
        let puzzle = Puzzle {
            challenge: [3; CHALLENGE_LEN],
            bits: 20,
        };
        let body = puzzle.encode_retry();
        assert_eq!(Puzzle::decode_retry(&body), Some(Ok(puzzle)));
        assert_eq!(Puzzle::decode_retry(&body[1..]), None);
        let mut zero_bits = body;
        zero_bits[4] = 0;
        assert_eq!(Puzzle::decode_retry(&zero_bits), Some(Err(0)));
        let mut not_magic = body;
        not_magic[0] = b'X';
        assert_eq!(Puzzle::decode_retry(&not_magic), None);
    }

    #[test]
    fn leading_zero_bits_count_across_bytes() {
        let mut hash = [0u8; 32];
        hash[2] = 0b0001_0000;
        assert_eq!(leading_zero_bits(&hash), 19);
        assert_eq!(leading_zero_bits(&[0; 32]), 256);
    }
}
