//! Sans-IO core of fogwire's ledger (issue 6, being built).
//!
//! - A [`Transaction`] names the account that spends, that account's next
//!   sequence number (so a transaction applies at most once: replays are
//!   refused) and one [`Op`]. It is signed by the spender's node key
//!   ([`SignedTransaction`]); [`SignedTransaction::verify`] checks the
//!   signature apart from applying, so checks can run in parallel and the
//!   state machine stays pure.
//! - [`Ledger::apply`] applies a verified transaction at a time taken from
//!   the ordered log (never a clock), deterministically: the same log gives
//!   the same state on every node, so a consensus engine can replicate it
//!   later. Every operation is all or nothing, no balance goes below zero,
//!   and coins only move — except a mint by the minting key, which is
//!   counted. [`Ledger::check_supply`] verifies that what every account
//!   and escrow holds is genesis plus minted.

use std::collections::BTreeMap;

use fogwire_identity::{Domain, Keypair, NodeId, Signature};
use serde::{Deserialize, Serialize};

/// Coins, in the smallest unit.
pub type Amount = u64;

/// What a transaction does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Moves coins to another account.
    Transfer { to: [u8; 32], amount: Amount },
    /// Creates coins (the minting key only): network rewards, by a rule
    /// the log records in `reason`.
    Mint {
        to: [u8; 32],
        amount: Amount,
        reason: String,
    },
    /// Locks the spender's coins in escrow `id`, to be released by
    /// `arbiter` (a hub): the funds of a job.
    Hold {
        id: [u8; 32],
        amount: Amount,
        arbiter: [u8; 32],
    },
    /// The arbiter pays out an escrow; what is left goes back to its
    /// owner. The escrow is closed.
    Release {
        id: [u8; 32],
        payouts: Vec<([u8; 32], Amount)>,
    },
    /// The arbiter, or the owner, returns an escrow whole to its owner.
    Refund { id: [u8; 32] },
}

/// A transaction before signing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub from: [u8; 32],
    /// The spender's next sequence number (its first is 1).
    pub sequence: u64,
    pub op: Op,
}

/// The signing domain of ledger transactions.
pub const TX_DOMAIN: Domain = Domain::new("fogwire/ledger/tx/v1");
/// Longest reason a mint may give; most payouts one release may make.
pub const REASON_LEN_MAX: usize = 256;
pub const PAYOUTS_MAX: usize = 64;

impl Transaction {
    /// The bytes signed: the transaction's MessagePack.
    pub fn encode(&self) -> Result<Vec<u8>, LedgerError> {
        let value = rmpv::ext::to_value(self).map_err(|e| LedgerError::Malformed(e.to_string()))?;
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &value)
            .map_err(|e| LedgerError::Malformed(e.to_string()))?;
        Ok(out)
    }

    pub fn decode(mut bytes: &[u8]) -> Result<Transaction, LedgerError> {
        let value = rmpv::decode::read_value_with_max_depth(&mut bytes, 16)
            .map_err(|e| LedgerError::Malformed(e.to_string()))?;
        if !bytes.is_empty() {
            return Err(LedgerError::Malformed("bytes after the transaction".into()));
        }
        rmpv::ext::from_value(value).map_err(|e| LedgerError::Malformed(e.to_string()))
    }

    pub fn sign(&self, key: &Keypair) -> Result<SignedTransaction, LedgerError> {
        let body = self.encode()?;
        Ok(SignedTransaction {
            signature: key.sign(TX_DOMAIN, &body),
            body,
        })
    }
}

/// A transaction as it travels: its bytes and the spender's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTransaction {
    pub body: Vec<u8>,
    pub signature: Signature,
}

/// A transaction whose signature has been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified(Transaction);

impl Verified {
    pub fn transaction(&self) -> &Transaction {
        &self.0
    }

    /// A transaction taken as verified: for replaying the ledger's own
    /// log, whose signatures were checked when it was written, and for
    /// tests. Never for what arrives from the network.
    pub fn trusted(tx: Transaction) -> Verified {
        Verified(tx)
    }
}

impl SignedTransaction {
    /// Decodes the transaction and checks that its spender signed it.
    pub fn verify(&self) -> Result<Verified, LedgerError> {
        let tx = Transaction::decode(&self.body)?;
        let from = NodeId::from_bytes(&tx.from).map_err(|_| LedgerError::BadSignature)?;
        from.verify(TX_DOMAIN, &self.body, &self.signature)
            .map_err(|_| LedgerError::BadSignature)?;
        Ok(Verified(tx))
    }
}

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
    #[error("{needed} coins needed, {available} available")]
    Insufficient { needed: Amount, available: Amount },
    #[error("only the minting key may mint")]
    NotMinter,
    #[error("escrow {0} does not exist (or was closed)")]
    NoEscrow(String),
    #[error("escrow {0} exists already")]
    EscrowExists(String),
    #[error("only the escrow's arbiter (or, to refund, its owner) may do that")]
    NotArbiter,
    #[error("payouts of {paid} exceed the escrow's {held}")]
    Overpaid { paid: Amount, held: Amount },
    #[error("an amount of zero, or a reason or payout list too long")]
    Bounds,
    #[error("the amounts overflow")]
    Overflow,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub balance: Amount,
    /// The last sequence number applied.
    pub sequence: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escrow {
    pub owner: [u8; 32],
    pub arbiter: [u8; 32],
    pub amount: Amount,
}

/// What an applied transaction did, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub from: [u8; 32],
    pub sequence: u64,
    pub time_ms: u64,
}

/// The ledger's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    accounts: BTreeMap<[u8; 32], Account>,
    escrows: BTreeMap<[u8; 32], Escrow>,
    genesis: Amount,
    minted: Amount,
    minter: [u8; 32],
    /// Time of the last applied transaction (from the log).
    time_ms: u64,
}

fn hex8(id: &[u8; 32]) -> String {
    id[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl Ledger {
    /// A ledger whose accounts start with `genesis`, minting by `minter`.
    pub fn new(minter: [u8; 32], genesis: &[([u8; 32], Amount)]) -> Result<Ledger, LedgerError> {
        let mut accounts: BTreeMap<[u8; 32], Account> = BTreeMap::new();
        let mut total: Amount = 0;
        for (id, amount) in genesis {
            let account = accounts.entry(*id).or_default();
            account.balance = account
                .balance
                .checked_add(*amount)
                .ok_or(LedgerError::Overflow)?;
            total = total.checked_add(*amount).ok_or(LedgerError::Overflow)?;
        }
        Ok(Ledger {
            accounts,
            escrows: BTreeMap::new(),
            genesis: total,
            minted: 0,
            minter,
            time_ms: 0,
        })
    }

    pub fn account(&self, id: &[u8; 32]) -> Account {
        self.accounts.get(id).copied().unwrap_or_default()
    }

    pub fn escrow(&self, id: &[u8; 32]) -> Option<Escrow> {
        self.escrows.get(id).copied()
    }

    pub fn genesis(&self) -> Amount {
        self.genesis
    }

    pub fn minted(&self) -> Amount {
        self.minted
    }

    /// Time of the last transaction applied, from the log.
    pub fn time_ms(&self) -> u64 {
        self.time_ms
    }

    /// Whether every coin is accounted for: what accounts and escrows hold
    /// is exactly genesis plus minted.
    pub fn check_supply(&self) -> Result<(), String> {
        let held: u128 = self
            .accounts
            .values()
            .map(|a| u128::from(a.balance))
            .chain(self.escrows.values().map(|e| u128::from(e.amount)))
            .sum();
        let expected = u128::from(self.genesis) + u128::from(self.minted);
        if held == expected {
            Ok(())
        } else {
            Err(format!(
                "accounts and escrows hold {held}, genesis plus minted is {expected}"
            ))
        }
    }

    /// Applies a verified transaction at `time_ms` (the log's time: never
    /// earlier than the last). All or nothing.
    pub fn apply(&mut self, tx: &Verified, time_ms: u64) -> Result<Applied, LedgerError> {
        let tx = &tx.0;
        let expected = self.account(&tx.from).sequence + 1;
        if tx.sequence != expected {
            return Err(LedgerError::Sequence {
                expected,
                got: tx.sequence,
            });
        }
        // Work on a copy of what changes, then commit it: a refusal half
        // way leaves nothing behind.
        let mut next = self.scratch();
        next.run(tx)?;
        let changes = next.into_changes(tx);
        self.commit(changes);
        self.time_ms = self.time_ms.max(time_ms);
        Ok(Applied {
            from: tx.from,
            sequence: tx.sequence,
            time_ms: self.time_ms,
        })
    }

    /// An empty set of changes over this ledger.
    fn scratch(&self) -> Scratch<'_> {
        Scratch {
            accounts: BTreeMap::new(),
            escrows: BTreeMap::new(),
            minted: self.minted,
            base: self,
        }
    }
}

/// The accounts and escrows a transaction changes, before they are kept.
struct Scratch<'a> {
    accounts: BTreeMap<[u8; 32], Account>,
    escrows: BTreeMap<[u8; 32], Option<Escrow>>,
    minted: Amount,
    base: &'a Ledger,
}

impl Scratch<'_> {
    fn account(&mut self, id: &[u8; 32]) -> &mut Account {
        let base = self.base;
        self.accounts.entry(*id).or_insert_with(|| base.account(id))
    }

    fn escrow(&self, id: &[u8; 32]) -> Option<Escrow> {
        match self.escrows.get(id) {
            Some(changed) => *changed,
            None => self.base.escrow(id),
        }
    }

    fn debit(&mut self, id: &[u8; 32], amount: Amount) -> Result<(), LedgerError> {
        let account = self.account(id);
        account.balance = account
            .balance
            .checked_sub(amount)
            .ok_or(LedgerError::Insufficient {
                needed: amount,
                available: account.balance,
            })?;
        Ok(())
    }

    fn credit(&mut self, id: &[u8; 32], amount: Amount) -> Result<(), LedgerError> {
        let account = self.account(id);
        account.balance = account
            .balance
            .checked_add(amount)
            .ok_or(LedgerError::Overflow)?;
        Ok(())
    }

    fn run(&mut self, tx: &Transaction) -> Result<(), LedgerError> {
        match &tx.op {
            Op::Transfer { to, amount } => {
                if *amount == 0 {
                    return Err(LedgerError::Bounds);
                }
                self.debit(&tx.from, *amount)?;
                self.credit(to, *amount)
            }
            Op::Mint { to, amount, reason } => {
                if tx.from != self.base.minter {
                    return Err(LedgerError::NotMinter);
                }
                if *amount == 0 || reason.len() > REASON_LEN_MAX {
                    return Err(LedgerError::Bounds);
                }
                self.minted = self
                    .minted
                    .checked_add(*amount)
                    .ok_or(LedgerError::Overflow)?;
                self.credit(to, *amount)
            }
            Op::Hold {
                id,
                amount,
                arbiter,
            } => {
                if *amount == 0 {
                    return Err(LedgerError::Bounds);
                }
                if self.escrow(id).is_some() {
                    return Err(LedgerError::EscrowExists(hex8(id)));
                }
                self.debit(&tx.from, *amount)?;
                self.escrows.insert(
                    *id,
                    Some(Escrow {
                        owner: tx.from,
                        arbiter: *arbiter,
                        amount: *amount,
                    }),
                );
                Ok(())
            }
            Op::Release { id, payouts } => {
                let escrow = self
                    .escrow(id)
                    .ok_or_else(|| LedgerError::NoEscrow(hex8(id)))?;
                if tx.from != escrow.arbiter {
                    return Err(LedgerError::NotArbiter);
                }
                if payouts.len() > PAYOUTS_MAX {
                    return Err(LedgerError::Bounds);
                }
                let mut paid: Amount = 0;
                for (_, amount) in payouts {
                    paid = paid.checked_add(*amount).ok_or(LedgerError::Overflow)?;
                }
                if paid > escrow.amount {
                    return Err(LedgerError::Overpaid {
                        paid,
                        held: escrow.amount,
                    });
                }
                for (to, amount) in payouts {
                    self.credit(to, *amount)?;
                }
                self.credit(&escrow.owner, escrow.amount - paid)?;
                self.escrows.insert(*id, None);
                Ok(())
            }
            Op::Refund { id } => {
                let escrow = self
                    .escrow(id)
                    .ok_or_else(|| LedgerError::NoEscrow(hex8(id)))?;
                if tx.from != escrow.arbiter && tx.from != escrow.owner {
                    return Err(LedgerError::NotArbiter);
                }
                self.credit(&escrow.owner, escrow.amount)?;
                self.escrows.insert(*id, None);
                Ok(())
            }
        }
    }

    fn into_changes(mut self, tx: &Transaction) -> Changes {
        self.account(&tx.from).sequence = tx.sequence;
        Changes {
            accounts: self.accounts,
            escrows: self.escrows,
            minted: self.minted,
        }
    }
}

/// What a transaction changed, to keep.
struct Changes {
    accounts: BTreeMap<[u8; 32], Account>,
    escrows: BTreeMap<[u8; 32], Option<Escrow>>,
    minted: Amount,
}

impl Ledger {
    fn commit(&mut self, changes: Changes) {
        for (id, account) in changes.accounts {
            self.accounts.insert(id, account);
        }
        for (id, escrow) in changes.escrows {
            match escrow {
                Some(escrow) => self.escrows.insert(id, escrow),
                None => self.escrows.remove(&id),
            };
        }
        self.minted = changes.minted;
    }
}

#[cfg(test)]
mod tests;
