//! What a finished job pays, sans-IO: the hub's published terms applied
//! to the job's record. Each replica in a task's accepted majority earns
//! the worker the price of a task plus its fuel; the hub earns its fee on
//! top; the buyer's escrow caps the whole (shares scaled down evenly if
//! it would be more), and what is left returns to the buyer.
//!
//! The rule for failures: a task pays when a quorum accepted its outcome,
//! whatever that outcome is. Workers that agree the program trapped, ran
//! out of fuel, memory or time, or exited non-zero did the work the buyer
//! asked for and proved it by agreeing: the failure is the program's, so
//! they are paid, and the job still ends `failed`. A task with no
//! accepted outcome (no quorum, no worker, output lost, cut short by the
//! deadline or a cancel) pays nobody. So a job that failed or was
//! cancelled pays for the tasks accepted before it ended, and a job with
//! none is refunded whole. Workers caught dissenting are named for
//! slashing either way.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::scheduler::{Job, ReplicaState, TaskState};

/// Most payees of one settlement (the ledger's limit, less the hub).
pub const PAYEES_MAX: usize = 255;

/// A hub's prices, in ledger units (1 coin = 1 000 000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terms {
    /// Per replica in an accepted majority.
    pub price_per_task: u64,
    /// Per 10⁹ units of WebAssembly fuel such a replica used.
    pub price_per_gfuel: u64,
    /// The hub's fee, in percent of what the workers earn.
    pub fee_percent: u8,
    /// What a worker caught dissenting loses of its deposit with the hub.
    pub slash: u64,
}

impl Default for Terms {
    fn default() -> Self {
        Terms {
            price_per_task: 1_000,
            price_per_gfuel: 10_000,
            fee_percent: 10,
            slash: 1_000_000,
        }
    }
}

impl Terms {
    /// Whether this hub charges at all.
    pub fn charges(&self) -> bool {
        self.price_per_task > 0 || self.price_per_gfuel > 0
    }

    /// What one accepted replica that used `fuel` earns its worker.
    pub fn replica_price(&self, fuel: u64) -> u64 {
        let fuel_part =
            (u128::from(fuel) * u128::from(self.price_per_gfuel)).div_ceil(1_000_000_000);
        self.price_per_task
            .saturating_add(u64::try_from(fuel_part).unwrap_or(u64::MAX))
    }

    /// The least a job of `tasks` tasks with `replicas` each costs (no
    /// fuel), fee included: what an escrow must at least hold.
    pub fn minimum(&self, tasks: u32, replicas: u8) -> u64 {
        let workers = u128::from(self.price_per_task) * u128::from(tasks) * u128::from(replicas);
        let total = workers + workers * u128::from(self.fee_percent) / 100;
        u64::try_from(total).unwrap_or(u64::MAX)
    }
}

/// What to do with a finished job's escrow.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Settlement {
    /// Workers' pay, then the hub's fee (to `hub`); empty: refund it all.
    pub payouts: Vec<([u8; 32], u64)>,
    pub workers_total: u64,
    pub fee: u64,
    /// What returns to the buyer.
    pub refund: u64,
    /// Shares were scaled down to fit the escrow.
    pub scaled: bool,
    /// Workers caught dissenting.
    pub slash: Vec<[u8; 32]>,
}

/// Settles `job` against an escrow of `held` under `terms`, the fee going
/// to `hub`.
pub fn settle(job: &Job, held: u64, terms: &Terms, hub: [u8; 32]) -> Settlement {
    let slash: BTreeSet<[u8; 32]> = job
        .tasks
        .iter()
        .flat_map(|task| task.replicas.iter())
        .filter(|replica| replica.state == ReplicaState::Dissented)
        .map(|replica| replica.worker.0)
        .collect();
    let slash: Vec<[u8; 32]> = slash.into_iter().collect();
    if !job.state.is_ended() {
        return Settlement {
            refund: held,
            slash,
            ..Settlement::default()
        };
    }
    let mut earned: BTreeMap<[u8; 32], u128> = BTreeMap::new();
    for task in &job.tasks {
        if let TaskState::Accepted {
            outcome, agreed, ..
        } = &task.state
        {
            for worker in agreed {
                *earned.entry(worker.0).or_default() +=
                    u128::from(terms.replica_price(outcome.fuel_used));
            }
        }
    }
    let mut earned: Vec<([u8; 32], u128)> = earned.into_iter().collect();
    // Past the ledger's limit, the biggest earners are paid.
    earned.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    earned.truncate(PAYEES_MAX);
    let workers: u128 = earned.iter().map(|(_, amount)| amount).sum();
    let fee = workers * u128::from(terms.fee_percent) / 100;
    let total = workers + fee;
    let held_wide = u128::from(held);
    let scaled = total > held_wide;
    let scale = |amount: u128| -> u64 {
        let amount = if scaled && total > 0 {
            amount * held_wide / total
        } else {
            amount
        };
        u64::try_from(amount).unwrap_or(u64::MAX)
    };
    let mut payouts: Vec<([u8; 32], u64)> = earned
        .iter()
        .map(|(worker, amount)| (*worker, scale(*amount)))
        .filter(|(_, amount)| *amount > 0)
        .collect();
    let workers_total: u64 = payouts.iter().map(|(_, amount)| amount).sum();
    let fee = scale(fee).min(held.saturating_sub(workers_total));
    if fee > 0 {
        payouts.push((hub, fee));
    }
    Settlement {
        payouts,
        workers_total,
        fee,
        refund: held - workers_total - fee,
        scaled,
        slash,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::{JobState, Replica, Task};
    use crate::{Digest, ExitStatus, JobId, JobSpec, Outcome};

    fn job(state: JobState, tasks: Vec<(Vec<u8>, Vec<u8>, u64)>) -> Job {
        Job {
            id: JobId(Digest([1; 32])),
            spec: JobSpec::wasm(Digest([2; 32])),
            submitter: Digest([3; 32]),
            submitted_ms: 0,
            ended_ms: Some(1),
            state,
            tasks: tasks
                .into_iter()
                .enumerate()
                .map(|(index, (agreed, dissented, fuel))| Task {
                    index: index as u32,
                    state: TaskState::Accepted {
                        outcome: Outcome {
                            status: ExitStatus::Exited(0),
                            stdout: Digest::default(),
                            stderr: Digest::default(),
                            fuel_used: fuel,
                        },
                        agreed: agreed.iter().map(|w| Digest([*w; 32])).collect(),
                        stored: true,
                    },
                    replicas: agreed
                        .iter()
                        .map(|w| (w, ReplicaState::Agreed))
                        .chain(dissented.iter().map(|w| (w, ReplicaState::Dissented)))
                        .map(|(w, state)| Replica {
                            worker: Digest([*w; 32]),
                            state,
                            deadline_ms: 0,
                        })
                        .collect(),
                    needed: 2,
                })
                .collect(),
            log: Default::default(),
            log_dropped: 0,
        }
    }

    const TERMS: Terms = Terms {
        price_per_task: 100,
        price_per_gfuel: 1000,
        fee_percent: 10,
        slash: 5,
    };

    #[test]
    fn agreeing_replicas_earn_the_hub_takes_its_fee_and_the_rest_returns() {
        // Two tasks: workers 1, 2 agree on both (2 000 000 000 fuel each:
        // 100 + 2000 per replica); worker 5 dissents on the first.
        let job = job(
            JobState::Done,
            vec![
                (vec![1, 2], vec![5], 2_000_000_000),
                (vec![1, 2], vec![], 2_000_000_000),
            ],
        );
        let settlement = settle(&job, 100_000, &TERMS, [9; 32]);
        assert_eq!(
            settlement.payouts,
            vec![([1; 32], 4200), ([2; 32], 4200), ([9; 32], 840)]
        );
        assert_eq!((settlement.workers_total, settlement.fee), (8400, 840));
        assert_eq!(settlement.refund, 100_000 - 9240);
        assert_eq!(settlement.slash, vec![[5; 32]]);
        assert!(!settlement.scaled);
    }

    #[test]
    fn the_escrow_caps_the_bill() {
        let done = job(JobState::Done, vec![(vec![1, 2], vec![], 0)]);
        // 200 to workers + 20 fee = 220 > 110: everything halves.
        let settlement = settle(&done, 110, &TERMS, [9; 32]);
        assert!(settlement.scaled);
        assert_eq!(
            settlement.payouts,
            vec![([1; 32], 50), ([2; 32], 50), ([9; 32], 10)]
        );
        assert_eq!(settlement.refund, 0);
        assert_eq!(TERMS.minimum(4, 3), 1320);
    }

    #[test]
    fn a_failed_job_pays_its_accepted_tasks_whatever_their_exit_and_nothing_else() {
        // Task 0 exited 0, task 1 trapped (both workers agree), task 2 had
        // no quorum when the job failed.
        let mut failed = job(
            JobState::Failed("task 1: its program trapped".into()),
            vec![
                (vec![1, 2], vec![], 0),
                (vec![1, 2], vec![4], 0),
                (vec![], vec![], 0),
            ],
        );
        if let TaskState::Accepted { outcome, .. } = &mut failed.tasks[1].state {
            outcome.status = ExitStatus::Trapped("unreachable".into());
        }
        failed.tasks[2].state = TaskState::Failed("no quorum".into());
        let settlement = settle(&failed, 10_000, &TERMS, [9; 32]);
        // Two accepted tasks × 100 for each of workers 1 and 2, 10 % fee.
        assert_eq!(
            settlement.payouts,
            vec![([1; 32], 200), ([2; 32], 200), ([9; 32], 40)]
        );
        assert_eq!(settlement.refund, 10_000 - 440);
        assert_eq!(settlement.slash, vec![[4; 32]]);
        // A job that ended with no accepted task is refunded whole, and one
        // still running settles nothing.
        for state in [JobState::Cancelled, JobState::Running] {
            let mut none = job(state, vec![(vec![], vec![4], 0)]);
            none.tasks[0].state = TaskState::Failed("cut short".into());
            let settlement = settle(&none, 110, &TERMS, [9; 32]);
            assert!(settlement.payouts.is_empty());
            assert_eq!((settlement.refund, settlement.slash), (110, vec![[4; 32]]));
        }
    }
}
