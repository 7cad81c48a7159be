//! The ledger's state and how a transaction changes it.

use std::collections::BTreeMap;

/// Coins held do not add up to genesis plus minted: a bug, never input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("accounts, escrows, wallets and deposits hold {held}, genesis plus minted is {expected}")]
pub struct SupplyError {
    pub held: u128,
    pub expected: u128,
}

use serde::{Deserialize, Serialize};

use crate::receipt::{self, ReceiptKind};
use crate::{
    Amount, GENESIS_ACCOUNTS_MAX, Genesis, Id, LedgerError, Op, PAYOUTS_MAX, REASON_LEN_MAX, Rules,
    Transaction, Verified,
};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub balance: Amount,
    /// The last sequence number applied.
    pub sequence: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escrow {
    pub owner: Id,
    pub arbiter: Id,
    pub amount: Amount,
    /// From this time (the log's) the owner may take the escrow back.
    pub expires_ms: u64,
}

/// The states of a hub wallet, as the seeds define them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WalletState {
    Created,
    Registered,
    Idle,
    Suspected,
    Punished,
}

impl std::fmt::Display for WalletState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WalletState::Created => "created",
            WalletState::Registered => "registered",
            WalletState::Idle => "idle",
            WalletState::Suspected => "suspected",
            WalletState::Punished => "punished",
        })
    }
}

/// A hub's bonded wallet. `balance` includes what is frozen and locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubWallet {
    pub state: WalletState,
    pub balance: Amount,
    /// The deposit registration froze.
    pub frozen: Amount,
    /// What payouts have locked this pay period.
    pub locked: Amount,
    /// When the wallet last registered (the log's time).
    pub registered_ms: u64,
    /// When the DAO suspected it.
    pub suspected_ms: u64,
}

impl HubWallet {
    /// What the hub may pay out now: neither frozen nor locked.
    pub fn unlocked(&self) -> Amount {
        match self.state {
            WalletState::Registered => self.balance.saturating_sub(self.frozen + self.locked),
            WalletState::Created | WalletState::Idle => self.balance,
            WalletState::Suspected | WalletState::Punished => 0,
        }
    }
}

/// A worker's deposit with one hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deposit {
    pub amount: Amount,
    /// When the worker asked for it back, if it has.
    pub unbond_ms: Option<u64>,
}

/// What an applied transaction did, for the log and its indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub from: Id,
    pub sequence: u64,
    /// The log's time it applied at.
    pub time_ms: u64,
    /// Every account, wallet or deposit holder whose coins it moved.
    pub touched: Vec<Id>,
    /// How each account's own balance changed (wallets and deposits
    /// aside): what it earned (above zero) or spent.
    pub flows: Vec<(Id, i128)>,
}

/// Which receipts a redemption counts against: kind, payer, payee,
/// channel (a route's tag, or zero).
type RedeemedKey = (ReceiptKind, Id, Id, [u8; 16]);

/// The ledger's state: a pure function of its genesis and its log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    rules: Rules,
    accounts: BTreeMap<Id, Account>,
    escrows: BTreeMap<Id, Escrow>,
    wallets: BTreeMap<Id, HubWallet>,
    /// Keyed by (worker, hub).
    deposits: BTreeMap<(Id, Id), Deposit>,
    /// The last receipt redeemed, by (kind, payer, payee, channel): its
    /// sequence number and bytes.
    redeemed: BTreeMap<RedeemedKey, (u64, u64)>,
    genesis: Amount,
    minted: Amount,
    /// Time of the last applied transaction (from the log).
    time_ms: u64,
}

impl Ledger {
    /// A ledger at its genesis.
    pub fn new(genesis: &Genesis) -> Result<Ledger, LedgerError> {
        genesis.rules.validate()?;
        if genesis.accounts.len() > GENESIS_ACCOUNTS_MAX {
            return Err(LedgerError::Bounds);
        }
        let mut accounts: BTreeMap<Id, Account> = BTreeMap::new();
        let mut total: Amount = 0;
        for (id, amount) in &genesis.accounts {
            let account = accounts.entry(*id).or_default();
            account.balance = account
                .balance
                .checked_add(*amount)
                .ok_or(LedgerError::Overflow)?;
            total = total.checked_add(*amount).ok_or(LedgerError::Overflow)?;
        }
        Ok(Ledger {
            rules: genesis.rules.clone(),
            accounts,
            escrows: BTreeMap::new(),
            wallets: BTreeMap::new(),
            deposits: BTreeMap::new(),
            redeemed: BTreeMap::new(),
            genesis: total,
            minted: 0,
            time_ms: 0,
        })
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    pub fn account(&self, id: &Id) -> Account {
        self.accounts.get(id).copied().unwrap_or_default()
    }

    pub fn escrow(&self, id: &Id) -> Option<Escrow> {
        self.escrows.get(id).copied()
    }

    pub fn wallet(&self, hub: &Id) -> Option<HubWallet> {
        self.wallets.get(hub).copied()
    }

    pub fn deposit(&self, worker: &Id, hub: &Id) -> Option<Deposit> {
        self.deposits.get(&(*worker, *hub)).copied()
    }

    /// Every deposit workers hold with `hub`.
    pub fn deposits_with(&self, hub: &Id) -> Vec<(Id, Deposit)> {
        self.deposits
            .iter()
            .filter(|((_, h), _)| h == hub)
            .map(|((worker, _), deposit)| (*worker, *deposit))
            .collect()
    }

    /// Every deposit `worker` holds, by hub.
    pub fn deposits_of(&self, worker: &Id) -> Vec<(Id, Deposit)> {
        self.deposits
            .range((*worker, Id([0; 32]))..=(*worker, Id([0xff; 32])))
            .map(|((_, hub), deposit)| (*hub, *deposit))
            .collect()
    }

    /// Escrows `arbiter` may pay out.
    pub fn escrows_of(&self, arbiter: &Id) -> Vec<(Id, Escrow)> {
        self.escrows
            .iter()
            .filter(|(_, e)| &e.arbiter == arbiter)
            .map(|(id, e)| (*id, *e))
            .collect()
    }

    pub fn genesis(&self) -> Amount {
        self.genesis
    }

    pub fn minted(&self) -> Amount {
        self.minted
    }

    pub fn accounts_len(&self) -> usize {
        self.accounts.len()
    }

    /// Time of the last transaction applied, from the log.
    pub fn time_ms(&self) -> u64 {
        self.time_ms
    }

    /// What accounts, escrows, hub wallets and deposits hold together.
    pub fn held(&self) -> u128 {
        self.accounts
            .values()
            .map(|a| u128::from(a.balance))
            .chain(self.escrows.values().map(|e| u128::from(e.amount)))
            .chain(self.wallets.values().map(|w| u128::from(w.balance)))
            .chain(self.deposits.values().map(|d| u128::from(d.amount)))
            .sum()
    }

    /// Whether every coin is accounted for: what is held is exactly
    /// genesis plus minted.
    pub fn check_supply(&self) -> Result<(), SupplyError> {
        let held = self.held();
        let expected = u128::from(self.genesis) + u128::from(self.minted);
        if held == expected {
            Ok(())
        } else {
            Err(SupplyError { held, expected })
        }
    }

    /// Applies a verified transaction at `time_ms`, the log's time (a
    /// time earlier than the last counts as the last). All or nothing.
    pub fn apply(&mut self, tx: &Verified, time_ms: u64) -> Result<Applied, LedgerError> {
        let tx = &tx.0;
        let expected = self.account(&tx.from).sequence + 1;
        if tx.sequence != expected {
            return Err(LedgerError::Sequence {
                expected,
                got: tx.sequence,
            });
        }
        let now = self.time_ms.max(time_ms);
        // Work on an overlay of what changes, then commit it: a refusal
        // half way leaves nothing behind.
        let mut next = Scratch {
            accounts: Overlay::default(),
            escrows: Overlay::default(),
            wallets: Overlay::default(),
            deposits: Overlay::default(),
            redeemed: Overlay::default(),
            minted: self.minted,
            now,
            base: self,
        };
        next.run(tx)?;
        let mut account = next.account(&tx.from);
        account.sequence = tx.sequence;
        next.accounts.set(tx.from, Some(account));
        let touched = next.touched();
        let flows = next.flows();
        let Scratch {
            accounts,
            escrows,
            wallets,
            deposits,
            redeemed,
            minted,
            ..
        } = next;
        accounts.commit(&mut self.accounts);
        escrows.commit(&mut self.escrows);
        wallets.commit(&mut self.wallets);
        deposits.commit(&mut self.deposits);
        redeemed.commit(&mut self.redeemed);
        self.minted = minted;
        self.time_ms = now;
        Ok(Applied {
            from: tx.from,
            sequence: tx.sequence,
            time_ms: now,
            touched,
            flows,
        })
    }
}

/// Changes to one map, kept apart until the transaction succeeds.
#[derive(Debug)]
struct Overlay<K, V> {
    changes: BTreeMap<K, Option<V>>,
}

impl<K, V> Default for Overlay<K, V> {
    fn default() -> Self {
        Overlay {
            changes: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Copy, V: Copy> Overlay<K, V> {
    fn get(&self, base: &BTreeMap<K, V>, key: &K) -> Option<V> {
        match self.changes.get(key) {
            Some(changed) => *changed,
            None => base.get(key).copied(),
        }
    }

    fn set(&mut self, key: K, value: Option<V>) {
        self.changes.insert(key, value);
    }

    fn commit(self, base: &mut BTreeMap<K, V>) {
        for (key, value) in self.changes {
            match value {
                Some(value) => base.insert(key, value),
                None => base.remove(&key),
            };
        }
    }
}

/// What a transaction changes, before it is kept.
struct Scratch<'a> {
    accounts: Overlay<Id, Account>,
    escrows: Overlay<Id, Escrow>,
    wallets: Overlay<Id, HubWallet>,
    deposits: Overlay<(Id, Id), Deposit>,
    redeemed: Overlay<RedeemedKey, (u64, u64)>,
    minted: Amount,
    now: u64,
    base: &'a Ledger,
}

fn nonzero(amount: Amount) -> Result<Amount, LedgerError> {
    if amount == 0 {
        Err(LedgerError::Bounds)
    } else {
        Ok(amount)
    }
}

impl Scratch<'_> {
    fn rules(&self) -> &Rules {
        &self.base.rules
    }

    fn account(&self, id: &Id) -> Account {
        self.accounts
            .get(&self.base.accounts, id)
            .unwrap_or_default()
    }

    fn escrow(&self, id: &Id) -> Result<Escrow, LedgerError> {
        self.escrows
            .get(&self.base.escrows, id)
            .ok_or_else(|| LedgerError::NoEscrow(id.short()))
    }

    fn wallet(&self, hub: &Id) -> Result<HubWallet, LedgerError> {
        self.wallets
            .get(&self.base.wallets, hub)
            .ok_or_else(|| LedgerError::NoWallet(hub.short()))
    }

    fn flows(&self) -> Vec<(Id, i128)> {
        self.accounts
            .changes
            .iter()
            .filter_map(|(id, account)| {
                let after = i128::from(account.map_or(0, |a| a.balance));
                let before = i128::from(self.base.account(id).balance);
                (after != before).then_some((*id, after - before))
            })
            .collect()
    }

    fn touched(&self) -> Vec<Id> {
        let mut ids: Vec<Id> = self
            .accounts
            .changes
            .keys()
            .chain(self.wallets.changes.keys())
            .copied()
            .chain(self.deposits.changes.keys().flat_map(|(w, h)| [*w, *h]))
            .collect();
        // The arbiter of an escrow opened or closed learns of it too.
        for (id, escrow) in &self.escrows.changes {
            if let Some(e) = escrow.or_else(|| self.base.escrow(id)) {
                ids.push(e.owner);
                ids.push(e.arbiter);
            }
        }
        ids.sort();
        ids.dedup();
        ids
    }

    fn debit(&mut self, id: &Id, amount: Amount) -> Result<(), LedgerError> {
        let mut account = self.account(id);
        account.balance = account
            .balance
            .checked_sub(amount)
            .ok_or(LedgerError::Insufficient {
                needed: amount,
                available: account.balance,
            })?;
        self.accounts.set(*id, Some(account));
        Ok(())
    }

    fn credit(&mut self, id: &Id, amount: Amount) -> Result<(), LedgerError> {
        let mut account = self.account(id);
        account.balance = account
            .balance
            .checked_add(amount)
            .ok_or(LedgerError::Overflow)?;
        self.accounts.set(*id, Some(account));
        Ok(())
    }

    /// The spender's wallet, refused if it is not in one of `states`.
    fn wallet_in(
        &self,
        hub: &Id,
        states: &[WalletState],
        needs: &'static str,
    ) -> Result<HubWallet, LedgerError> {
        let wallet = self.wallet(hub)?;
        if wallet.state == WalletState::Punished {
            return Err(LedgerError::Blocked(hub.short()));
        }
        if !states.contains(&wallet.state) {
            return Err(LedgerError::WalletState {
                state: wallet.state,
                needs,
            });
        }
        Ok(wallet)
    }

    fn require_dao(&self, from: &Id) -> Result<(), LedgerError> {
        if *from == self.rules().dao {
            Ok(())
        } else {
            Err(LedgerError::NotDao)
        }
    }

    fn require_time(&self, at_ms: u64) -> Result<(), LedgerError> {
        if self.now >= at_ms {
            Ok(())
        } else {
            Err(LedgerError::TooEarly {
                at_ms,
                now_ms: self.now,
            })
        }
    }

    /// Locks the share of a payout of `amount` in `hub`'s registered
    /// wallet, refused if the wallet's unlocked funds do not cover
    /// `spend` (what leaves the wallet) plus the lock.
    fn lock_payout(
        &self,
        wallet: &mut HubWallet,
        amount: Amount,
        spend: Amount,
    ) -> Result<(), LedgerError> {
        let lock = self.rules().lock_of(amount);
        let needed = spend.checked_add(lock).ok_or(LedgerError::Overflow)?;
        let unlocked = wallet.unlocked();
        if needed > unlocked {
            return Err(LedgerError::Locked { needed, unlocked });
        }
        wallet.locked += lock;
        wallet.balance -= spend;
        Ok(())
    }

    fn run(&mut self, tx: &Transaction) -> Result<(), LedgerError> {
        let from = tx.from;
        match &tx.op {
            Op::Transfer { to, amount } => {
                self.debit(&from, nonzero(*amount)?)?;
                self.credit(to, *amount)
            }
            Op::Mint { to, amount, reason } => {
                if from != self.rules().minter {
                    return Err(LedgerError::NotMinter);
                }
                if reason.len() > REASON_LEN_MAX {
                    return Err(LedgerError::Bounds);
                }
                self.minted = self
                    .minted
                    .checked_add(nonzero(*amount)?)
                    .ok_or(LedgerError::Overflow)?;
                self.credit(to, *amount)
            }
            Op::Hold {
                id,
                amount,
                arbiter,
                expires_ms,
            } => {
                if self.escrow(id).is_ok() {
                    return Err(LedgerError::EscrowExists(id.short()));
                }
                // Only a bonded hub holds buyers' money.
                self.wallet_in(arbiter, &[WalletState::Registered], "registered")?;
                self.debit(&from, nonzero(*amount)?)?;
                self.escrows.set(
                    *id,
                    Some(Escrow {
                        owner: from,
                        arbiter: *arbiter,
                        amount: *amount,
                        expires_ms: *expires_ms,
                    }),
                );
                Ok(())
            }
            Op::Release { id, payouts } => {
                let escrow = self.escrow(id)?;
                if from != escrow.arbiter {
                    return Err(LedgerError::NotArbiter);
                }
                if payouts.len() > PAYOUTS_MAX {
                    return Err(LedgerError::Bounds);
                }
                let mut wallet = self.wallet_in(&from, &[WalletState::Registered], "registered")?;
                let mut paid: Amount = 0;
                let mut to_workers: Amount = 0;
                for (to, amount) in payouts {
                    paid = paid.checked_add(*amount).ok_or(LedgerError::Overflow)?;
                    if *to != from {
                        to_workers += amount;
                    }
                }
                if paid > escrow.amount {
                    return Err(LedgerError::Overpaid {
                        paid,
                        held: escrow.amount,
                    });
                }
                // The fee first, so that it can fund the lock.
                wallet.balance = wallet
                    .balance
                    .checked_add(paid - to_workers)
                    .ok_or(LedgerError::Overflow)?;
                self.lock_payout(&mut wallet, to_workers, 0)?;
                self.wallets.set(from, Some(wallet));
                for (to, amount) in payouts {
                    if *to != from {
                        self.credit(to, *amount)?;
                    }
                }
                self.credit(&escrow.owner, escrow.amount - paid)?;
                self.escrows.set(*id, None);
                Ok(())
            }
            Op::Refund { id } => {
                let escrow = self.escrow(id)?;
                if from == escrow.owner && from != escrow.arbiter {
                    self.require_time(escrow.expires_ms)?;
                } else if from != escrow.arbiter {
                    return Err(LedgerError::NotArbiter);
                }
                self.credit(&escrow.owner, escrow.amount)?;
                self.escrows.set(*id, None);
                Ok(())
            }

            Op::WalletFund { amount } => {
                let wallet = match self.wallet(&from) {
                    Ok(_) => self.wallet_in(
                        &from,
                        &[
                            WalletState::Created,
                            WalletState::Registered,
                            WalletState::Idle,
                        ],
                        "created, registered or idle",
                    )?,
                    Err(_) => HubWallet {
                        state: WalletState::Created,
                        balance: 0,
                        frozen: 0,
                        locked: 0,
                        registered_ms: 0,
                        suspected_ms: 0,
                    },
                };
                self.debit(&from, nonzero(*amount)?)?;
                let balance = wallet
                    .balance
                    .checked_add(*amount)
                    .ok_or(LedgerError::Overflow)?;
                self.wallets
                    .set(from, Some(HubWallet { balance, ..wallet }));
                Ok(())
            }
            Op::WalletRegister => {
                let mut wallet = self.wallet_in(
                    &from,
                    &[WalletState::Created, WalletState::Idle],
                    "created or idle",
                )?;
                let deposit = self.rules().hub_deposit;
                if wallet.balance < deposit {
                    return Err(LedgerError::Insufficient {
                        needed: deposit,
                        available: wallet.balance,
                    });
                }
                wallet.state = WalletState::Registered;
                wallet.frozen = deposit;
                wallet.locked = 0;
                wallet.registered_ms = self.now;
                self.wallets.set(from, Some(wallet));
                Ok(())
            }
            Op::WalletPay { to, amount } => {
                let mut wallet = self.wallet_in(&from, &[WalletState::Registered], "registered")?;
                self.lock_payout(&mut wallet, nonzero(*amount)?, *amount)?;
                self.wallets.set(from, Some(wallet));
                self.credit(to, *amount)
            }
            Op::WalletPayday => {
                let mut wallet = self.wallet_in(&from, &[WalletState::Registered], "registered")?;
                // The original contract had this comparison inverted.
                self.require_time(
                    wallet
                        .registered_ms
                        .saturating_add(self.rules().pay_period_ms),
                )?;
                let fee = self.rules().dao_fee_of(wallet.locked);
                wallet.balance -= fee;
                wallet.locked = 0;
                wallet.frozen = 0;
                wallet.state = WalletState::Idle;
                self.wallets.set(from, Some(wallet));
                let dao = self.rules().dao;
                if fee > 0 {
                    self.credit(&dao, fee)?;
                }
                Ok(())
            }
            Op::WalletWithdraw { amount } => {
                let mut wallet = self.wallet_in(&from, &[WalletState::Idle], "idle")?;
                wallet.balance = wallet.balance.checked_sub(nonzero(*amount)?).ok_or(
                    LedgerError::Insufficient {
                        needed: *amount,
                        available: wallet.balance,
                    },
                )?;
                self.wallets.set(from, Some(wallet));
                self.credit(&from, *amount)
            }

            Op::Suspect { hub } => {
                self.require_dao(&from)?;
                let mut wallet = self.wallet_in(hub, &[WalletState::Registered], "registered")?;
                wallet.state = WalletState::Suspected;
                wallet.suspected_ms = self.now;
                self.wallets.set(*hub, Some(wallet));
                Ok(())
            }
            Op::Rehab { hub } => {
                self.require_dao(&from)?;
                let mut wallet = self.wallet_in(hub, &[WalletState::Suspected], "suspected")?;
                wallet.state = WalletState::Idle;
                wallet.locked = 0;
                wallet.frozen = 0;
                self.wallets.set(*hub, Some(wallet));
                Ok(())
            }
            Op::Ban { hub } => {
                self.require_dao(&from)?;
                let mut wallet = self.wallet_in(hub, &[WalletState::Suspected], "suspected")?;
                self.require_time(wallet.suspected_ms.saturating_add(self.rules().suspect_ms))?;
                let seized = wallet.balance;
                wallet.state = WalletState::Punished;
                wallet.balance = 0;
                wallet.locked = 0;
                wallet.frozen = 0;
                self.wallets.set(*hub, Some(wallet));
                let dao = self.rules().dao;
                if seized > 0 {
                    self.credit(&dao, seized)?;
                }
                Ok(())
            }

            Op::DepositPost { hub, amount } => {
                self.debit(&from, nonzero(*amount)?)?;
                let key = (from, *hub);
                let mut deposit = self
                    .deposits
                    .get(&self.base.deposits, &key)
                    .unwrap_or(Deposit {
                        amount: 0,
                        unbond_ms: None,
                    });
                deposit.amount = deposit
                    .amount
                    .checked_add(*amount)
                    .ok_or(LedgerError::Overflow)?;
                // Bonding more withdraws a request to unbond.
                deposit.unbond_ms = None;
                self.deposits.set(key, Some(deposit));
                Ok(())
            }
            Op::DepositSlash { worker, amount } => {
                self.wallet_in(&from, &[WalletState::Registered], "registered")?;
                let key = (*worker, from);
                let mut deposit = self
                    .deposits
                    .get(&self.base.deposits, &key)
                    .ok_or_else(|| LedgerError::NoDeposit(worker.short()))?;
                let taken = deposit.amount.min(nonzero(*amount)?);
                deposit.amount -= taken;
                self.deposits
                    .set(key, (deposit.amount > 0).then_some(deposit));
                let dao = self.rules().dao;
                if taken > 0 {
                    self.credit(&dao, taken)?;
                }
                Ok(())
            }
            Op::DepositUnbond { hub } => {
                let key = (from, *hub);
                let mut deposit = self
                    .deposits
                    .get(&self.base.deposits, &key)
                    .ok_or_else(|| LedgerError::NoDeposit(from.short()))?;
                if deposit.unbond_ms.is_none() {
                    deposit.unbond_ms = Some(self.now);
                }
                self.deposits.set(key, Some(deposit));
                Ok(())
            }
            Op::Redeem {
                kind,
                receipt: bytes,
            } => {
                let claim = receipt::read(*kind, bytes)?;
                if claim.payee != from {
                    return Err(LedgerError::NotPayee);
                }
                let key = (*kind, claim.payer, claim.payee, claim.channel);
                let (last_seq, last_bytes) = self
                    .redeemed
                    .get(&self.base.redeemed, &key)
                    .unwrap_or((0, 0));
                if claim.seq <= last_seq && last_seq > 0 || claim.bytes < last_bytes {
                    return Err(LedgerError::Redeemed {
                        seq: claim.seq,
                        last: last_seq,
                    });
                }
                let price = match kind {
                    ReceiptKind::Forwarding => self.rules().price_per_gib_forwarded,
                    // Mail held and handed over is paid as serving is.
                    ReceiptKind::Serving | ReceiptKind::Mailbox => {
                        self.rules().price_per_gib_served
                    }
                    ReceiptKind::Exit => claim.price_per_gib.unwrap_or(0),
                };
                let owed = receipt::cost(claim.bytes, price) - receipt::cost(last_bytes, price);
                self.redeemed
                    .set(key, Some((claim.seq.max(1), claim.bytes)));
                if owed > 0 && claim.payer != claim.payee {
                    self.debit(&claim.payer, owed)?;
                    self.credit(&claim.payee, owed)?;
                }
                Ok(())
            }
            Op::DepositReclaim { hub } => {
                let key = (from, *hub);
                let deposit = self
                    .deposits
                    .get(&self.base.deposits, &key)
                    .ok_or_else(|| LedgerError::NoDeposit(from.short()))?;
                let since = deposit.unbond_ms.ok_or(LedgerError::NotUnbonding)?;
                self.require_time(since.saturating_add(self.rules().unbond_ms))?;
                self.deposits.set(key, None);
                self.credit(&from, deposit.amount)
            }
        }
    }
}
