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
//! - **Paying** peers — whose receipts this node redeemed in the last
//!   [`PAID_WITHIN`] ([`Payers`]) — give way only to kept newcomers, and
//!   only once no other link can.
//! - **Per address**, at most `per_address` other inbound links.
//! - **When full**, a newcomer may take the slot of an other inbound link
//!   that pays nothing and has sent no channel message since it came up at
//!   least `grace` ago (a link that did nothing); a paying newcomer takes
//!   the slot of the least useful link that pays nothing; a kept newcomer
//!   that of the least useful other link, non-paying ones first. Least
//!   useful: fewest messages per second of its life, then the oldest. A
//!   newcomer with no slot to take is refused.
//!
//! Nothing here reads a clock: ages are handed in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fogwire_identity::NodeId;

/// Inbound links from one IP address, by default (kept peers aside).
pub const PER_ADDRESS_DEFAULT: usize = 16;

/// How long a new link may stay silent before it can lose its slot.
pub const GRACE: Duration = Duration::from_secs(30);
/// A peer counts as paying for this long after a receipt of its was
/// redeemed.
pub const PAID_WITHIN: Duration = Duration::from_secs(3600);
/// Payers remembered; the one that paid longest ago is forgotten first.
pub const PAYERS_MAX: usize = 4096;

/// The peers that paid this node lately: the earner marks a payer when
/// the ledger redeems its receipt; the link manager asks when it must
/// pick a link to close. Cheap to clone; clones share the set.
#[derive(Debug, Clone, Default)]
pub struct Payers {
    paid: Arc<Mutex<HashMap<NodeId, Instant>>>,
}

impl Payers {
    /// `peer` paid at `now`.
    pub fn paid(&self, peer: NodeId, now: Instant) {
        let mut paid = self.paid.lock().unwrap_or_else(|p| p.into_inner());
        if paid.len() >= PAYERS_MAX
            && !paid.contains_key(&peer)
            && let Some(oldest) = paid.iter().min_by_key(|(_, at)| **at).map(|(id, _)| *id)
        {
            paid.remove(&oldest);
        }
        paid.insert(peer, now);
    }

    /// Whether `peer` paid within [`PAID_WITHIN`] before `now`.
    pub fn pays(&self, peer: &NodeId, now: Instant) -> bool {
        let paid = self.paid.lock().unwrap_or_else(|p| p.into_inner());
        paid.get(peer)
            .is_some_and(|at| now.saturating_duration_since(*at) < PAID_WITHIN)
    }
}

/// A link that holds a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occupant {
    pub peer: NodeId,
    pub address: IpAddr,
    pub inbound: bool,
    /// The operator's: never evicted.
    pub kept: bool,
    /// Paid this node lately ([`Payers`]).
    pub paying: bool,
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
            paying: self.paying,
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
    pub paying: bool,
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
    /// which peers the operator keeps, `payers` which paid lately.
    pub fn place<'a>(
        &self,
        link: &crate::LinkHandle,
        holders: impl Iterator<Item = &'a crate::LinkHandle>,
        kept: impl Fn(&NodeId) -> bool,
        payers: &Payers,
    ) -> Decision {
        let peer = link.peer();
        let newcomer = link
            .occupant(kept(&peer), payers.pays(&peer, Instant::now()))
            .newcomer();
        self.place_newcomer(newcomer, holders, kept, payers)
    }

    /// Where a link not yet started stands (decided before its first
    /// frame, so a refused peer hears CLOSE(LIMIT) first, never a PONG).
    pub fn place_established<'a>(
        &self,
        established: &crate::Established,
        holders: impl Iterator<Item = &'a crate::LinkHandle>,
        kept: impl Fn(&NodeId) -> bool,
        payers: &Payers,
    ) -> Decision {
        let peer = established.link.peer();
        let outbound = established.direction == crate::Direction::Outbound;
        let newcomer = Newcomer {
            address: established.remote_addr.ip(),
            inbound: !outbound,
            kept: kept(&peer) || outbound,
            paying: payers.pays(&peer, Instant::now()),
        };
        self.place_newcomer(newcomer, holders, kept, payers)
    }

    fn place_newcomer<'a>(
        &self,
        newcomer: Newcomer,
        holders: impl Iterator<Item = &'a crate::LinkHandle>,
        kept: impl Fn(&NodeId) -> bool,
        payers: &Payers,
    ) -> Decision {
        let now = Instant::now();
        let occupants: Vec<Occupant> = holders
            .map(|link| {
                let peer = link.peer();
                link.occupant(kept(&peer), payers.pays(&peer, now))
            })
            .collect();
        self.decide(&newcomer, &occupants)
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
            .filter(|o| {
                newcomer.kept
                    || (!o.paying
                        && (newcomer.paying || (o.messages_in == 0 && o.age >= self.grace)))
            })
            .min_by(|a, b| {
                a.paying
                    .cmp(&b.paying)
                    .then(a.usefulness().total_cmp(&b.usefulness()))
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
            paying: false,
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
            paying: false,
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
            paying: false,
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

    #[test]
    fn paying_peers_give_way_only_to_kept_newcomers_and_after_every_other_link() {
        let paying = |n: u8, messages_in: u64, age_secs: u64| Occupant {
            paying: true,
            ..occupant(n, true, false, messages_in, age_secs)
        };
        // A silent paying link past its grace keeps its slot from a
        // stranger; a silent non-paying one does not.
        let full = vec![
            paying(1, 0, 600),
            occupant(2, true, false, 50, 60),
            occupant(3, true, false, 0, 600),
            occupant(4, true, true, 0, 600),
        ];
        assert_eq!(POLICY.decide(&stranger(9), &full), Decision::Evict(id(3)));
        let mut no_idle = full.clone();
        no_idle[2] = paying(3, 0, 600);
        assert_eq!(
            POLICY.decide(&stranger(9), &no_idle),
            Decision::Refuse(NoSlot::Full(4))
        );
        // A paying newcomer takes the least useful link that pays nothing,
        // idle or not, never a paying one.
        let payer = Newcomer {
            paying: true,
            ..stranger(9)
        };
        assert_eq!(POLICY.decide(&payer, &no_idle), Decision::Evict(id(2)));
        let all_paying = vec![
            paying(1, 0, 600),
            paying(2, 50, 60),
            paying(3, 0, 600),
            occupant(4, true, true, 0, 600),
        ];
        assert_eq!(
            POLICY.decide(&payer, &all_paying),
            Decision::Refuse(NoSlot::Full(4))
        );
        // A kept newcomer: non-paying links first, however busy; then the
        // least useful paying one.
        let kept = Newcomer {
            kept: true,
            ..stranger(9)
        };
        let mixed = vec![
            paying(1, 0, 600),
            occupant(2, true, false, 5_000, 60),
            paying(3, 10, 600),
            occupant(4, true, true, 0, 600),
        ];
        assert_eq!(POLICY.decide(&kept, &mixed), Decision::Evict(id(2)));
        assert_eq!(POLICY.decide(&kept, &all_paying), Decision::Evict(id(1)));
    }

    #[test]
    fn payers_count_for_an_hour_and_are_bounded() {
        let payers = Payers::default();
        let start = fogwire_testkit::time::epoch();
        payers.paid(id(1), start);
        assert!(payers.pays(&id(1), start + PAID_WITHIN / 2));
        assert!(!payers.pays(&id(1), start + PAID_WITHIN));
        assert!(!payers.pays(&id(2), start));
        for n in 0..PAYERS_MAX as u32 + 10 {
            let peer = fogwire_identity::Keypair::from_seed(
                &[&n.to_be_bytes()[..], &[7; 28]]
                    .concat()
                    .try_into()
                    .unwrap(),
            )
            .node_id();
            payers.paid(peer, start + Duration::from_millis(u64::from(n) + 1));
        }
        assert_eq!(payers.paid.lock().unwrap().len(), PAYERS_MAX);
        // The oldest payer went first.
        assert!(!payers.pays(&id(1), start + Duration::from_secs(1)));
    }
}
