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
    /// The part of `earned_per_hour` from each kind of work.
    #[serde(default)]
    pub per_hour_by_source: BySource,
}

/// Coins earned per hour from each kind of work. What is none of these
/// (transfers, minted rewards) is in the total only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BySource {
    /// Receipts redeemed for relaying routes and carrying exit traffic.
    pub forwarding: u64,
    /// Receipts redeemed for serving store blobs.
    pub serving: u64,
    /// Payments for compute: escrow payouts and hub wallet payments.
    pub computing: u64,
}

/// Where an earning came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Forwarding,
    Serving,
    Computing,
    Other,
}

impl Source {
    fn of(op: &Op) -> Self {
        use fogwire_ledger_proto::receipt::ReceiptKind;
        match op {
            Op::Redeem {
                kind: ReceiptKind::Forwarding | ReceiptKind::Exit,
                ..
            } => Source::Forwarding,
            Op::Redeem {
                kind: ReceiptKind::Serving | ReceiptKind::Mailbox,
                ..
            } => Source::Serving,
            Op::Release { .. } | Op::WalletPay { .. } => Source::Computing,
            _ => Source::Other,
        }
    }
}

#[derive(Debug, Default)]
struct Account {
    earned_total: u128,
    spent_total: i128,
    /// (time, earned, spent, where the earning came from) of the last
    /// hour.
    recent: VecDeque<(u64, u64, i128, Source)>,
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
            account
                .recent
                .push_back((applied.time_ms, earned, spent, Source::of(&tx.op)));
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
        let mut by_source = BySource::default();
        for (at, e, s, source) in recent {
            earned = earned.saturating_add(*e);
            spent += s;
            match source {
                Source::Forwarding => {
                    by_source.forwarding = by_source.forwarding.saturating_add(*e)
                }
                Source::Serving => by_source.serving = by_source.serving.saturating_add(*e),
                Source::Computing => by_source.computing = by_source.computing.saturating_add(*e),
                Source::Other => {}
            }
            if *e > 0 && first.is_none() {
                first = Some(*at);
            }
        }
        let window = first
            .map(|at| now_ms.saturating_sub(at).clamp(60_000, HOUR_MS))
            .unwrap_or(HOUR_MS);
        let per_hour = |earned: u64| {
            let rate = u128::from(earned) * u128::from(HOUR_MS) / u128::from(window);
            u64::try_from(rate).unwrap_or(u64::MAX)
        };
        Flow {
            earned_total: u64::try_from(account.earned_total).unwrap_or(u64::MAX),
            spent_total: u64::try_from(account.spent_total.max(0)).unwrap_or(u64::MAX),
            earned_last_hour: earned,
            spent_last_hour: u64::try_from(spent.max(0)).unwrap_or(u64::MAX),
            earned_per_hour: per_hour(earned),
            per_hour_by_source: BySource {
                forwarding: per_hour(by_source.forwarding),
                serving: per_hour(by_source.serving),
                computing: per_hour(by_source.computing),
            },
        }
    }
}
