//! A worker's agent, sans-IO: how much it trusts each hub, and which of
//! the bids resting at hubs it takes to earn the most within its
//! capacity — a 0/1 knapsack, solved exactly when small and greedily
//! beyond, with no hub given more than its share when there are others.

use serde::{Deserialize, Serialize};

/// How far a worker trusts a hub (the seeds' miner agent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trust {
    /// Avoided by policy, or banned or suspected in the ledger.
    Avoided,
    /// No bonded wallet in the ledger (yet).
    Unverified,
    /// A registered hub wallet holding at least its deposit.
    Verified,
    /// Verified, and it has paid this worker as promised.
    Reliable,
}

impl Trust {
    /// What a coin promised by such a hub is worth, in per mille: the
    /// agent weighs income by it.
    pub fn weight_per_mille(self) -> u64 {
        match self {
            Trust::Avoided => 0,
            Trust::Unverified => 300,
            Trust::Verified => 800,
            Trust::Reliable => 1000,
        }
    }
}

/// What the ledger shows of a hub, for [`classify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HubRecord {
    /// Its wallet is registered (not idle, suspected or punished).
    pub registered: bool,
    /// Its wallet is suspected or punished.
    pub flagged: bool,
    /// Payments this worker has had from it.
    pub payments_to_me: u32,
    /// Tasks this worker finished for it that started more than
    /// [`UNPAID_GRACE_MS`] ago and after its last payment to this worker:
    /// work it should have paid for by now.
    pub unpaid_tasks: u32,
}

/// How long a hub has to pay for a task (its paydays come within this).
pub const UNPAID_GRACE_MS: u64 = 30 * 60 * 1000;
/// A hub that owes for this many tasks past the grace is avoided until it
/// pays: a hub that never pays gets at most this much work (plus what a
/// worker does for it within the grace).
pub const UNPAID_TASKS_MAX: u32 = 20;

/// The worker's policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The least price per task worth taking (units).
    pub min_price: u64,
    /// Hubs always trusted as reliable, and hubs never worked for.
    pub trust: Vec<[u8; 32]>,
    pub avoid: Vec<[u8; 32]>,
    /// Take bids from unverified hubs at all.
    pub unverified: bool,
    /// The most of the capacity one hub gets when others have work too,
    /// in percent.
    pub hub_share_percent: u8,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            min_price: 1,
            trust: Vec::new(),
            avoid: Vec::new(),
            unverified: false,
            hub_share_percent: 60,
        }
    }
}

/// How far to trust `hub`, by the policy and its record.
pub fn classify(hub: &[u8; 32], record: &HubRecord, policy: &Policy) -> Trust {
    if policy.avoid.contains(hub) || record.flagged || record.unpaid_tasks >= UNPAID_TASKS_MAX {
        Trust::Avoided
    } else if policy.trust.contains(hub) || (record.registered && record.payments_to_me > 0) {
        Trust::Reliable
    } else if record.registered {
        Trust::Verified
    } else {
        Trust::Unverified
    }
}

/// A bid the worker could take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    pub hub: [u8; 32],
    pub trust: Trust,
    /// What it pays per task (units).
    pub price: u64,
    /// What it takes of the worker's capacity (cores).
    pub weight: u32,
}

impl Offer {
    /// Income weighted by trust.
    fn value(&self) -> u64 {
        self.price.saturating_mul(self.trust.weight_per_mille()) / 1000
    }
}

/// Items above which the exact solution gives way to the greedy one.
pub const EXACT_ITEMS_MAX: usize = 64;
/// Capacity above which, likewise.
pub const EXACT_CAPACITY_MAX: u32 = 4096;

/// Which of `offers` to take within `capacity`: the indices, by the
/// policy's price floor and trust, maximising trust-weighted income, and
/// giving no hub more than its share when another hub has work taken.
pub fn choose(offers: &[Offer], capacity: u32, policy: &Policy) -> Vec<usize> {
    let eligible: Vec<usize> = (0..offers.len())
        .filter(|&i| {
            let offer = &offers[i];
            offer.price >= policy.min_price
                && offer.weight <= capacity
                && match offer.trust {
                    Trust::Avoided => false,
                    Trust::Unverified => policy.unverified,
                    _ => true,
                }
        })
        .collect();
    let mut chosen = knapsack(offers, &eligible, capacity);
    // Spread the risk: a hub over its share loses its least valuable
    // items, and the room goes to other hubs' offers.
    let share = u64::from(capacity) * u64::from(policy.hub_share_percent.clamp(1, 100)) / 100;
    for _ in 0..offers.len() {
        let mut by_hub: Vec<([u8; 32], u64)> = Vec::new();
        for &i in &chosen {
            match by_hub.iter_mut().find(|(hub, _)| *hub == offers[i].hub) {
                Some((_, used)) => *used += u64::from(offers[i].weight),
                None => by_hub.push((offers[i].hub, u64::from(offers[i].weight))),
            }
        }
        let Some((over, _)) = by_hub.iter().find(|(_, used)| *used > share).copied() else {
            break;
        };
        if !eligible.iter().any(|&i| offers[i].hub != over) {
            break;
        }
        // Drop the over-share hub's least valuable item…
        let Some(position) = chosen
            .iter()
            .enumerate()
            .filter(|(_, i)| offers[**i].hub == over)
            .min_by_key(|(_, i)| offers[**i].value())
            .map(|(position, _)| position)
        else {
            break;
        };
        chosen.remove(position);
        // …and refill the room from other hubs.
        let used: u32 = chosen.iter().map(|&i| offers[i].weight).sum();
        let rest: Vec<usize> = eligible
            .iter()
            .copied()
            .filter(|i| !chosen.contains(i) && offers[*i].hub != over)
            .collect();
        chosen.extend(knapsack(offers, &rest, capacity - used));
    }
    chosen.sort_unstable();
    chosen
}

/// 0/1 knapsack over `items` of `offers`: exact by dynamic programming
/// when small, else greedy by value per unit of weight.
fn knapsack(offers: &[Offer], items: &[usize], capacity: u32) -> Vec<usize> {
    if items.is_empty() || capacity == 0 {
        return Vec::new();
    }
    if items.len() <= EXACT_ITEMS_MAX && capacity <= EXACT_CAPACITY_MAX {
        let width = capacity as usize + 1;
        // best[w]: most value within weight w using items so far; take
        // records the decisions to walk back.
        let mut best = vec![0u64; width];
        let mut take = vec![false; items.len() * width];
        for (row, &i) in items.iter().enumerate() {
            let weight = offers[i].weight as usize;
            let value = offers[i].value();
            for w in (weight..width).rev() {
                let with = best[w - weight] + value;
                if with > best[w] {
                    best[w] = with;
                    take[row * width + w] = true;
                }
            }
        }
        let mut chosen = Vec::new();
        let mut w = capacity as usize;
        for row in (0..items.len()).rev() {
            if take[row * width + w] {
                chosen.push(items[row]);
                w -= offers[items[row]].weight as usize;
            }
        }
        return chosen;
    }
    let mut order: Vec<usize> = items.to_vec();
    // Value per weight, compared without division.
    order.sort_by(|&a, &b| {
        let (a, b) = (&offers[a], &offers[b]);
        (u128::from(b.value()) * u128::from(a.weight.max(1)))
            .cmp(&(u128::from(a.value()) * u128::from(b.weight.max(1))))
    });
    let mut left = capacity;
    let mut chosen = Vec::new();
    for i in order {
        if offers[i].weight <= left {
            left -= offers[i].weight;
            chosen.push(i);
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(hub: u8, trust: Trust, price: u64, weight: u32) -> Offer {
        Offer {
            hub: [hub; 32],
            trust,
            price,
            weight,
        }
    }

    #[test]
    fn trust_follows_the_ledger_and_the_policy() {
        let policy = Policy {
            avoid: vec![[9; 32]],
            trust: vec![[8; 32]],
            ..Policy::default()
        };
        let record = |registered, flagged, payments_to_me| HubRecord {
            registered,
            flagged,
            payments_to_me,
            unpaid_tasks: 0,
        };
        assert_eq!(
            classify(&[1; 32], &record(false, false, 0), &policy),
            Trust::Unverified
        );
        assert_eq!(
            classify(&[1; 32], &record(true, false, 0), &policy),
            Trust::Verified
        );
        assert_eq!(
            classify(&[1; 32], &record(true, false, 2), &policy),
            Trust::Reliable
        );
        assert_eq!(
            classify(&[1; 32], &record(true, true, 2), &policy),
            Trust::Avoided
        );
        assert_eq!(
            classify(&[9; 32], &record(true, false, 9), &policy),
            Trust::Avoided
        );
        assert_eq!(
            classify(&[8; 32], &record(false, false, 0), &policy),
            Trust::Reliable
        );
        // A hub that paid once and then stopped paying: once it owes for
        // UNPAID_TASKS_MAX tasks past the grace, it is avoided.
        let owing = |unpaid_tasks| HubRecord {
            unpaid_tasks,
            ..record(true, false, 3)
        };
        assert_eq!(
            classify(&[1; 32], &owing(UNPAID_TASKS_MAX - 1), &policy),
            Trust::Reliable
        );
        assert_eq!(
            classify(&[1; 32], &owing(UNPAID_TASKS_MAX), &policy),
            Trust::Avoided
        );
    }

    #[test]
    fn the_exact_solution_beats_greedy_where_greedy_fails() {
        // Capacity 10: greedy by density takes the 6-core item (60/6 = 10
        // per core) and then only fits 5 → 60 + … ; the best is 5 + 5.
        let offers = [
            offer(1, Trust::Reliable, 60, 6),
            offer(1, Trust::Reliable, 45, 5),
            offer(2, Trust::Reliable, 45, 5),
        ];
        let policy = Policy {
            hub_share_percent: 100,
            ..Policy::default()
        };
        assert_eq!(choose(&offers, 10, &policy), vec![1, 2]);
    }

    #[test]
    fn the_floor_the_trust_and_the_share_shape_the_choice() {
        let offers = [
            offer(1, Trust::Reliable, 100, 2),
            offer(1, Trust::Reliable, 90, 2),
            offer(1, Trust::Reliable, 80, 2),
            offer(2, Trust::Verified, 70, 2),
            offer(3, Trust::Unverified, 500, 2),
            offer(4, Trust::Avoided, 900, 2),
            offer(2, Trust::Verified, 5, 2),
        ];
        let policy = Policy {
            min_price: 10,
            hub_share_percent: 50,
            ..Policy::default()
        };
        // Capacity 8, share 4: hub 1 keeps its two best, hub 2 its one
        // above the floor; unverified and avoided hubs get nothing.
        assert_eq!(choose(&offers, 8, &policy), vec![0, 1, 3]);
        // Unverified hubs allowed: its big offer (worth 30 % of 500) wins.
        let policy = Policy {
            unverified: true,
            ..policy
        };
        assert_eq!(choose(&offers, 8, &policy), vec![0, 1, 3, 4]);
        // One hub alone may fill everything.
        let alone = [
            offer(1, Trust::Reliable, 10, 3),
            offer(1, Trust::Reliable, 10, 3),
        ];
        assert_eq!(choose(&alone, 6, &Policy::default()), vec![0, 1]);
    }

    #[test]
    fn large_instances_are_solved_greedily() {
        let offers: Vec<Offer> = (0..1000)
            .map(|n| {
                offer(
                    (n % 7) as u8,
                    Trust::Reliable,
                    10 + n % 13,
                    1 + (n % 5) as u32,
                )
            })
            .collect();
        let policy = Policy {
            hub_share_percent: 100,
            ..Policy::default()
        };
        let chosen = choose(&offers, 100, &policy);
        let used: u32 = chosen.iter().map(|&i| offers[i].weight).sum();
        assert!((95..=100).contains(&used), "{used}");
    }
}
