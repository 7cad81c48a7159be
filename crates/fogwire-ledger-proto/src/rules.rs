//! The ledger's rules and genesis: fixed when the ledger starts, written
//! as the first entry of its log, so every replica applies the same.

use serde::{Deserialize, Serialize};

use crate::{Amount, Id, LedgerError};

/// Smallest units in one coin.
pub const COIN: Amount = 1_000_000;
const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// The economic rules of one ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    /// The only key that may mint (network rewards).
    pub minter: Id,
    /// The DAO's key: suspects, rehabilitates and bans hubs, and receives
    /// paydays' fees, slashed deposits and banned hubs' funds.
    pub dao: Id,
    /// What registering a hub wallet freezes (the seeds: 1 token).
    pub hub_deposit: Amount,
    /// Share of each payout to a worker that locks until payday (30).
    pub lock_percent: u8,
    /// Share of the locked funds paid to the DAO at payday, per mille (5 =
    /// 0.5 %).
    pub dao_fee_per_mille: u16,
    /// How long after registering a hub may call payday (30 days).
    pub pay_period_ms: u64,
    /// How long a suspected hub stays locked before the DAO may ban it
    /// (120 days).
    pub suspect_ms: u64,
    /// How long a worker's deposit stays slashable after it asks for it
    /// back (1 day).
    pub unbond_ms: u64,
    /// Published prices of work redeemed by receipt, per GiB: what a
    /// route's source pays its relays, and a fetcher the nodes it
    /// fetched from.
    pub price_per_gib_forwarded: Amount,
    pub price_per_gib_served: Amount,
}

impl Rules {
    /// The seeds' rules, with `minter` and `dao` as given.
    pub fn new(minter: Id, dao: Id) -> Rules {
        Rules {
            minter,
            dao,
            hub_deposit: COIN,
            lock_percent: 30,
            dao_fee_per_mille: 5,
            pay_period_ms: 30 * DAY_MS,
            suspect_ms: 120 * DAY_MS,
            unbond_ms: DAY_MS,
            price_per_gib_forwarded: COIN / 100,
            price_per_gib_served: COIN / 100,
        }
    }

    pub fn validate(&self) -> Result<(), LedgerError> {
        if self.lock_percent > 100 || self.dao_fee_per_mille > 1000 || self.hub_deposit == 0 {
            return Err(LedgerError::Malformed(
                "rules: lock_percent at most 100, dao_fee_per_mille at most 1000, a hub deposit above 0"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The share of a payout that locks: rounded up, so that many small
    /// payouts cannot dodge the lock.
    pub fn lock_of(&self, amount: Amount) -> Amount {
        let lock = (u128::from(amount) * u128::from(self.lock_percent)).div_ceil(100);
        // At most `amount`, since lock_percent is at most 100.
        Amount::try_from(lock).unwrap_or(Amount::MAX)
    }

    /// The DAO's fee on `locked` at payday: rounded down.
    pub fn dao_fee_of(&self, locked: Amount) -> Amount {
        let fee = u128::from(locked) * u128::from(self.dao_fee_per_mille) / 1000;
        Amount::try_from(fee).unwrap_or(Amount::MAX)
    }
}

/// Everything a ledger starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    pub rules: Rules,
    /// Accounts and what they hold at the start.
    pub accounts: Vec<(Id, Amount)>,
}

/// Most accounts a genesis may name.
pub const GENESIS_ACCOUNTS_MAX: usize = 4096;
