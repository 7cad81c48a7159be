//! Finding who holds a blob beyond one's neighbours (store.md §7): every
//! node knows the network from its routing adverts, so the nodes that
//! keep the **provider records** of a hash are found without a lookup —
//! they are the first nodes after the hash on a ring of all nodes that
//! keep records. A node that holds a blob tells those keepers (PROVIDE);
//! a node that wants it asks them (FIND), then fetches from the holders
//! they name over routes.
//!
//! - [`Ring`]: the keepers of a hash, in ring order.
//! - [`Records`]: a keeper's table of records, bounded per provider and
//!   in all, each record living [`RECORD_TTL`].
//! - [`Providing`]: a holder's schedule of what to send to which keeper:
//!   each hash to its first [`KEEPERS`] keepers that answer, again every
//!   [`REPROVIDE`], and at once when the keepers change.
//!
//! Time comes in as arguments: nothing here reads a clock.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use fogwire_identity::NodeId;

use crate::Hash;
use crate::message::PROVIDERS_MAX;

/// Keepers each record is given to.
pub const KEEPERS: usize = 3;
/// How far along the ring a lookup asks (in waves of [`KEEPERS`]), and a
/// holder looks for keepers that answer: views of the network differ a
/// little, and keepers come and go.
pub const KEEPERS_ASKED_MAX: usize = 6;
/// How long a keeper keeps a record without hearing it again.
pub const RECORD_TTL: Duration = Duration::from_secs(2 * 3600);
/// How often a holder gives each record again (well within the TTL, so a
/// keeper that restarted, and lost its records, has them back soon).
pub const REPROVIDE: Duration = Duration::from_secs(30 * 60);
/// How long a holder first leaves a keeper that did not answer before
/// trying it again (meanwhile the next keeper on the ring takes its
/// records). Short, because the usual cause is passing: a node learnt
/// from its advert a moment before any route to it could open.
pub const KEEPER_RETRY_FIRST: Duration = Duration::from_secs(5);
/// Each failure in a row doubles the wait, up to this.
pub const KEEPER_RETRY: Duration = Duration::from_secs(60);
/// Records a keeper keeps for one provider.
pub const RECORDS_PER_PROVIDER_MAX: usize = 16_384;
/// Records a keeper keeps in all (about 40 MB at most).
pub const RECORDS_MAX: usize = 262_144;
/// Hashes one node provides: its pins, the first this many.
pub const PROVIDED_MAX: usize = 16_384;

/// Where a node sits on the ring: BLAKE3 of a domain tag and its id.
/// Blob hashes are BLAKE3 outputs already, so they sit where they are.
pub fn ring_position(node: &NodeId) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"fogwire/store/providers/ring/v1");
    hasher.update(node.as_bytes());
    *hasher.finalize().as_bytes()
}

/// The nodes that keep provider records, in ring order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ring {
    points: Vec<([u8; 32], NodeId)>,
}

impl Ring {
    pub fn new(nodes: impl IntoIterator<Item = NodeId>) -> Ring {
        let mut points: Vec<([u8; 32], NodeId)> = nodes
            .into_iter()
            .map(|node| (ring_position(&node), node))
            .collect();
        points.sort_unstable();
        points.dedup();
        Ring { points }
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Every node, in ring order from the first at or after `hash`
    /// (wrapping round): the keepers of `hash`, best first.
    pub fn successors(&self, hash: &Hash) -> impl Iterator<Item = NodeId> + '_ {
        let start = self
            .points
            .partition_point(|(position, _)| position < hash.as_bytes());
        self.points[start..]
            .iter()
            .chain(&self.points[..start])
            .map(|(_, node)| *node)
    }
}

/// One record: who holds the blob, and until when it is believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    provider: NodeId,
    expires: Instant,
}

/// A keeper's provider records. Every bound is checked before anything is
/// kept: a provider past its share, or a table past its size, gets its
/// new records refused (the answer says how many were taken).
#[derive(Debug, Default)]
pub struct Records {
    by_hash: HashMap<Hash, Vec<Record>>,
    per_provider: HashMap<NodeId, usize>,
    total: usize,
}

impl Records {
    /// Takes `provider`'s records of `hashes` (renewing those it has);
    /// how many were taken.
    pub fn provide(&mut self, provider: NodeId, hashes: &[Hash], now: Instant) -> usize {
        let expires = now + RECORD_TTL;
        let mut taken = 0;
        for hash in hashes {
            self.drop_expired(hash, now);
            let list = self.by_hash.entry(*hash).or_default();
            if let Some(record) = list.iter_mut().find(|r| r.provider == provider) {
                record.expires = expires;
                taken += 1;
                continue;
            }
            let share = self.per_provider.get(&provider).copied().unwrap_or(0);
            if share >= RECORDS_PER_PROVIDER_MAX {
                continue;
            }
            if list.len() >= PROVIDERS_MAX {
                // The record heard from longest ago makes room: a holder
                // that is still there renews its record soon.
                let Some((oldest, _)) = list.iter().enumerate().min_by_key(|(_, r)| r.expires)
                else {
                    continue;
                };
                let gone = list.swap_remove(oldest);
                decrement(&mut self.per_provider, gone.provider);
                self.total -= 1;
            } else if self.total >= RECORDS_MAX {
                if list.is_empty() {
                    self.by_hash.remove(hash);
                }
                continue;
            }
            list.push(Record { provider, expires });
            *self.per_provider.entry(provider).or_default() += 1;
            self.total += 1;
            taken += 1;
        }
        taken
    }

    /// The holders of `hash` believed now, freshest first.
    pub fn find(&self, hash: &Hash, now: Instant) -> Vec<NodeId> {
        let mut live: Vec<Record> = self
            .by_hash
            .get(hash)
            .map(|list| list.iter().filter(|r| r.expires > now).copied().collect())
            .unwrap_or_default();
        live.sort_by_key(|r| std::cmp::Reverse(r.expires));
        live.into_iter().map(|r| r.provider).collect()
    }

    /// Forgets every record that expired.
    pub fn expire(&mut self, now: Instant) {
        let hashes: Vec<Hash> = self.by_hash.keys().copied().collect();
        for hash in hashes {
            self.drop_expired(&hash, now);
        }
    }

    /// Records kept.
    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Records kept for `provider`.
    pub fn of_provider(&self, provider: &NodeId) -> usize {
        self.per_provider.get(provider).copied().unwrap_or(0)
    }

    fn drop_expired(&mut self, hash: &Hash, now: Instant) {
        let Some(list) = self.by_hash.get_mut(hash) else {
            return;
        };
        let before = list.len();
        let per_provider = &mut self.per_provider;
        list.retain(|record| {
            let live = record.expires > now;
            if !live {
                decrement(per_provider, record.provider);
            }
            live
        });
        self.total -= before - list.len();
        if list.is_empty() {
            self.by_hash.remove(hash);
        }
    }
}

fn decrement(counts: &mut HashMap<NodeId, usize>, provider: NodeId) {
    if let Some(count) = counts.get_mut(&provider) {
        *count -= 1;
        if *count == 0 {
            counts.remove(&provider);
        }
    }
}

/// A holder's schedule: which records each keeper is owed.
#[derive(Debug, Default)]
pub struct Providing {
    /// When each (hash, keeper) record was last taken by the keeper.
    sent: HashMap<(Hash, NodeId), Instant>,
    /// Keepers that did not answer, left alone until then.
    failing: HashMap<NodeId, Failing>,
}

/// A keeper that did not answer: left alone until `until`; `strikes`
/// failures in a row (forgotten once it answers, or after a quiet
/// [`KEEPER_RETRY`] past `until`).
#[derive(Debug, Clone, Copy)]
struct Failing {
    until: Instant,
    strikes: u32,
}

impl Providing {
    /// The records due now, by keeper: each of `wanted`'s first
    /// [`KEEPERS`] keepers along `ring` that are not failing (looking at
    /// most [`KEEPERS_ASKED_MAX`] along), that has not taken it within
    /// [`REPROVIDE`]. `me` (when it keeps records too) may be among them.
    /// What is no longer wanted, or no longer a keeper, is forgotten.
    pub fn due(
        &mut self,
        ring: &Ring,
        wanted: &[Hash],
        now: Instant,
    ) -> BTreeMap<NodeId, Vec<Hash>> {
        self.failing
            .retain(|_, failing| now < failing.until + KEEPER_RETRY);
        let mut due: BTreeMap<NodeId, Vec<Hash>> = BTreeMap::new();
        let mut current: HashSet<(Hash, NodeId)> = HashSet::new();
        for hash in wanted.iter().take(PROVIDED_MAX) {
            let keepers = ring
                .successors(hash)
                .take(KEEPERS_ASKED_MAX)
                .filter(|keeper| {
                    self.failing
                        .get(keeper)
                        .is_none_or(|failing| failing.until <= now)
                })
                .take(KEEPERS);
            for keeper in keepers {
                current.insert((*hash, keeper));
                let fresh = self
                    .sent
                    .get(&(*hash, keeper))
                    .is_some_and(|at| now.saturating_duration_since(*at) < REPROVIDE);
                if !fresh {
                    due.entry(keeper).or_default().push(*hash);
                }
            }
        }
        self.sent.retain(|key, _| current.contains(key));
        due
    }

    /// `keeper` took the records of `hashes`.
    pub fn taken(&mut self, keeper: NodeId, hashes: &[Hash], now: Instant) {
        self.failing.remove(&keeper);
        for hash in hashes {
            self.sent.insert((*hash, keeper), now);
        }
    }

    /// `keeper` did not answer: its records go to the next keepers along
    /// the ring for [`KEEPER_RETRY_FIRST`], doubled for each failure in a
    /// row up to [`KEEPER_RETRY`].
    pub fn failed(&mut self, keeper: NodeId, now: Instant) {
        let strikes = self
            .failing
            .get(&keeper)
            .map_or(1, |failing| failing.strikes.saturating_add(1));
        let wait = KEEPER_RETRY_FIRST
            .saturating_mul(1 << (strikes - 1).min(16))
            .min(KEEPER_RETRY);
        self.failing.insert(
            keeper,
            Failing {
                until: now + wait,
                strikes,
            },
        );
    }

    /// Records owed and taken: (hash, keeper) pairs.
    pub fn records(&self) -> usize {
        self.sent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(seed: u8) -> NodeId {
        fogwire_identity::Keypair::from_seed(&[seed; 32]).node_id()
    }

    fn nodes(count: u8) -> Vec<NodeId> {
        (1..=count).map(node).collect()
    }

    #[test]
    fn the_ring_names_the_same_keepers_from_any_order_and_moves_few_when_a_node_joins() {
        let all = nodes(20);
        let mut reversed = all.clone();
        reversed.reverse();
        let (ring, again) = (Ring::new(all.clone()), Ring::new(reversed));
        let hashes: Vec<Hash> = (0..200u32).map(|i| Hash::of(&i.to_be_bytes())).collect();
        for hash in &hashes {
            let keepers: Vec<NodeId> = ring.successors(hash).take(KEEPERS).collect();
            assert_eq!(
                keepers,
                again.successors(hash).take(KEEPERS).collect::<Vec<_>>()
            );
            // Each keeper once, all of them in turn.
            assert_eq!(
                ring.successors(hash).collect::<HashSet<_>>().len(),
                all.len()
            );
        }
        // A new node takes over only records of hashes just before it.
        let mut grown = all.clone();
        grown.push(node(99));
        let grown = Ring::new(grown);
        let moved = hashes
            .iter()
            .filter(|hash| {
                let before: Vec<NodeId> = ring.successors(hash).take(KEEPERS).collect();
                let after: Vec<NodeId> = grown.successors(hash).take(KEEPERS).collect();
                before != after
            })
            .count();
        for hash in &hashes {
            let after: Vec<NodeId> = grown.successors(hash).take(KEEPERS).collect();
            let before: Vec<NodeId> = ring.successors(hash).take(KEEPERS).collect();
            if before != after {
                assert!(
                    after.contains(&node(99)),
                    "only the newcomer changes a keeper set"
                );
            }
        }
        assert!(
            moved < hashes.len() / 2,
            "{moved} of {} moved",
            hashes.len()
        );
        assert_eq!(Ring::default().successors(&hashes[0]).count(), 0);
    }

    #[test]
    fn records_are_found_freshest_first_renewed_and_expire() {
        let mut records = Records::default();
        let t0 = fogwire_testkit::time::epoch();
        let hash = Hash::of(b"blob");
        assert_eq!(records.provide(node(1), &[hash], t0), 1);
        assert_eq!(
            records.provide(node(2), &[hash], t0 + Duration::from_secs(10)),
            1
        );
        assert_eq!(records.find(&hash, t0), vec![node(2), node(1)]);
        // Renewing is taking again, not a second record.
        assert_eq!(
            records.provide(node(1), &[hash], t0 + Duration::from_secs(20)),
            1
        );
        assert_eq!(records.len(), 2);
        assert_eq!(records.find(&hash, t0), vec![node(1), node(2)]);
        let late = t0 + Duration::from_secs(15) + RECORD_TTL;
        assert_eq!(records.find(&hash, late), vec![node(1)]);
        records.expire(late);
        assert_eq!(records.len(), 1);
        assert_eq!(records.of_provider(&node(2)), 0);
        records.expire(late + RECORD_TTL);
        assert!(records.is_empty());
        assert!(records.find(&hash, t0).is_empty());
    }

    #[test]
    fn a_flooding_provider_is_held_to_its_share_and_a_hash_to_its_providers() {
        let mut records = Records::default();
        let now = fogwire_testkit::time::epoch();
        let flood: Vec<Hash> = (0..RECORDS_PER_PROVIDER_MAX as u32 + 100)
            .map(|i| Hash::of(&i.to_be_bytes()))
            .collect();
        assert_eq!(
            records.provide(node(1), &flood, now),
            RECORDS_PER_PROVIDER_MAX
        );
        assert_eq!(records.of_provider(&node(1)), RECORDS_PER_PROVIDER_MAX);
        // Others still get room.
        assert_eq!(records.provide(node(2), &flood[..10], now), 10);
        // One hash keeps at most PROVIDERS_MAX holders: the one heard
        // from longest ago makes room for a new one.
        let popular = Hash::of(b"popular");
        for seed in 0..PROVIDERS_MAX as u8 {
            let at = now + Duration::from_secs(u64::from(seed));
            assert_eq!(records.provide(node(100 + seed), &[popular], at), 1);
        }
        let late = now + Duration::from_secs(100);
        assert_eq!(records.provide(node(200), &[popular], late), 1);
        let found = records.find(&popular, late);
        assert_eq!(found.len(), PROVIDERS_MAX);
        assert_eq!(found[0], node(200));
        assert!(!found.contains(&node(100)));
        assert_eq!(records.of_provider(&node(100)), 0);
    }

    #[test]
    fn the_table_stops_taking_new_records_when_full() {
        let mut records = Records::default();
        let now = fogwire_testkit::time::epoch();
        let mut provider = 0u8;
        while records.len() < RECORDS_MAX {
            provider += 1;
            let hashes: Vec<Hash> = (0..RECORDS_PER_PROVIDER_MAX as u32)
                .map(|i| Hash::of(&[&[provider][..], &i.to_be_bytes()].concat()))
                .collect();
            records.provide(node(provider), &hashes, now);
        }
        assert_eq!(records.len(), RECORDS_MAX);
        assert_eq!(records.provide(node(250), &[Hash::of(b"new")], now), 0);
        assert!(records.find(&Hash::of(b"new"), now).is_empty());
        // Renewals still go through.
        let first = Hash::of(&[&[1u8][..], &0u32.to_be_bytes()].concat());
        assert_eq!(records.provide(node(1), &[first], now), 1);
        records.expire(now + RECORD_TTL);
        assert!(records.is_empty());
    }

    #[test]
    fn a_holder_gives_each_record_to_its_keepers_again_only_when_due_or_when_one_fails() {
        let ring = Ring::new(nodes(10));
        let wanted = vec![Hash::of(b"a"), Hash::of(b"b")];
        let mut providing = Providing::default();
        let t0 = fogwire_testkit::time::epoch();
        let due = providing.due(&ring, &wanted, t0);
        assert_eq!(due.values().map(Vec::len).sum::<usize>(), 2 * KEEPERS);
        for (keeper, hashes) in &due {
            providing.taken(*keeper, hashes, t0);
        }
        assert_eq!(providing.records(), 2 * KEEPERS);
        assert!(
            providing
                .due(&ring, &wanted, t0 + Duration::from_secs(60))
                .is_empty()
        );
        // A keeper that fails has its records go one further along.
        let first: Vec<NodeId> = ring.successors(&wanted[0]).take(KEEPERS + 1).collect();
        providing.failed(first[0], t0 + Duration::from_secs(60));
        let due = providing.due(&ring, &wanted, t0 + Duration::from_secs(61));
        assert!(due[&first[KEEPERS]].contains(&wanted[0]));
        assert!(!due.contains_key(&first[0]));
        // Back in turn once its wait is over; each failure in a row
        // doubles the wait, up to KEEPER_RETRY; an answer forgets them.
        let back = t0 + Duration::from_secs(60) + KEEPER_RETRY_FIRST;
        assert!(providing.due(&ring, &wanted, back).contains_key(&first[0]));
        let mut at = back;
        for strikes in 1..=6u32 {
            providing.failed(first[0], at);
            let wait = (KEEPER_RETRY_FIRST * 2u32.pow(strikes)).min(KEEPER_RETRY);
            let early = at + wait - Duration::from_millis(1);
            assert!(!providing.due(&ring, &wanted, early).contains_key(&first[0]));
            at += wait;
            assert!(providing.due(&ring, &wanted, at).contains_key(&first[0]));
        }
        providing.taken(first[0], &wanted[..1], at);
        providing.failed(first[0], at);
        let passed_over = providing.due(&ring, &wanted, at + Duration::from_millis(1));
        assert!(!passed_over.contains_key(&first[0]));
        assert!(
            providing
                .due(&ring, &wanted, at + KEEPER_RETRY_FIRST)
                .contains_key(&first[0])
        );
        // Everything again after REPROVIDE; nothing for a hash unwanted.
        let due = providing.due(&ring, &wanted[1..], t0 + REPROVIDE);
        assert_eq!(due.values().map(Vec::len).sum::<usize>(), KEEPERS);
        assert!(due.values().all(|hashes| hashes == &vec![wanted[1]]));
        // An empty ring owes nobody anything.
        assert!(providing.due(&Ring::default(), &wanted, t0).is_empty());
        assert_eq!(providing.records(), 0);
    }
}
