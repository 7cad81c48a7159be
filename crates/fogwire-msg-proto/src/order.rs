//! One conversation's order at its recipient.
//!
//! A sender numbers its messages to one recipient within a stream (a
//! random number it picks when it starts afresh) from 0. The recipient
//! shows them in that order: a number seen before is a duplicate, the
//! next one is shown at once together with any held ones it unblocks, and
//! a later one is held until the gap fills — or until the gap has lasted
//! [`GAP_PATIENCE_MS`], after which the message that never came is given
//! up on and what was held is shown.

use std::collections::BTreeMap;

/// Most messages held behind a gap in one conversation; more are refused
/// (their sender tries again later).
pub const HELD_MAX: usize = 4_096;
/// How long a gap holds later messages back before they are shown anyway.
pub const GAP_PATIENCE_MS: u64 = 15 * 60 * 1_000;

/// What became of an arriving message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arrival {
    /// Its number was seen before: drop it (and acknowledge it again).
    Duplicate,
    /// Show it, then the held messages `released` (in order).
    Deliver { released: Vec<u64> },
    /// Keep it, unshown, until the gap before it fills.
    Hold,
    /// Too many are held already: refuse it for now.
    Refuse,
}

/// The order state of one (sender, stream): what the recipient keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Conversation {
    /// The number shown next.
    pub next: u64,
    /// Numbers held behind a gap, each with when it arrived.
    pub held: BTreeMap<u64, u64>,
}

impl Conversation {
    /// Takes message `seq`, arriving at `now_ms`.
    pub fn arrive(&mut self, seq: u64, now_ms: u64) -> Arrival {
        if seq < self.next || self.held.contains_key(&seq) {
            return Arrival::Duplicate;
        }
        if seq == self.next {
            self.next = seq.saturating_add(1);
            return Arrival::Deliver {
                released: self.release(),
            };
        }
        if self.held.len() >= HELD_MAX {
            return Arrival::Refuse;
        }
        self.held.insert(seq, now_ms);
        Arrival::Hold
    }

    /// Gives up on gaps that have held messages back for
    /// [`GAP_PATIENCE_MS`]: the held numbers now shown, in order.
    pub fn overdue(&mut self, now_ms: u64) -> Vec<u64> {
        let mut shown = Vec::new();
        while let Some((&first, &since)) = self.held.first_key_value() {
            if now_ms.saturating_sub(since) < GAP_PATIENCE_MS {
                break;
            }
            self.next = first;
            shown.extend(self.release());
        }
        shown
    }

    /// When the oldest gap is given up on, if anything is held.
    pub fn next_deadline(&self) -> Option<u64> {
        self.held
            .values()
            .min()
            .map(|since| since.saturating_add(GAP_PATIENCE_MS))
    }

    fn release(&mut self) -> Vec<u64> {
        let mut released = Vec::new();
        while self.held.remove(&self.next).is_some() {
            released.push(self.next);
            self.next = self.next.saturating_add(1);
        }
        released
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn in_order_messages_show_at_once_and_repeats_are_duplicates() {
        let mut conversation = Conversation::default();
        for seq in 0..5 {
            assert_eq!(
                conversation.arrive(seq, 0),
                Arrival::Deliver {
                    released: Vec::new()
                }
            );
        }
        assert_eq!(conversation.arrive(3, 0), Arrival::Duplicate);
        assert_eq!(conversation.next, 5);
    }

    #[test]
    fn a_gap_holds_later_messages_until_it_fills() {
        let mut conversation = Conversation::default();
        assert_eq!(conversation.arrive(2, 0), Arrival::Hold);
        assert_eq!(conversation.arrive(1, 0), Arrival::Hold);
        assert_eq!(conversation.arrive(2, 0), Arrival::Duplicate);
        assert_eq!(
            conversation.arrive(0, 0),
            Arrival::Deliver {
                released: vec![1, 2]
            }
        );
        assert!(conversation.held.is_empty());
    }

    #[test]
    fn a_gap_is_given_up_after_its_patience() {
        let mut conversation = Conversation::default();
        conversation.arrive(0, 0);
        assert_eq!(conversation.arrive(2, 1_000), Arrival::Hold);
        assert_eq!(conversation.arrive(3, 2_000), Arrival::Hold);
        assert_eq!(conversation.arrive(5, 3_000), Arrival::Hold);
        assert_eq!(conversation.next_deadline(), Some(1_000 + GAP_PATIENCE_MS));
        assert!(conversation.overdue(GAP_PATIENCE_MS).is_empty());
        assert_eq!(conversation.overdue(1_000 + GAP_PATIENCE_MS), vec![2, 3]);
        assert_eq!(conversation.overdue(3_000 + GAP_PATIENCE_MS), vec![5]);
        // The message that never came is a duplicate if it comes now.
        assert_eq!(conversation.arrive(1, 0), Arrival::Duplicate);
    }

    #[test]
    fn held_messages_are_bounded() {
        let mut conversation = Conversation::default();
        for seq in 1..=HELD_MAX as u64 {
            assert_eq!(conversation.arrive(seq, 0), Arrival::Hold);
        }
        assert_eq!(conversation.arrive(HELD_MAX as u64 + 1, 0), Arrival::Refuse);
    }

    proptest! {
        #[test]
        fn any_arrival_order_shows_each_message_once_and_in_order(
            order in Just((0u64..64).collect::<Vec<_>>()).prop_shuffle(),
            repeats in proptest::collection::vec(0u64..64, 0..32),
        ) {
            let mut conversation = Conversation::default();
            let mut shown = Vec::new();
            for seq in order.iter().chain(repeats.iter()) {
                if let Arrival::Deliver { released } = conversation.arrive(*seq, 0) {
                    shown.push(*seq);
                    shown.extend(released);
                }
            }
            prop_assert_eq!(shown, (0u64..64).collect::<Vec<_>>());
        }
    }
}
