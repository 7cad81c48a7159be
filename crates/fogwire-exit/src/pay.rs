//! A charging exit: who may use it, and the receipts that pay for it.
//!
//! An exit with a price checks, before a client's first stream or UDP
//! association, that the client's account could pay for [`CREDIT`] bytes
//! (a balance read through [`Funds`], remembered for [`BALANCE_FRESH`]).
//! Then it carries at most [`CREDIT`] bytes beyond what the client's
//! receipts cover: past it, the client's streams wait for a receipt (up
//! to [`RECEIPT_WAIT`]) and new ones are refused. Receipts arrive as
//! route datagrams to [`PAY_PORT`], signed by the client, at a price no
//! lower than the exit's; the latest of each client waits for the node
//! to redeem it in the ledger ([`crate::Exit::take_receipts`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use fogwire_identity::NodeId;
use fogwire_ledger::proto::receipt::{self, ReceiptKind};
use fogwire_route::services::BoxFuture;
use tokio::sync::Notify;

/// The exit's receipts port: client → exit.
pub const PAY_PORT: u16 = 1082;
/// Bytes a client may be carried beyond its receipts.
pub const CREDIT: u64 = 64 * 1024 * 1024;
/// How long a stream over its credit waits for a receipt before it ends.
pub const RECEIPT_WAIT: Duration = Duration::from_secs(20);
/// How long a balance read from the ledger is trusted.
pub const BALANCE_FRESH: Duration = Duration::from_secs(30);
/// Clients whose accounts the exit keeps; beyond, the one with the
/// least owed is forgotten.
const ACCOUNTS_MAX: usize = 4096;

/// Reads an account's balance, for a charging exit (the node's ledger).
pub trait Funds: Send + Sync + 'static {
    fn balance(&self, account: NodeId) -> BoxFuture<Result<u64, String>>;
}

/// What the exit knows of one client.
#[derive(Default)]
struct Account {
    /// Bytes carried beyond what receipts covered.
    owed: u64,
    /// The bytes of the client's last receipt taken.
    receipted: Option<u64>,
    /// The balance last read, and when.
    balance: Option<(u64, Instant)>,
    /// The client's latest receipt, waiting to be redeemed.
    receipt: Option<Vec<u8>>,
}

/// Counters of a charging exit.
#[derive(Debug, Default)]
pub(crate) struct PayCounters {
    pub(crate) receipts: AtomicU64,
    pub(crate) receipts_refused: AtomicU64,
    pub(crate) refused_unpaid: AtomicU64,
}

pub(crate) struct Payments {
    me: OnceLock<NodeId>,
    pub(crate) price_per_gib: u64,
    funds: OnceLock<Arc<dyn Funds>>,
    accounts: Mutex<HashMap<NodeId, Account>>,
    /// Woken when a receipt arrives.
    receipted: Notify,
    pub(crate) counters: PayCounters,
}

impl Payments {
    pub(crate) fn new(price_per_gib: u64) -> Self {
        Self {
            me: OnceLock::new(),
            price_per_gib,
            funds: OnceLock::new(),
            accounts: Mutex::new(HashMap::new()),
            receipted: Notify::new(),
            counters: PayCounters::default(),
        }
    }

    pub(crate) fn charging(&self) -> bool {
        self.price_per_gib > 0
    }

    pub(crate) fn attach(&self, me: NodeId, funds: Option<Arc<dyn Funds>>) {
        let _ = self.me.set(me);
        if let Some(funds) = funds {
            let _ = self.funds.set(funds);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Account>> {
        self.accounts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn account(accounts: &mut HashMap<NodeId, Account>, client: NodeId) -> &mut Account {
        if !accounts.contains_key(&client) && accounts.len() >= ACCOUNTS_MAX {
            let least = accounts
                .iter()
                .min_by_key(|(_, account)| account.owed)
                .map(|(id, _)| *id);
            if let Some(least) = least {
                accounts.remove(&least);
            }
        }
        accounts.entry(client).or_default()
    }

    /// Whether `client` may open a stream or an association now; if not,
    /// why, in words for the client and the log.
    pub(crate) async fn admit(&self, client: NodeId) -> Result<(), String> {
        if !self.charging() {
            return Ok(());
        }
        let price = fogwire_ledger::format_coins(self.price_per_gib);
        let need = receipt::cost(CREDIT, self.price_per_gib).max(1);
        let known = {
            let mut accounts = self.lock();
            let account = Self::account(&mut accounts, client);
            if account.owed > CREDIT {
                return Err(format!(
                    "this exit charges {price} per GiB and has carried {} MiB for you without a receipt",
                    account.owed >> 20
                ));
            }
            account
                .balance
                .filter(|(_, at)| at.elapsed() < BALANCE_FRESH)
                .map(|(balance, _)| balance)
        };
        let balance = match known {
            Some(balance) => balance,
            None => {
                let Some(funds) = self.funds.get() else {
                    return Err(format!(
                        "this exit charges {price} per GiB but cannot reach a ledger to check your account"
                    ));
                };
                let balance = funds.balance(client).await.map_err(|why| {
                    format!("this exit charges {price} per GiB and cannot read your account: {why}")
                })?;
                let mut accounts = self.lock();
                Self::account(&mut accounts, client).balance = Some((balance, Instant::now()));
                balance
            }
        };
        if balance < need {
            self.counters.refused_unpaid.fetch_add(1, Ordering::Relaxed);
            return Err(format!(
                "this exit charges {price} per GiB and your account holds {}: it takes at least {} to start",
                fogwire_ledger::format_coins(balance),
                fogwire_ledger::format_coins(need)
            ));
        }
        Ok(())
    }

    /// Counts `bytes` carried for `client`, without waiting (UDP).
    pub(crate) fn count(&self, client: NodeId, bytes: u64) {
        if self.charging() {
            let mut accounts = self.lock();
            let account = Self::account(&mut accounts, client);
            account.owed = account.owed.saturating_add(bytes);
        }
    }

    /// Counts `bytes` carried for `client` if it is within its credit
    /// (a packet); false, and nothing counted, if it is over.
    pub(crate) fn carry(&self, client: NodeId, bytes: u64) -> bool {
        if !self.charging() {
            return true;
        }
        let mut accounts = self.lock();
        let account = Self::account(&mut accounts, client);
        if account.owed > CREDIT {
            return false;
        }
        account.owed = account.owed.saturating_add(bytes);
        true
    }

    /// Counts `bytes` carried for `client`; waits while it is over its
    /// credit, and fails if no receipt comes in time.
    pub(crate) async fn carried(&self, client: NodeId, bytes: u64) -> Result<(), ()> {
        if !self.charging() {
            return Ok(());
        }
        let deadline = Instant::now() + RECEIPT_WAIT;
        {
            let mut accounts = self.lock();
            let account = Self::account(&mut accounts, client);
            account.owed = account.owed.saturating_add(bytes);
        }
        loop {
            let woken = self.receipted.notified();
            if self.lock().get(&client).is_none_or(|a| a.owed <= CREDIT) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, woken).await.is_err() {
                return Err(());
            }
        }
    }

    /// Takes a receipt a client sent.
    pub(crate) fn receipt(&self, from: NodeId, bytes: &[u8]) {
        let refused = || {
            self.counters
                .receipts_refused
                .fetch_add(1, Ordering::Relaxed);
        };
        let Ok(claim) = receipt::verify(ReceiptKind::Exit, bytes) else {
            return refused();
        };
        let me = self.me.get().map(|me| *me.as_bytes());
        if Some(claim.payee.0) != me
            || claim.payer.0 != *from.as_bytes()
            || claim.price_per_gib.unwrap_or(0) < self.price_per_gib
        {
            return refused();
        }
        {
            let mut accounts = self.lock();
            let account = Self::account(&mut accounts, from);
            // Receipts count from the client's start; the exit credits what
            // each adds to the last it took (the first one it takes covers
            // what it carried since it started).
            let added = match account.receipted {
                Some(last) if claim.bytes <= last => return,
                Some(last) => claim.bytes - last,
                None => claim.bytes,
            };
            account.receipted = Some(claim.bytes);
            account.owed = account.owed.saturating_sub(added);
            account.receipt = Some(bytes.to_vec());
        }
        self.counters.receipts.fetch_add(1, Ordering::Relaxed);
        self.receipted.notify_waiters();
    }

    /// The latest receipt of each client since the last call.
    pub(crate) fn take_receipts(&self) -> Vec<Vec<u8>> {
        self.lock()
            .values_mut()
            .filter_map(|account| account.receipt.take())
            .collect()
    }
}
