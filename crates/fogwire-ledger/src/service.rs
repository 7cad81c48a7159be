//! The ledger service: one driver task owns the order. Submissions are
//! verified where they arrive (in parallel), then queued; the driver takes
//! everything queued (up to a batch), applies it to its working state at
//! the ledger's time, appends what applied to the log in one durable
//! redb transaction, and only then applies the same entries to the state
//! that readers see and answers the senders. A sender therefore never
//! hears "applied" for a transaction a crash could lose, and a reader
//! never sees one.

use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use fogwire_ledger_proto::{Genesis, Ledger, LedgerError, SignedTransaction, Verified};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::log::{Append, Entry, Log, LogError};
pub(crate) use fogwire_env::unix_ms;

/// Most submissions waiting for the driver; then senders wait.
pub const QUEUE_MAX: usize = 8192;
/// Most transactions appended in one redb transaction.
pub const BATCH_MAX: usize = 2048;
/// Transactions one sender may submit in a burst…
pub const SENDER_BURST: u32 = 1000;
/// …then this many a second. Beyond, a submission is refused (busy) before
/// it is queued: what one account can make the log grow by (there are no
/// fees to price it) and how much of the queue it can hold.
pub const SENDER_PER_SEC: u32 = 200;

/// Where a transaction landed in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub index: u64,
    pub time_ms: u64,
    /// The same transaction had already applied: this is its receipt
    /// from then, and it did not apply twice.
    pub replayed: bool,
}

/// Why a submission did not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    #[error(transparent)]
    Refused(#[from] LedgerError),
    #[error("the ledger could not write its log: {0}")]
    Storage(String),
    #[error("the ledger is stopping")]
    Stopped,
    #[error(
        "this account submits faster than the ledger takes from one sender ({SENDER_BURST} at \
         once, then {SENDER_PER_SEC} a second): wait and send it again"
    )]
    SenderBusy,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("the ledger's genesis is invalid: {0}")]
    Genesis(LedgerError),
    #[error("replaying the log: {0}")]
    Replay(String),
    #[error("the replayed log does not add up: {0}")]
    Supply(#[from] fogwire_ledger_proto::SupplyError),
}

/// Why a logged entry does not replay.
#[derive(Debug, thiserror::Error)]
enum ReplayError {
    #[error("a signature that is not 64 bytes")]
    Signature,
    #[error("undecodable: {0}")]
    Decode(LedgerError),
    #[error("does not apply again: {0}")]
    Apply(LedgerError),
}

/// Where a submission's outcome goes.
type Answer = oneshot::Sender<Result<Receipt, SubmitError>>;

struct Pending {
    tx: Verified,
    signed: SignedTransaction,
    reply: Answer,
}

/// A running ledger.
#[derive(Clone)]
pub struct LedgerService {
    inner: Arc<LedgerState>,
}

impl std::fmt::Debug for LedgerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerService").finish_non_exhaustive()
    }
}

struct LedgerState {
    log: Arc<Log>,
    /// What each account earned and spent, for `account`.
    flows: std::sync::Mutex<crate::flows::Flows>,
    /// What the log holds, applied: what readers see.
    committed: RwLock<Ledger>,
    queue: mpsc::Sender<Pending>,
    /// Submissions per sender (governor, keyed by account).
    senders: governor::DefaultKeyedRateLimiter<fogwire_ledger_proto::Id>,
}

impl LedgerService {
    /// Opens (or creates, with `genesis`) the log at `path`, replays it,
    /// and starts the driver on the current tokio runtime.
    pub fn open(path: &Path, genesis: &Genesis) -> Result<LedgerService, OpenError> {
        let (log, genesis) = Log::open(path, genesis)?;
        let mut ledger = Ledger::new(&genesis).map_err(OpenError::Genesis)?;
        // The log's signatures were checked before it was written.
        let mut flows = crate::flows::Flows::default();
        let count = log
            .replay(|entry| {
                let signed = entry.signed.to_signed().ok_or(ReplayError::Signature)?;
                let tx = fogwire_ledger_proto::Transaction::decode(&signed.body)
                    .map_err(ReplayError::Decode)?;
                let verified = Verified::trusted(tx);
                let applied = ledger
                    .apply(&verified, entry.time_ms)
                    .map_err(ReplayError::Apply)?;
                flows.record(verified.transaction(), &applied);
                Ok::<(), ReplayError>(())
            })
            .map_err(|e| OpenError::Replay(e.to_string()))?;
        ledger.check_supply()?;
        tracing::info!(
            entries = count,
            accounts = ledger.accounts_len(),
            "ledger replayed its log"
        );
        let (queue, inbox) = mpsc::channel(QUEUE_MAX);
        let inner = Arc::new(LedgerState {
            log: Arc::new(log),
            flows: std::sync::Mutex::new(flows),
            committed: RwLock::new(ledger.clone()),
            queue,
            senders: governor::RateLimiter::keyed(
                governor::Quota::per_second(
                    std::num::NonZeroU32::new(SENDER_PER_SEC).unwrap_or(std::num::NonZeroU32::MIN),
                )
                .allow_burst(
                    std::num::NonZeroU32::new(SENDER_BURST).unwrap_or(std::num::NonZeroU32::MIN),
                ),
            ),
        });
        tokio::spawn(drive(Arc::downgrade(&inner), ledger, inbox));
        Ok(LedgerService { inner })
    }

    /// The state as the log holds it.
    pub fn ledger(&self) -> RwLockReadGuard<'_, Ledger> {
        self.inner
            .committed
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What `id` earned and spent, as of the ledger's time `now_ms`.
    pub fn flow(&self, id: &fogwire_ledger_proto::Id, now_ms: u64) -> crate::flows::Flow {
        self.inner
            .flows
            .lock()
            .map(|flows| flows.flow(id, now_ms))
            .unwrap_or_default()
    }

    pub fn log(&self) -> Arc<Log> {
        self.inner.log.clone()
    }

    /// Verifies `signed`, applies it in the log's order and answers once
    /// it is durable. A transaction that already applied (the same bytes
    /// from the same sender with the same sequence) is answered with its
    /// first receipt, marked `replayed`.
    pub async fn submit(&self, signed: SignedTransaction) -> Result<Receipt, SubmitError> {
        let tx = signed.verify()?;
        let (from, sequence) = (tx.transaction().from, tx.transaction().sequence);
        if self.inner.senders.check_key(&from).is_err() {
            return Err(SubmitError::SenderBusy);
        }
        let (reply, answer) = oneshot::channel();
        self.inner
            .queue
            .send(Pending {
                tx,
                signed: signed.clone(),
                reply,
            })
            .await
            .map_err(|_| SubmitError::Stopped)?;
        let result = answer.await.map_err(|_| SubmitError::Stopped)?;
        match result {
            Err(SubmitError::Refused(LedgerError::Sequence { expected, got }))
                if got < expected =>
            {
                let log = self.inner.log.clone();
                let first = tokio::task::spawn_blocking(move || log.by_sender(&from, sequence))
                    .await
                    .map_err(|e| SubmitError::Storage(e.to_string()))?
                    .map_err(|e| SubmitError::Storage(e.to_string()))?;
                match first {
                    Some(Entry {
                        index,
                        time_ms,
                        signed: first,
                    }) if first.body == signed.body => Ok(Receipt {
                        index,
                        time_ms,
                        replayed: true,
                    }),
                    _ => Err(SubmitError::Refused(LedgerError::Sequence {
                        expected,
                        got,
                    })),
                }
            }
            other => other,
        }
    }
}

/// The driver: batches in order, durable before answered.
async fn drive(
    inner: std::sync::Weak<LedgerState>,
    mut working: Ledger,
    mut inbox: mpsc::Receiver<Pending>,
) {
    let mut batch: Vec<Pending> = Vec::with_capacity(BATCH_MAX);
    loop {
        if inbox.recv_many(&mut batch, BATCH_MAX).await == 0 {
            return;
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        // Senders back to a full burst are forgotten: the table holds only
        // those that submitted in the last few seconds.
        inner.senders.retain_recent();
        let now = unix_ms();
        let mut applied: Vec<(Append, Verified, Answer)> = Vec::with_capacity(batch.len());
        // Refusals are answered after the batch is durable too, so that a
        // resubmission refused as a replay finds its first in the log.
        let mut refused = Vec::new();
        for pending in batch.drain(..) {
            match working.apply(&pending.tx, now) {
                Ok(done) => applied.push((
                    Append {
                        time_ms: done.time_ms,
                        signed: pending.signed,
                        sender: done.from,
                        sequence: done.sequence,
                        touched: done.touched,
                    },
                    pending.tx,
                    pending.reply,
                )),
                Err(error) => refused.push((pending.reply, error)),
            }
        }
        if applied.is_empty() {
            for (reply, error) in refused {
                let _ = reply.send(Err(SubmitError::Refused(error)));
            }
            continue;
        }
        let appends: Vec<Append> = applied.iter().map(|(append, ..)| append.clone()).collect();
        let log = inner.log.clone();
        let written = tokio::task::spawn_blocking(move || log.append(&appends))
            .await
            .map_err(|e| e.to_string())
            .and_then(|result| result.map_err(|e| e.to_string()));
        match written {
            Ok(first) => {
                let mut committed = inner
                    .committed
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let mut receipts = Vec::with_capacity(applied.len());
                for (offset, (append, tx, reply)) in applied.into_iter().enumerate() {
                    // The same transactions at the same times: the same
                    // result as on the working state.
                    match committed.apply(&tx, append.time_ms) {
                        Ok(applied) => {
                            if let Ok(mut flows) = inner.flows.lock() {
                                flows.record(tx.transaction(), &applied);
                            }
                        }
                        Err(error) => tracing::error!(
                            %error,
                            "a logged transaction did not apply to the committed state"
                        ),
                    }
                    receipts.push((
                        reply,
                        Receipt {
                            index: first + offset as u64,
                            time_ms: append.time_ms,
                            replayed: false,
                        },
                    ));
                }
                drop(committed);
                for (reply, receipt) in receipts {
                    let _ = reply.send(Ok(receipt));
                }
            }
            Err(error) => {
                tracing::error!(%error, "the ledger could not write its log; the batch is refused");
                working = inner
                    .committed
                    .read()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .clone();
                for (_, _, reply) in applied {
                    let _ = reply.send(Err(SubmitError::Storage(error.clone())));
                }
            }
        }
        for (reply, error) in refused {
            let _ = reply.send(Err(SubmitError::Refused(error)));
        }
    }
}
