//! Who gets a link slot, and who loses one, as a pure decision.
//!
//! A link slot is worth keeping for a peer that does something: sends
//! channel messages (adverts, route traffic, blobs, calls), or that the
//! operator asked for. Self-made identities that link and stay silent cost
//! the attacker little, so they must not be able to hold slots for good:
//!
//! - **Kept** links — ones this node dialed (configured peers, `connect`,
//!   the peer book) and inbound links from peers it keeps — are never
//!   evicted and are admitted even when the node is full, by evicting the
//!   least useful other link.
//! - **Per address**, at most `per_address` other inbound links.
//! - **When full**, a newcomer may take the slot of an other inbound link
//!   that has sent no channel message since it came up at least `grace`
//!   ago (a link that did nothing); a kept newcomer takes the slot of the
//!   least useful other link: fewest messages per second of its life,
//!   then the oldest. A newcomer with no slot to take is refused.
//!
//! Nothing here reads a clock: ages are handed in.

use std::net::IpAddr;
use std::time::Duration;

use fogwire_identity::NodeId;

/// Inbound links from one IP address, by default (kept peers aside).
pub const PER_ADDRESS_DEFAULT: usize = 16;

/// How long a new link may stay silent before it can lose its slot.
pub const GRACE: Duration = Duration::from_secs(30);

/// A link that holds a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occupant {
    pub peer: NodeId,
    pub address: IpAddr,
    pub inbound: bool,
    /// The operator's: never evicted.
    pub kept: bool,
    /// Channel messages it has sent this node.
    pub messages_in: u64,
    /// Time since it came up.
    pub age: Duration,
}

impl Occupant {
    /// This link as a newcomer: a link this node dialed is its own.
    pub fn newcomer(&self) -> Newcomer {
        Newcomer {
            address: self.address,
            inbound: self.inbound,
            kept: self.kept || !self.inbound,
        }
    }

    fn evictable(&self) -> bool {
        self.inbound && !self.kept
    }

    /// Messages per second of its life (its first second counts whole).
    fn usefulness(&self) -> f64 {
        self.messages_in as f64 / self.age.as_secs_f64().max(1.0)
    }
}

/// A link that wants a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Newcomer {
    pub address: IpAddr,
    pub inbound: bool,
    pub kept: bool,
}

/// What to do with a newcomer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Admit,
    /// Admit it, and close this peer's link to make room.
    Evict(NodeId),
    Refuse(NoSlot),
}

/// Why a newcomer gets no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoSlot {
    #[error("{0} links from this address already (at most {0} per address)")]
    AddressFull(usize),
    #[error("link.max_links ({0}) reached, and every link is in use or kept")]
    Full(usize),
}

impl NoSlot {
    /// A short label for metrics and refusal logs.
    pub fn reason(&self) -> &'static str {
        match self {
            NoSlot::AddressFull(_) => "address_links_full",
            NoSlot::Full(_) => "links_full",
        }
    }
}

/// The slot rules of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotPolicy {
    pub max_links: usize,
    pub per_address: usize,
    pub grace: Duration,
}

impl SlotPolicy {
    /// `max_links` slots, with the default share per address and grace.
    pub fn new(max_links: usize) -> Self {
        Self {
            max_links,
            per_address: PER_ADDRESS_DEFAULT,
            grace: GRACE,
        }
    }

    /// Where `link` stands among the links that hold slots; `kept` says
    /// which peers the operator keeps.
    pub fn place<'a>(
        &self,
        link: &crate::LinkHandle,
        holders: impl Iterator<Item = &'a crate::LinkHandle>,
        kept: impl Fn(&NodeId) -> bool,
    ) -> Decision {
        let occupants: Vec<Occupant> = holders
            .map(|holder| holder.occupant(kept(&holder.peer())))
            .collect();
        self.decide(&link.occupant(kept(&link.peer())).newcomer(), &occupants)
    }

    /// Where `newcomer` stands, given the links that hold slots.
    pub fn decide(&self, newcomer: &Newcomer, occupants: &[Occupant]) -> Decision {
        if newcomer.inbound && !newcomer.kept {
            let from_address = occupants
                .iter()
                .filter(|o| o.evictable() && o.address == newcomer.address)
                .count();
            if from_address >= self.per_address.max(1) {
                return Decision::Refuse(NoSlot::AddressFull(from_address));
            }
        }
        if occupants.len() < self.max_links {
            return Decision::Admit;
        }
        let victim = occupants
            .iter()
            .filter(|o| o.evictable())
            .filter(|o| newcomer.kept || (o.messages_in == 0 && o.age >= self.grace))
            .min_by(|a, b| {
                a.usefulness()
                    .total_cmp(&b.usefulness())
                    .then(b.age.cmp(&a.age))
            });
        match victim {
            Some(victim) => Decision::Evict(victim.peer),
            None => Decision::Refuse(NoSlot::Full(self.max_links)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> NodeId {
        fogwire_identity::Keypair::from_seed(&[n; 32]).node_id()
    }

    fn address(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    fn occupant(n: u8, inbound: bool, kept: bool, messages_in: u64, age_secs: u64) -> Occupant {
        Occupant {
            peer: id(n),
            address: address(n),
            inbound,
            kept,
            messages_in,
            age: Duration::from_secs(age_secs),
        }
    }

    const POLICY: SlotPolicy = SlotPolicy {
        max_links: 4,
        per_address: 2,
        grace: Duration::from_secs(30),
    };

    fn stranger(n: u8) -> Newcomer {
        Newcomer {
            address: address(n),
            inbound: true,
            kept: false,
        }
    }

    #[test]
    fn one_address_holds_at_most_its_share_of_inbound_links() {
        let mut occupants = vec![occupant(1, true, false, 5, 60)];
        occupants.push(Occupant {
            peer: id(2),
            ..occupant(1, true, false, 5, 60)
        });
        assert_eq!(
            POLICY.decide(&stranger(1), &occupants),
            Decision::Refuse(NoSlot::AddressFull(2))
        );
        // Another address, and a kept peer at the same one, still get in.
        assert_eq!(POLICY.decide(&stranger(9), &occupants), Decision::Admit);
        let kept = Newcomer {
            kept: true,
            ..stranger(1)
        };
        assert_eq!(POLICY.decide(&kept, &occupants), Decision::Admit);
    }

    #[test]
    fn when_full_a_stranger_replaces_only_a_link_that_did_nothing_past_its_grace() {
        let busy = vec![
            occupant(1, true, false, 100, 60),
            occupant(2, true, false, 1, 600),
            occupant(3, false, false, 0, 600),
            occupant(4, true, true, 0, 600),
        ];
        // Every evictable link has done something: no room.
        assert_eq!(
            POLICY.decide(&stranger(9), &busy),
            Decision::Refuse(NoSlot::Full(4))
        );
        // A silent inbound link, still in its grace, keeps its slot…
        let mut silent = busy.clone();
        silent[1] = occupant(2, true, false, 0, 10);
        assert_eq!(
            POLICY.decide(&stranger(9), &silent),
            Decision::Refuse(NoSlot::Full(4))
        );
        // …and loses it past its grace.
        silent[1].age = Duration::from_secs(31);
        assert_eq!(POLICY.decide(&stranger(9), &silent), Decision::Evict(id(2)));
    }

    #[test]
    fn a_kept_newcomer_evicts_the_least_useful_link_but_never_a_kept_or_outbound_one() {
        let occupants = vec![
            occupant(1, true, false, 100, 10),  // 10 per second
            occupant(2, true, false, 120, 600), // 0.2 per second
            occupant(3, false, false, 0, 600),  // outbound
            occupant(4, true, true, 0, 600),    // kept
        ];
        let kept = Newcomer {
            address: address(9),
            inbound: false,
            kept: true,
        };
        assert_eq!(POLICY.decide(&kept, &occupants), Decision::Evict(id(2)));
        // With nothing evictable, even a kept newcomer waits.
        let untouchable = vec![
            occupant(3, false, false, 0, 600),
            occupant(4, true, true, 0, 600),
            occupant(5, false, true, 0, 600),
            occupant(6, false, false, 0, 600),
        ];
        assert_eq!(
            POLICY.decide(&kept, &untouchable),
            Decision::Refuse(NoSlot::Full(4))
        );
    }
}
