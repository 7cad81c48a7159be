//! The ledger: accounts, histories, operations, raw submissions.

use serde::{Deserialize, Serialize};

/// `GET /v1/ledger`: the ledger, its rules and its supply check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerInfo {
    /// The node that runs the ledger.
    pub node: String,
    pub minter: String,
    pub dao: String,
    /// Amounts are in units (1 coin = 1 000 000 units).
    pub hub_deposit: u64,
    pub lock_percent: u8,
    pub dao_fee_per_mille: u16,
    pub pay_period_ms: u64,
    pub suspect_ms: u64,
    pub unbond_ms: u64,
    pub genesis: u64,
    pub minted: u64,
    /// What accounts, escrows, hub wallets and deposits hold together.
    pub held: u64,
    /// Whether `held` is exactly genesis plus minted.
    pub supply_ok: bool,
    pub supply_error: Option<String>,
    pub accounts: u64,
    pub log_len: u64,
    /// The ledger's time: its last transaction's.
    pub time_ms: u64,
}

/// `GET /v1/ledger/accounts/{who}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerAccount {
    pub id: String,
    pub balance: u64,
    /// The last sequence number the account used.
    pub sequence: u64,
    pub wallet: Option<HubWalletInfo>,
    pub deposits: Vec<DepositInfo>,
    /// Escrows this account arbitrates (as a hub).
    pub escrows: Vec<EscrowInfo>,
    pub time_ms: u64,
    /// Coins that came to it for work and payments (units), and that it
    /// spent, in all and over the last hour; and its earnings per hour.
    pub earned_total: u64,
    pub spent_total: u64,
    pub earned_last_hour: u64,
    pub spent_last_hour: u64,
    pub earned_per_hour: u64,
    /// The part of `earned_per_hour` from each kind of work.
    #[serde(default)]
    pub earned_per_hour_by_source: EarnedBySource,
}

/// Coins per hour earned from each kind of work (units).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EarnedBySource {
    /// Relaying routes and carrying exit traffic.
    pub forwarding: u64,
    /// Serving store blobs.
    pub serving: u64,
    /// Compute: escrow payouts and hub wallet payments.
    pub computing: u64,
}

/// A hub wallet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubWalletInfo {
    /// created, registered, idle, suspected or punished.
    pub state: String,
    pub balance: u64,
    pub frozen: u64,
    pub locked: u64,
    /// What the hub may pay out now.
    pub unlocked: u64,
    pub registered_ms: u64,
    pub suspected_ms: u64,
    /// When payday may be called (registered wallets).
    pub payday_from_ms: Option<u64>,
    /// When the DAO may ban it (suspected wallets).
    pub ban_from_ms: Option<u64>,
}

/// A worker's deposit with a hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositInfo {
    pub worker: String,
    pub hub: String,
    pub amount: u64,
    /// When the worker may take it back, if it asked.
    pub reclaim_from_ms: Option<u64>,
}

/// An open escrow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscrowInfo {
    pub id: String,
    pub owner: String,
    pub arbiter: String,
    pub amount: u64,
    pub expires_ms: u64,
}

/// One transaction of an account's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerHistoryLine {
    pub index: u64,
    pub time_ms: u64,
    pub from: String,
    pub sequence: u64,
    /// The operation's name (transfer, hold, wallet_pay, …).
    pub op: String,
    /// What it did, in words.
    pub text: String,
}

/// `POST /v1/ledger/ops`: an operation for this node to sign and send.
/// Accounts are node ids (or a unique start of one); amounts are units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum LedgerOpRequest {
    Transfer {
        to: String,
        amount: u64,
    },
    Mint {
        to: String,
        amount: u64,
        reason: String,
    },
    WalletFund {
        amount: u64,
    },
    WalletRegister,
    WalletPay {
        to: String,
        amount: u64,
    },
    WalletPayday,
    WalletWithdraw {
        amount: u64,
    },
    Suspect {
        hub: String,
    },
    Rehab {
        hub: String,
    },
    Ban {
        hub: String,
    },
    DepositPost {
        hub: String,
        amount: u64,
    },
    DepositUnbond {
        hub: String,
    },
    DepositReclaim {
        hub: String,
    },
    /// Take back an escrow this node holds (from its expiry on), or, as
    /// its arbiter, return it: `escrow` is its id in hex.
    Refund {
        escrow: String,
    },
}

/// `POST /v1/ledger/submit`: a transaction signed elsewhere (by the DAO's
/// key file, say), in hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerSubmitRequest {
    pub body: String,
    pub signature: String,
}

/// Where a transaction landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerReceipt {
    pub index: u64,
    pub time_ms: u64,
    /// It had applied before (a resubmission): this is its first receipt.
    pub replayed: bool,
    /// What it did, in words.
    pub text: String,
}
