//! Transactions: what they do ([`Op`]), who spends ([`Transaction`]), and
//! their signatures ([`SignedTransaction`], [`Verified`]).

use fogwire_identity::{Domain, Keypair, NodeId, Signature};
use serde::{Deserialize, Serialize};

use crate::{Amount, Id, LedgerError, decode_msgpack, encode_msgpack};

/// What a transaction does. The spender is always the transaction's
/// `from`; each variant says who may send it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Moves coins to another account.
    Transfer { to: Id, amount: Amount },
    /// Creates coins (the minting key only): network rewards, by the rule
    /// the log records in `reason`.
    Mint {
        to: Id,
        amount: Amount,
        reason: String,
    },
    /// Locks the spender's coins in escrow `id` for `arbiter` (a
    /// registered hub) to pay out: the funds of a job. The owner may take
    /// them back from `expires_ms` on (the log's time) if the arbiter has
    /// not.
    Hold {
        id: Id,
        amount: Amount,
        arbiter: Id,
        expires_ms: u64,
    },
    /// The arbiter pays out an escrow; what is left goes back to its
    /// owner, and the escrow is closed. A payout to the arbiter itself
    /// (its fee) goes into its hub wallet; payouts to others lock a share
    /// of its wallet like [`Op::WalletPay`].
    Release { id: Id, payouts: Vec<(Id, Amount)> },
    /// Returns an escrow whole to its owner: by the arbiter at any time,
    /// by the owner once it has expired.
    Refund { id: Id },

    /// The spender's hub wallet takes coins from its account (and is
    /// created, in state Created, by the first).
    WalletFund { amount: Amount },
    /// Created or Idle → Registered: freezes the rules' fixed deposit and
    /// starts a pay period.
    WalletRegister,
    /// A registered hub pays a worker from its wallet; a share of the
    /// amount locks until payday.
    WalletPay { to: Id, amount: Amount },
    /// After the pay period: the DAO's fee on the locked funds, the rest
    /// unlocked, → Idle.
    WalletPayday,
    /// From an Idle wallet back to the spender's account.
    WalletWithdraw { amount: Amount },

    /// The DAO key: a Registered hub's wallet locks whole (→ Suspected).
    Suspect { hub: Id },
    /// The DAO key, at any time: a Suspected wallet unlocks (→ Idle).
    Rehab { hub: Id },
    /// The DAO key, once the suspicion has lasted its term: the wallet's
    /// coins go to the DAO, the hub is blocked for good (→ Punished).
    Ban { hub: Id },

    /// A worker bonds coins to a hub: what it loses if it cheats there.
    DepositPost { hub: Id, amount: Amount },
    /// A registered hub takes up to `amount` of a worker's deposit with it
    /// (to the DAO, so a hub gains nothing by slashing).
    DepositSlash { worker: Id, amount: Amount },
    /// A worker asks for its deposit back; it stays slashable for the
    /// rules' unbonding time.
    DepositUnbond { hub: Id },
    /// After unbonding: the deposit returns to the worker's account.
    DepositReclaim { hub: Id },

    /// The payee of a receipt (a relay, a server) redeems it: its payer
    /// pays what it adds to the last one redeemed, at the rules'
    /// published price.
    Redeem {
        kind: crate::receipt::ReceiptKind,
        #[serde(with = "crate::id::bytes_vec")]
        receipt: Vec<u8>,
    },
}

impl Op {
    /// A short name, for logs and history.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Transfer { .. } => "transfer",
            Op::Mint { .. } => "mint",
            Op::Hold { .. } => "hold",
            Op::Release { .. } => "release",
            Op::Refund { .. } => "refund",
            Op::WalletFund { .. } => "wallet_fund",
            Op::WalletRegister => "wallet_register",
            Op::WalletPay { .. } => "wallet_pay",
            Op::WalletPayday => "wallet_payday",
            Op::WalletWithdraw { .. } => "wallet_withdraw",
            Op::Suspect { .. } => "suspect",
            Op::Rehab { .. } => "rehab",
            Op::Ban { .. } => "ban",
            Op::DepositPost { .. } => "deposit_post",
            Op::DepositSlash { .. } => "deposit_slash",
            Op::DepositUnbond { .. } => "deposit_unbond",
            Op::DepositReclaim { .. } => "deposit_reclaim",
            Op::Redeem { .. } => "redeem",
        }
    }
}

/// A transaction before signing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub from: Id,
    /// The spender's next sequence number (its first is 1).
    pub sequence: u64,
    pub op: Op,
}

/// The signing domain of ledger transactions.
pub const TX_DOMAIN: Domain = Domain::new("fogwire/ledger/tx/v1");

impl Transaction {
    /// The bytes signed: the transaction's MessagePack.
    pub fn encode(&self) -> Result<Vec<u8>, LedgerError> {
        encode_msgpack(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Transaction, LedgerError> {
        decode_msgpack(bytes)
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
pub struct Verified(pub(crate) Transaction);

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
        let from = NodeId::from_bytes(&tx.from.0).map_err(|_| LedgerError::BadSignature)?;
        from.verify(TX_DOMAIN, &self.body, &self.signature)
            .map_err(|_| LedgerError::BadSignature)?;
        // A redeemed receipt carries its payer's signature: checked here
        // too, so that applying stays free of cryptography.
        if let Op::Redeem { kind, receipt } = &tx.op {
            crate::receipt::verify(*kind, receipt)?;
        }
        Ok(Verified(tx))
    }
}
