//! What each account earns and spends, kept by the ledger service as it
//! applies transactions (and rebuilt by replay): totals, the last hour,
//! and coins per hour.
//!
//! Earned: coins that came to the account from others' work for it —
//! transfers and payments to it, its share of escrow payouts, receipts it
//! redeemed, rewards minted for it. Spent: coins it sent, held in escrow
//! or paid for receipts, less what escrows returned to it. Moving its own
//! coins into its hub wallet or a deposit, and back, is neither.

use std::collections::{HashMap, VecDeque};

use fogwire_ledger_proto::{Applied, Id, Op, Transaction};
use serde::{Deserialize, Serialize};

const HOUR_MS: u64 = 3_600_000;
/// Events kept per account for the last hour.
const RECENT_MAX: usize = 4096;

/// One account's flows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    pub earned_total: u64,
    pub spent_total: u64,
    pub earned_last_hour: u64,
    pub spent_last_hour: u64,
    /// Earned per hour over the last hour (or since the account's first
    /// earning in it, if that is less: at least a minute).
    pub earned_per_hour: u64,
}

#[derive(Debug, Default)]
struct Account {
    earned_total: u128,
    spent_total: i128,
    /// (time, earned, spent) of the last hour.
    recent: VecDeque<(u64, u64, i128)>,
}

/// Every account's flows.
#[derive(Debug, Default)]
pub struct Flows {
    accounts: HashMap<Id, Account>,
}

impl Flows {
    /// Takes in what `tx` did.
    pub fn record(&mut self, tx: &Transaction, applied: &Applied) {
        for (id, change) in &applied.flows {
            let (earned, spent): (u64, i128) = match (&tx.op, *change > 0) {
                // Own coins moved between own places.
                (Op::WalletFund { .. } | Op::WalletWithdraw { .. }, _)
                | (Op::DepositPost { .. } | Op::DepositReclaim { .. }, _) => (0, 0),
                // An escrow coming back to its owner lowers what it spent.
                (Op::Refund { .. }, true) => (0, -*change),
                (Op::Release { payouts, .. }, true) if !payouts.iter().any(|(to, _)| to == id) => {
                    (0, -*change)
                }
                (_, true) => (u64::try_from(*change).unwrap_or(u64::MAX), 0),
                (_, false) => (0, -*change),
            };
            if earned == 0 && spent == 0 {
                continue;
            }
            let account = self.accounts.entry(*id).or_default();
            account.earned_total += u128::from(earned);
            account.spent_total += spent;
            if account.recent.len() >= RECENT_MAX {
                account.recent.pop_front();
            }
            account.recent.push_back((applied.time_ms, earned, spent));
            while account
                .recent
                .front()
                .is_some_and(|(at, ..)| *at + HOUR_MS < applied.time_ms)
            {
                account.recent.pop_front();
            }
        }
    }

    /// `id`'s flows as of `now_ms`.
    pub fn flow(&self, id: &Id, now_ms: u64) -> Flow {
        let Some(account) = self.accounts.get(id) else {
            return Flow::default();
        };
        let since = now_ms.saturating_sub(HOUR_MS);
        let recent = account.recent.iter().filter(|(at, ..)| *at >= since);
        let (mut earned, mut spent, mut first) = (0u64, 0i128, None);
        for (at, e, s) in recent {
            earned = earned.saturating_add(*e);
            spent += s;
            if *e > 0 && first.is_none() {
                first = Some(*at);
            }
        }
        let window = first
            .map(|at| now_ms.saturating_sub(at).clamp(60_000, HOUR_MS))
            .unwrap_or(HOUR_MS);
        let per_hour = u128::from(earned) * u128::from(HOUR_MS) / u128::from(window);
        Flow {
            earned_total: u64::try_from(account.earned_total).unwrap_or(u64::MAX),
            spent_total: u64::try_from(account.spent_total.max(0)).unwrap_or(u64::MAX),
            earned_last_hour: earned,
            spent_last_hour: u64::try_from(spent.max(0)).unwrap_or(u64::MAX),
            earned_per_hour: u64::try_from(per_hour).unwrap_or(u64::MAX),
        }
    }
}
