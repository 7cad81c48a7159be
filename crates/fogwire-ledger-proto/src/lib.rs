//! Sans-IO core of fogwire's ledger.
//!
//! - A [`Transaction`] names the account that spends, that account's next
//!   sequence number (so a transaction applies at most once: replays are
//!   refused) and one [`Op`]. It is signed by the spender's node key
//!   ([`SignedTransaction`]); [`SignedTransaction::verify`] checks the
//!   signature apart from applying, so checks can run in parallel and the
//!   state machine stays pure.
//! - [`Ledger::apply`] applies a verified transaction at a time taken from
//!   the ordered log (never a clock), deterministically: the same genesis
//!   and log give the same state on every node, so a consensus engine can
//!   replicate it later. Every operation is all or nothing, no balance
//!   goes below zero, and coins only move — except a mint by the minting
//!   key, which is counted. [`Ledger::check_supply`] verifies that what
//!   accounts, escrows, hub wallets and deposits hold is genesis plus
//!   minted.
//! - Hub wallets follow the seeds' contract exactly (states Created →
//!   Registered → Idle, Suspected, Punished; a frozen deposit; 30 % of each
//!   payout locked until payday; the DAO's 0.5 % fee; suspicion for 120
//!   days, then rehabilitation or a ban) under [`Rules`] fixed at genesis.
//!   Workers bond deposits to hubs, which the hub may slash.

mod id;
pub mod receipt;
mod rules;
mod state;
mod tx;

pub use id::Id;
pub use rules::{COIN, GENESIS_ACCOUNTS_MAX, Genesis, Rules};
pub use state::{Account, Applied, Deposit, Escrow, HubWallet, Ledger, SupplyError, WalletState};
pub use tx::{Op, SignedTransaction, TX_DOMAIN, Transaction, Verified};

use serde::{Serialize, de::DeserializeOwned};

/// Coins, in the smallest unit ([`COIN`] of them make one coin).
pub type Amount = u64;

/// Formats an amount as coins, the way every output shows amounts:
/// `12.5`, `0.000001`.
pub fn format_coins(units: Amount) -> String {
    let whole = units / COIN;
    let fraction = units % COIN;
    if fraction == 0 {
        whole.to_string()
    } else {
        let digits = format!("{fraction:06}");
        format!("{whole}.{}", digits.trim_end_matches('0'))
    }
}

/// Longest reason a mint may give; most payouts one release may make.
pub const REASON_LEN_MAX: usize = 256;
pub const PAYOUTS_MAX: usize = 256;

/// Why a transaction was refused. A refused transaction changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    #[error("malformed transaction: {0}")]
    Malformed(String),
    #[error("the signature is not the spender's")]
    BadSignature,
    #[error("sequence {got} is not the spender's next ({expected}): a replay, or out of order")]
    Sequence { expected: u64, got: u64 },
    #[error("{} coins needed, {} available", format_coins(*needed), format_coins(*available))]
    Insufficient { needed: Amount, available: Amount },
    #[error("only the minting key may mint")]
    NotMinter,
    #[error("only the DAO's key may do that")]
    NotDao,
    #[error("escrow {0} does not exist (or was closed)")]
    NoEscrow(String),
    #[error("escrow {0} exists already")]
    EscrowExists(String),
    #[error("only the escrow's arbiter (or, once it expires, its owner) may do that")]
    NotArbiter,
    #[error("payouts of {} coins exceed the escrow's {}", format_coins(*paid), format_coins(*held))]
    Overpaid { paid: Amount, held: Amount },
    #[error("hub {0} has no wallet")]
    NoWallet(String),
    #[error("the hub wallet is {state}; that needs it {needs}")]
    WalletState {
        state: WalletState,
        needs: &'static str,
    },
    #[error(
        "the payout needs {} coins of the wallet's unlocked funds (itself and the share it locks until payday), and {} are unlocked",
        format_coins(*needed),
        format_coins(*unlocked)
    )]
    Locked { needed: Amount, unlocked: Amount },
    #[error("not before {at_ms} ms (the ledger's time); it is {now_ms} ms")]
    TooEarly { at_ms: u64, now_ms: u64 },
    #[error("hub {0} was banned: its wallet is blocked")]
    Blocked(String),
    #[error("no deposit of {0} with that hub")]
    NoDeposit(String),
    #[error("the deposit was not asked back (deposit_unbond first)")]
    NotUnbonding,
    #[error("a receipt is redeemed by the one it pays, not another")]
    NotPayee,
    #[error("that receipt (sequence {seq}) is not newer than the last redeemed ({last})")]
    Redeemed { seq: u64, last: u64 },
    #[error("an amount of zero, or a reason, payout list or genesis too long")]
    Bounds,
    #[error("the amounts overflow")]
    Overflow,
}

/// MessagePack of a value, as the ledger writes it: structs as arrays,
/// enums as `[variant, fields]`.
pub fn encode_msgpack<T: Serialize>(value: &T) -> Result<Vec<u8>, LedgerError> {
    let value = rmpv::ext::to_value(value).map_err(|e| LedgerError::Malformed(e.to_string()))?;
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &value)
        .map_err(|e| LedgerError::Malformed(e.to_string()))?;
    Ok(out)
}

/// The inverse of [`encode_msgpack`], refusing trailing bytes and nesting
/// deeper than 16.
pub fn decode_msgpack<T: DeserializeOwned>(mut bytes: &[u8]) -> Result<T, LedgerError> {
    let value = rmpv::decode::read_value_with_max_depth(&mut bytes, 16)
        .map_err(|e| LedgerError::Malformed(e.to_string()))?;
    if !bytes.is_empty() {
        return Err(LedgerError::Malformed("bytes after the value".into()));
    }
    rmpv::ext::from_value(value).map_err(|e| LedgerError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod wallet_tests;
