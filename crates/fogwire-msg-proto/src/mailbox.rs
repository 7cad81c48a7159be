//! A mailbox's policy: what it keeps for an owner (a node that chose it
//! to hold its mail while it is away), from whom, and for how long; and
//! how a node in a cluster chooses its mailboxes among the boards.
//!
//! A mailbox holds sealed envelopes only: it cannot read them, and it
//! hands them to their recipient, who alone can open them. What it may
//! hold is bounded per owner and per sender, with senders the owner
//! never wrote to (strangers) held to a small quota so that a flood from
//! new keys fills neither the mailbox's disk nor the owner's mail.

use fogwire_identity::NodeId;
use serde::{Deserialize, Serialize};

use crate::Refusal;

/// How long a mailbox holds an envelope (counted from when it took it).
pub const TTL_MS: u64 = crate::retry::TTL_MS;
/// Envelopes a mailbox holds from one sender the owner knows.
pub const KNOWN_SENDER_MAX: u64 = 10_000;
/// Envelopes a mailbox holds from one sender the owner does not know.
pub const STRANGER_MAX: u64 = 100;
/// Envelopes a mailbox holds for one owner from all strangers together.
pub const STRANGERS_MAX: u64 = 2_000;
/// Envelopes a mailbox holds for one owner.
pub const OWNER_MESSAGES_MAX: u64 = 100_000;
/// Bytes of envelopes a mailbox holds for one owner.
pub const OWNER_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Contacts of an owner a mailbox remembers (for the quotas above).
pub const KNOWN_MAX: usize = 8_192;
/// Mailboxes a node in a cluster chooses among the boards.
pub const CLUSTER_MAILBOXES: usize = 2;

/// What a mailbox holds for one owner.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerUsage {
    pub messages: u64,
    pub bytes: u64,
    /// Of `messages`, those from strangers.
    pub from_strangers: u64,
    /// The number the next envelope is kept under (so the owner picks up
    /// in the order they came).
    pub next: u64,
}

impl OwnerUsage {
    /// Whether one more envelope of `len` bytes from a sender that has
    /// `from_sender` envelopes held already (and is `known` to the owner,
    /// or not) may be held.
    pub fn admit(&self, from_sender: u64, known: bool, len: usize) -> Result<(), Refusal> {
        let sender_max = if known {
            KNOWN_SENDER_MAX
        } else {
            STRANGER_MAX
        };
        let over = from_sender >= sender_max
            || (!known && self.from_strangers >= STRANGERS_MAX)
            || self.messages >= OWNER_MESSAGES_MAX
            || self.bytes.saturating_add(len as u64) > OWNER_BYTES_MAX;
        if over {
            return Err(Refusal::OverQuota);
        }
        Ok(())
    }

    /// Counts one envelope in (or, with `remove`, out).
    pub fn count(&mut self, known: bool, len: usize, remove: bool) {
        let len = len as u64;
        if remove {
            self.messages = self.messages.saturating_sub(1);
            self.bytes = self.bytes.saturating_sub(len);
            if !known {
                self.from_strangers = self.from_strangers.saturating_sub(1);
            }
        } else {
            self.messages += 1;
            self.bytes += len;
            if !known {
                self.from_strangers += 1;
            }
        }
    }
}

/// Whether an envelope taken at `stored_ms` has outlived its time.
pub fn expired(stored_ms: u64, now_ms: u64) -> bool {
    now_ms.saturating_sub(stored_ms) >= TTL_MS
}

/// The `count` boards of `boards` that hold `owner`'s mail, by rendezvous
/// (highest random weight) hashing: each board's weight is a hash of the
/// owner and the board, so every owner spreads its mail differently and
/// a board leaving moves only the owners it served. `owner` itself is
/// never chosen.
pub fn rendezvous(owner: &NodeId, boards: &[NodeId], count: usize) -> Vec<NodeId> {
    let mut weighed: Vec<([u8; 32], NodeId)> = boards
        .iter()
        .filter(|board| *board != owner)
        .map(|board| {
            let mut hasher = blake3::Hasher::new();
            hasher.update(b"fogwire/msg/mailbox/v1");
            hasher.update(owner.as_bytes());
            hasher.update(board.as_bytes());
            (*hasher.finalize().as_bytes(), *board)
        })
        .collect();
    weighed.sort_unstable_by(|a, b| b.cmp(a));
    weighed.dedup_by(|a, b| a.1 == b.1);
    weighed
        .into_iter()
        .take(count)
        .map(|(_, board)| board)
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use fogwire_identity::Keypair;

    use super::*;

    fn node(seed: u8) -> NodeId {
        Keypair::from_seed(&[seed; 32]).node_id()
    }

    #[test]
    fn strangers_are_held_to_a_small_quota_and_contacts_to_a_large_one() {
        let usage = OwnerUsage::default();
        assert_eq!(usage.admit(STRANGER_MAX - 1, false, 100), Ok(()));
        assert_eq!(
            usage.admit(STRANGER_MAX, false, 100),
            Err(Refusal::OverQuota)
        );
        assert_eq!(usage.admit(STRANGER_MAX, true, 100), Ok(()));
        assert_eq!(
            usage.admit(KNOWN_SENDER_MAX, true, 100),
            Err(Refusal::OverQuota)
        );
        let crowded = OwnerUsage {
            from_strangers: STRANGERS_MAX,
            ..OwnerUsage::default()
        };
        assert_eq!(crowded.admit(0, false, 100), Err(Refusal::OverQuota));
        assert_eq!(crowded.admit(0, true, 100), Ok(()));
        let full = OwnerUsage {
            bytes: OWNER_BYTES_MAX - 10,
            ..OwnerUsage::default()
        };
        assert_eq!(full.admit(0, true, 11), Err(Refusal::OverQuota));
        assert_eq!(full.admit(0, true, 10), Ok(()));
    }

    #[test]
    fn counting_in_and_out_returns_to_empty() {
        let mut usage = OwnerUsage::default();
        usage.count(false, 300, false);
        usage.count(true, 200, false);
        assert_eq!(
            (usage.messages, usage.bytes, usage.from_strangers),
            (2, 500, 1)
        );
        usage.count(false, 300, true);
        usage.count(true, 200, true);
        assert_eq!(
            (usage.messages, usage.bytes, usage.from_strangers),
            (0, 0, 0)
        );
    }

    #[test]
    fn rendezvous_choices_are_stable_and_move_only_when_their_board_leaves() {
        let boards: Vec<NodeId> = (1..=6).map(node).collect();
        let owner = node(9);
        let chosen = rendezvous(&owner, &boards, 2);
        assert_eq!(chosen.len(), 2);
        assert_ne!(chosen[0], chosen[1]);
        let mut shuffled = boards.clone();
        shuffled.reverse();
        assert_eq!(rendezvous(&owner, &shuffled, 2), chosen);
        // A board that was not chosen leaving changes nothing.
        let unchosen = boards.iter().find(|b| !chosen.contains(b)).unwrap();
        let fewer: Vec<NodeId> = boards.iter().filter(|b| *b != unchosen).copied().collect();
        assert_eq!(rendezvous(&owner, &fewer, 2), chosen);
        // A chosen board leaving keeps the other.
        let without_first: Vec<NodeId> = boards
            .iter()
            .filter(|b| **b != chosen[0])
            .copied()
            .collect();
        assert!(rendezvous(&owner, &without_first, 2).contains(&chosen[1]));
        // The owner never holds its own mail.
        assert!(!rendezvous(&boards[0], &boards, 6).contains(&boards[0]));
    }

    #[test]
    fn mail_expires_after_its_time_to_live() {
        assert!(!expired(1_000, 1_000 + TTL_MS - 1));
        assert!(expired(1_000, 1_000 + TTL_MS));
    }
}
