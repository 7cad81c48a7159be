//! Commit–reveal: a worker first sends a hash bound to its own identity,
//! the task and its outcome; only once every replica has committed does
//! the hub ask for the outcomes. A worker cannot copy another's outcome
//! (it has not been revealed), nor another's commitment (it names the
//! other worker), nor guess an outcome from a commitment (a random nonce
//! is hashed in).

use serde::{Deserialize, Serialize};

use crate::{Digest, JobId, Outcome};

/// What a worker commits to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Commitment(pub Digest);

/// What a worker reveals: its outcome and the nonce it committed with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reveal {
    pub outcome: Outcome,
    pub nonce: Digest,
}

impl Commitment {
    pub fn new(
        worker: &[u8; 32],
        job: &JobId,
        index: u32,
        outcome_digest: &Digest,
        nonce: &Digest,
    ) -> Commitment {
        let mut hasher = blake3::Hasher::new_derive_key("fogwire compute commitment v1");
        hasher.update(worker);
        hasher.update(job.0.as_bytes());
        hasher.update(&index.to_le_bytes());
        hasher.update(outcome_digest.as_bytes());
        hasher.update(nonce.as_bytes());
        Commitment(Digest(*hasher.finalize().as_bytes()))
    }
}

impl Reveal {
    /// Whether this reveal is what `worker` committed to.
    pub fn matches(
        &self,
        commitment: &Commitment,
        worker: &[u8; 32],
        job: &JobId,
        index: u32,
    ) -> bool {
        Commitment::new(worker, job, index, &self.outcome.digest(), &self.nonce) == *commitment
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ExitStatus;

    fn outcome(stdout: &[u8]) -> Outcome {
        Outcome {
            status: ExitStatus::Exited(0),
            stdout: Digest::of(stdout),
            stderr: Digest::of(b""),
            fuel_used: 42,
        }
    }

    #[test]
    fn a_reveal_matches_only_its_own_commitment() {
        let job = JobId(Digest::of(b"job"));
        let (alice, bob) = ([1u8; 32], [2u8; 32]);
        let nonce = Digest::of(b"nonce");
        let reveal = Reveal {
            outcome: outcome(b"42"),
            nonce,
        };
        let commitment = Commitment::new(&alice, &job, 0, &reveal.outcome.digest(), &nonce);
        assert!(reveal.matches(&commitment, &alice, &job, 0));
        // Bob cannot claim Alice's commitment as his own…
        assert!(!reveal.matches(&commitment, &bob, &job, 0));
        // …nor is it valid for another task, or another outcome.
        assert!(!reveal.matches(&commitment, &alice, &job, 1));
        let other = Reveal {
            outcome: outcome(b"43"),
            nonce,
        };
        assert!(!other.matches(&commitment, &alice, &job, 0));
    }

    #[test]
    fn every_part_of_an_outcome_changes_its_digest() {
        let base = outcome(b"x");
        let mut status = base.clone();
        status.status = ExitStatus::Exited(1);
        let mut fuel = base.clone();
        fuel.fuel_used += 1;
        let mut stderr = base.clone();
        stderr.stderr = Digest::of(b"e");
        let mut trap = base.clone();
        trap.status = ExitStatus::Trapped("a".into());
        let digests = [&base, &status, &fuel, &stderr, &trap].map(Outcome::digest);
        for (i, a) in digests.iter().enumerate() {
            for b in &digests[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
