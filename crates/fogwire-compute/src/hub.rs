//! The `hub` service: takes jobs, places their tasks on workers through
//! the scheduler, verifies outcomes by replication, and keeps the
//! accepted outputs as one directory per job in the store.
//!
//! One driver task owns the time: it feeds the scheduler's timeouts,
//! carries out its actions (each call to a worker is its own task, whose
//! answer goes back into the scheduler), finds workers (every node that
//! advertises the `worker` service, asked to `describe` itself each
//! second; three misses in a row and it is gone), and writes changed jobs
//! and reputations to redb, so that a restarted hub resumes.

use fogwire_ledger_proto::format_coins as coins;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use fogwire_compute_proto::pay::{Terms, settle};
use fogwire_compute_proto::scheduler::{self, Job, JobState, ReplicaState, Reputation, TaskState};
use fogwire_compute_proto::{
    Action, Commitment, Digest, JobId, JobSpec, Outcome, Replication, Reveal, Runtime, Scheduler,
    TaskSpec, from_value, to_value,
};
use fogwire_identity::NodeId;
use fogwire_rpc::{BoxFuture, Replier, RpcError, Service};
use fogwire_rpc_proto::{Value, code};
use fogwire_store::object::{DirEntry, EntryType, build_directory};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::resources::Resources;
use crate::worker::INLINE_OUTPUT_MAX;
use crate::{
    Fabric, HUB_METHODS, PayError, Payments, WORKER, arg, decode, digest_of, encode, method,
    store_hash, unix_ms,
};

const JOBS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("jobs");
const REPUTATION: TableDefinition<&[u8], &[u8]> = TableDefinition::new("reputation");
const OUTPUTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("outputs");
const PAYMENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("payments");
/// How often settlements that failed (the ledger unreachable, say) are
/// tried again.
const SETTLE_RETRY: Duration = Duration::from_secs(5);
/// Inline outputs kept between a reveal and the decision.
const INLINE_CACHE_MAX: usize = 2048;
/// How often changed jobs are written.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Misses of `describe` in a row before a worker counts as gone.
const MISSES_MAX: u32 = 3;
/// Time a worker gets to answer `describe`, `reveal` or `cancel`.
const SHORT_CALL: Duration = Duration::from_secs(5);

/// How a hub works.
#[derive(Clone)]
pub struct HubConfig {
    pub db_path: Option<PathBuf>,
    pub scheduler: scheduler::Config,
    /// How often workers are looked for and asked how they are.
    pub discover_every: Duration,
    /// How long a job's program and inputs may take to arrive.
    pub fetch_timeout: Duration,
    /// The ledger, if jobs are paid for; then buyers must hold an escrow
    /// for this hub when `terms` charge.
    pub payments: Option<Arc<dyn Payments>>,
    pub terms: Terms,
}

impl std::fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubConfig")
            .field("db_path", &self.db_path)
            .field("paid", &self.payments.is_some())
            .field("terms", &self.terms)
            .finish_non_exhaustive()
    }
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            db_path: None,
            scheduler: scheduler::Config::default(),
            discover_every: Duration::from_secs(1),
            fetch_timeout: Duration::from_secs(120),
            payments: None,
            terms: Terms::default(),
        }
    }
}

/// How a job is paid for: its escrow, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecord {
    pub escrow: Digest,
    /// What the escrow held when the job was taken.
    pub held: u64,
    /// Once settled: what was paid (or refunded), in words.
    pub settled: Option<String>,
    /// Units paid to workers and to the hub, and returned to the buyer.
    pub paid_workers: u64,
    pub fee: u64,
    pub refunded: u64,
}

/// Why the hub could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    #[error("hub database {path}: {message}")]
    Db { path: PathBuf, message: String },
}

/// A job as `status` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    pub id: JobId,
    pub state: JobState,
    pub runtime: Runtime,
    pub replication: Replication,
    pub tasks: u32,
    pub tasks_done: u32,
    pub submitted_ms: u64,
    pub ended_ms: Option<u64>,
    /// The directory of the accepted tasks' outputs (`task-<index>.out`,
    /// `.err`), once the job ended.
    pub output: Option<Digest>,
    /// Log lines so far (the first `log_dropped` are no longer kept).
    pub log_lines: u64,
    pub log_dropped: u64,
    /// Replicas run, caught dissenting, and gone silent, over all tasks.
    pub replicas_run: u32,
    pub dissents: u32,
    pub silences: u32,
    /// Fuel of the accepted outcomes.
    pub fuel_used: u64,
    /// How the job is paid for, if it is.
    pub payment: Option<PaymentRecord>,
    /// Tasks that ran on fewer workers than asked (adaptive replication;
    /// the job's log says which and why).
    #[serde(default)]
    pub fewer_replicas: u32,
}

/// A job's outcomes as `result` reports them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    pub id: JobId,
    pub state: JobState,
    pub output: Option<Digest>,
    /// Each task's accepted outcome (none if it has none yet).
    pub outcomes: Vec<Option<Outcome>>,
}

/// A worker as `workers` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub id: Digest,
    pub slots: u32,
    pub running: u32,
    pub reputation: Reputation,
    pub resources: Option<Resources>,
}

fn status_of(job: &Job, output: Option<Digest>, payment: Option<PaymentRecord>) -> JobStatus {
    let (done, _) = job.progress();
    let mut replicas_run = 0;
    let mut dissents = 0;
    let mut silences = 0;
    let mut fuel_used = 0;
    for task in &job.tasks {
        replicas_run += task.replicas.len() as u32;
        for replica in &task.replicas {
            match replica.state {
                ReplicaState::Dissented => dissents += 1,
                ReplicaState::Silent => silences += 1,
                _ => {}
            }
        }
        if let TaskState::Accepted { outcome, .. } = &task.state {
            fuel_used += outcome.fuel_used;
        }
    }
    JobStatus {
        id: job.id,
        state: job.state.clone(),
        runtime: job.spec.runtime,
        replication: job.spec.replication,
        tasks: job.tasks.len() as u32,
        tasks_done: done as u32,
        submitted_ms: job.submitted_ms,
        ended_ms: job.ended_ms,
        output,
        log_lines: job.log_dropped + job.log.len() as u64,
        log_dropped: job.log_dropped,
        replicas_run,
        dissents,
        silences,
        fuel_used,
        payment,
        fewer_replicas: job.tasks_on_fewer_replicas(),
    }
}

struct KnownWorker {
    resources: Option<Resources>,
    misses: u32,
}

struct HubState {
    fabric: Arc<dyn Fabric>,
    config: HubConfig,
    scheduler: Mutex<Scheduler>,
    workers: Mutex<HashMap<NodeId, KnownWorker>>,
    outputs: Mutex<HashMap<JobId, Digest>>,
    /// How paid jobs are paid for.
    payments: Mutex<HashMap<JobId, PaymentRecord>>,
    /// Jobs whose settlement is under way, so that it runs once at a time.
    settling: Mutex<std::collections::HashSet<JobId>>,
    /// Inline outputs revealed, by task and digest, until the task's
    /// outcome is decided.
    inline: Mutex<std::collections::BTreeMap<(JobId, u32, Digest), Bytes>>,
    db: Option<Arc<redb::Database>>,
    wake: Notify,
    /// Bumped whenever a job ends, for those waiting on one.
    ended: tokio::sync::watch::Sender<u64>,
    sequence: AtomicU64,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// A hub: serve it as [`crate::HUB`].
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubState>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

type Loaded = (
    Vec<Job>,
    Vec<(Digest, Reputation)>,
    Vec<(JobId, Digest)>,
    Vec<(JobId, PaymentRecord)>,
);

fn load(db: &redb::Database) -> Result<Loaded, String> {
    let write = db.begin_write().map_err(|e| e.to_string())?;
    for table in [JOBS, REPUTATION, OUTPUTS, PAYMENTS] {
        write.open_table(table).map_err(|e| e.to_string())?;
    }
    write.commit().map_err(|e| e.to_string())?;
    let read = db.begin_read().map_err(|e| e.to_string())?;
    type Rows = Vec<(Vec<u8>, Vec<u8>)>;
    let rows = |table: TableDefinition<&[u8], &[u8]>| -> Result<Rows, String> {
        let table = read.open_table(table).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| e.to_string())? {
            let (key, value) = row.map_err(|e| e.to_string())?;
            out.push((key.value().to_vec(), value.value().to_vec()));
        }
        Ok(out)
    };
    let mut jobs = Vec::new();
    for (_, value) in rows(JOBS)? {
        match decode::<Job>(&value) {
            Ok(job) => jobs.push(job),
            Err(error) => tracing::warn!(%error, "unreadable job record skipped"),
        }
    }
    jobs.sort_by_key(|job| job.submitted_ms);
    let mut reputation = Vec::new();
    for (key, value) in rows(REPUTATION)? {
        if let (Ok(key), Ok(record)) = (<[u8; 32]>::try_from(key.as_slice()), decode(&value)) {
            reputation.push((Digest(key), record));
        }
    }
    let mut outputs = Vec::new();
    for (key, value) in rows(OUTPUTS)? {
        if let (Ok(key), Ok(value)) = (
            <[u8; 32]>::try_from(key.as_slice()),
            <[u8; 32]>::try_from(value.as_slice()),
        ) {
            outputs.push((JobId(Digest(key)), Digest(value)));
        }
    }
    let mut payments = Vec::new();
    for (key, value) in rows(PAYMENTS)? {
        match (<[u8; 32]>::try_from(key.as_slice()), decode(&value)) {
            (Ok(key), Ok(record)) => payments.push((JobId(Digest(key)), record)),
            _ => tracing::warn!("unreadable payment record skipped"),
        }
    }
    Ok((jobs, reputation, outputs, payments))
}

impl Hub {
    /// Starts a hub, resuming the jobs a previous run left.
    pub fn start(fabric: Arc<dyn Fabric>, config: HubConfig) -> Result<Hub, HubError> {
        let now = unix_ms();
        let (scheduler, outputs, payments, db) = match &config.db_path {
            Some(path) => {
                let db_error = |message: String| HubError::Db {
                    path: path.clone(),
                    message,
                };
                let db = redb::Database::create(path).map_err(|e| db_error(e.to_string()))?;
                let (jobs, reputation, outputs, payments) = load(&db).map_err(db_error)?;
                let resumed = jobs.iter().filter(|job| !job.state.is_ended()).count();
                if resumed > 0 {
                    tracing::info!(resumed, "hub resuming jobs left running");
                }
                let scheduler = Scheduler::restore(config.scheduler.clone(), jobs, reputation, now);
                (
                    scheduler,
                    outputs.into_iter().collect(),
                    payments.into_iter().collect(),
                    Some(Arc::new(db)),
                )
            }
            None => (
                Scheduler::new(config.scheduler.clone()),
                HashMap::new(),
                HashMap::new(),
                None,
            ),
        };
        let inner = Arc::new(HubState {
            fabric,
            config,
            scheduler: Mutex::new(scheduler),
            workers: Mutex::default(),
            outputs: Mutex::new(outputs),
            payments: Mutex::new(payments),
            settling: Mutex::default(),
            inline: Mutex::default(),
            db,
            wake: Notify::new(),
            ended: tokio::sync::watch::channel(0).0,
            sequence: AtomicU64::new(now),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        inner
            .tasks
            .spawn(drive(Arc::downgrade(&inner), inner.shutdown.clone()));
        inner.tasks.spawn(discover_loop(
            Arc::downgrade(&inner),
            inner.shutdown.clone(),
        ));
        if inner.db.is_some() {
            inner
                .tasks
                .spawn(flush_loop(Arc::downgrade(&inner), inner.shutdown.clone()));
        }
        if inner.config.payments.is_some() {
            // Settles what a previous run left unsettled, then retries
            // settlements that failed.
            inner
                .tasks
                .spawn(settle_loop(Arc::downgrade(&inner), inner.shutdown.clone()));
        }
        Ok(Hub { inner })
    }

    /// Stops the hub, writing what changed.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.inner.tasks.wait()).await;
        flush(&self.inner).await;
    }

    /// Takes a job from `buyer`, paid for by `escrow` if given: checks the
    /// escrow, fetches the program and inputs, then schedules it. A job
    /// refused after its escrow was checked gets the escrow refunded.
    pub async fn submit(
        &self,
        spec: JobSpec,
        buyer: NodeId,
        escrow: Option<Digest>,
    ) -> Result<JobId, (u64, String)> {
        spec.validate()
            .map_err(|e| (code::BAD_ARGS, e.to_string()))?;
        let payment = match self.check_escrow(&spec, buyer, escrow).await {
            Ok(payment) => payment,
            Err(refusal) => {
                // An escrow held for this hub but refused (too little, say)
                // goes back at once rather than at its expiry; one paying
                // for another job stays.
                let in_use = escrow.is_some_and(|escrow| {
                    lock(&self.inner.payments)
                        .values()
                        .any(|record| record.escrow == escrow)
                });
                if let (Some(payments), Some(escrow), false) =
                    (&self.inner.config.payments, escrow, in_use)
                    && let Ok(Some(held)) = payments.escrow(escrow.0).await
                    && held.owner == *buyer.as_bytes()
                {
                    let _ = payments.refund(escrow.0).await;
                }
                return Err(refusal);
            }
        };
        let result = self.take(spec, buyer, payment.clone()).await;
        if result.is_err()
            && let (Some(payments), Some(record)) = (&self.inner.config.payments, payment)
        {
            // Taken, the job would have paid from it; refused, it goes back.
            if let Err(error) = payments.refund(record.escrow.0).await {
                tracing::warn!(%error, "cannot refund the escrow of a refused job");
            }
        }
        result
    }

    /// The escrow `buyer` pays with: refused unless the ledger holds it
    /// for this hub, from this buyer, unused, with at least the job's
    /// minimum price.
    async fn check_escrow(
        &self,
        spec: &JobSpec,
        buyer: NodeId,
        escrow: Option<Digest>,
    ) -> Result<Option<PaymentRecord>, (u64, String)> {
        let inner = &self.inner;
        let terms = inner.config.terms;
        let Some(payments) = &inner.config.payments else {
            return Ok(None);
        };
        let Some(escrow) = escrow else {
            if terms.charges() {
                return Err((
                    code::BAD_ARGS,
                    format!(
                        "this hub charges {} coins per task run and {} per 10⁹ fuel, plus {} %: submit with a maximum price (--max-price)",
                        coins(terms.price_per_task),
                        coins(terms.price_per_gfuel),
                        terms.fee_percent
                    ),
                ));
            }
            return Ok(None);
        };
        if lock(&inner.payments)
            .values()
            .any(|record| record.escrow == escrow)
        {
            return Err((code::BAD_ARGS, "that escrow pays for another job".into()));
        }
        let held = payments
            .escrow(escrow.0)
            .await
            .map_err(|e| (code::FAILED, format!("the ledger: {e}")))?
            .ok_or_else(|| (code::BAD_ARGS, "the ledger has no such escrow".to_owned()))?;
        if held.arbiter != *inner.fabric.node_id().as_bytes() || held.owner != *buyer.as_bytes() {
            return Err((
                code::BAD_ARGS,
                "that escrow is not the buyer's, held for this hub".into(),
            ));
        }
        // Adaptive replication may run a task once: the floor of any job.
        let minimum = terms.minimum(spec.split, 1);
        if held.amount < minimum {
            return Err((
                code::BAD_ARGS,
                format!(
                    "the escrow holds {} coins; this job costs at least {} coins here",
                    coins(held.amount),
                    coins(minimum)
                ),
            ));
        }
        Ok(Some(PaymentRecord {
            escrow,
            held: held.amount,
            settled: None,
            paid_workers: 0,
            fee: 0,
            refunded: 0,
        }))
    }

    async fn take(
        &self,
        spec: JobSpec,
        buyer: NodeId,
        payment: Option<PaymentRecord>,
    ) -> Result<JobId, (u64, String)> {
        let inner = &self.inner;
        let encoded = encode(&spec).map_err(|e| (code::FAILED, e.to_string()))?;
        let sequence = inner.sequence.fetch_add(1, Ordering::Relaxed);
        let id = JobId::derive(
            inner.fabric.node_id().as_bytes(),
            buyer.as_bytes(),
            sequence,
            &encoded,
        );
        let store = inner.fabric.store();
        let mut wanted = vec![spec.program];
        wanted.extend(spec.inputs.iter().copied());
        crate::fetch_missing(
            inner.fabric.as_ref(),
            &wanted,
            &[buyer],
            inner.config.fetch_timeout,
        )
        .await
        .map_err(|why| (code::BAD_ARGS, format!("from the buyer: {why}")))?;
        // Keep the program and inputs while the job may need them.
        {
            let store = store.clone();
            let tags: Vec<(String, Digest)> = wanted
                .iter()
                .enumerate()
                .map(|(n, digest)| (format!("job/{}/{n}", id.0.to_hex()), *digest))
                .collect();
            tokio::task::spawn_blocking(move || {
                for (tag, digest) in tags {
                    store.set_tag(&tag, &store_hash(&digest))?;
                }
                Ok::<_, fogwire_store::StoreError>(())
            })
            .await
            .map_err(|e| (code::FAILED, e.to_string()))?
            .map_err(|e| (code::FAILED, e.to_string()))?;
        }
        if lock(&inner.scheduler).workers().is_empty() {
            discover(inner).await;
        }
        if let Some(record) = payment {
            lock(&inner.payments).insert(id, record.clone());
            save_payment(inner, id, &record)
                .await
                .map_err(|e| (code::FAILED, e))?;
        }
        let submitted = lock(&inner.scheduler).submit(id, spec, buyer, unix_ms());
        if let Err(error) = submitted {
            lock(&inner.payments).remove(&id);
            return Err((code::BAD_ARGS, error.to_string()));
        }
        // The job is on disk before the buyer hears of it.
        flush(inner).await;
        inner.wake.notify_one();
        Ok(id)
    }

    /// Finds a job by its id or the first hex digits of it.
    pub fn resolve(&self, text: &str) -> Result<JobId, (u64, String)> {
        let found = lock(&self.inner.scheduler).find(text);
        match found.as_slice() {
            [id] => Ok(*id),
            [] => Err((code::UNKNOWN, format!("no job {text} at this hub"))),
            _ => Err((
                code::BAD_ARGS,
                format!("{} jobs start with {text}: give more digits", found.len()),
            )),
        }
    }

    pub fn status(&self, id: &JobId) -> Option<JobStatus> {
        let output = lock(&self.inner.outputs).get(id).copied();
        lock(&self.inner.scheduler)
            .job(id)
            .map(|job| status_of(job, output, lock(&self.inner.payments).get(id).cloned()))
    }

    pub fn jobs(&self) -> Vec<JobStatus> {
        let outputs = lock(&self.inner.outputs).clone();
        lock(&self.inner.scheduler)
            .jobs()
            .map(|job| {
                status_of(
                    job,
                    outputs.get(&job.id).copied(),
                    lock(&self.inner.payments).get(&job.id).cloned(),
                )
            })
            .collect()
    }

    pub fn result(&self, id: &JobId) -> Option<JobResult> {
        let output = lock(&self.inner.outputs).get(id).copied();
        lock(&self.inner.scheduler).job(id).map(|job| JobResult {
            id: job.id,
            state: job.state.clone(),
            output,
            outcomes: job
                .tasks
                .iter()
                .map(|task| match &task.state {
                    TaskState::Accepted { outcome, .. } => Some(outcome.clone()),
                    _ => None,
                })
                .collect(),
        })
    }

    /// Log lines from line `from` on (counting from the job's first), and
    /// the number of the next line.
    pub fn logs(&self, id: &JobId, from: u64) -> Option<(Vec<String>, u64)> {
        let scheduler = lock(&self.inner.scheduler);
        let job = scheduler.job(id)?;
        let first = job.log_dropped;
        let skip = from.saturating_sub(first) as usize;
        let lines: Vec<String> = job.log.iter().skip(skip).cloned().collect();
        Some((lines, first + job.log.len() as u64))
    }

    pub fn cancel(&self, id: &JobId) -> bool {
        let cancelled = lock(&self.inner.scheduler).cancel(id, unix_ms());
        self.inner.wake.notify_one();
        cancelled
    }

    pub fn workers(&self) -> Vec<WorkerStatus> {
        let known = lock(&self.inner.workers);
        lock(&self.inner.scheduler)
            .workers()
            .into_iter()
            .map(|(id, slots, running, reputation)| WorkerStatus {
                id: Digest(*id.as_bytes()),
                slots,
                running,
                reputation,
                resources: known.get(&id).and_then(|w| w.resources.clone()),
            })
            .collect()
    }

    /// Waits until job `id` has ended (or `timeout` passed): its status.
    pub async fn wait(&self, id: &JobId, timeout: Duration) -> Option<JobStatus> {
        let mut ended = self.inner.ended.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let status = self.status(id)?;
            if status.state.is_ended()
                && (status.output.is_some() || status.state != JobState::Done)
            {
                return Some(status);
            }
            if tokio::time::timeout_at(deadline, ended.changed())
                .await
                .is_err()
            {
                return Some(status);
            }
        }
    }
}

/// Looks for workers and asks each how it is.
async fn discover(inner: &Arc<HubState>) {
    let found = inner.fabric.locate(WORKER).await;
    let mut asks = tokio::task::JoinSet::new();
    let known: Vec<NodeId> = lock(&inner.workers).keys().copied().collect();
    let mut everyone = found.clone();
    for id in known {
        if !everyone.contains(&id) {
            everyone.push(id);
        }
    }
    for worker in everyone {
        let fabric = inner.fabric.clone();
        let advertised = found.contains(&worker);
        asks.spawn(async move {
            if !advertised {
                return (worker, None);
            }
            let answer = fabric
                .call(worker, WORKER, method::DESCRIBE, Vec::new(), SHORT_CALL)
                .await;
            let resources = answer.ok().and_then(|chunks| {
                let value = chunks.into_iter().next()?.into_iter().next()?;
                from_value::<Resources>(value).ok()
            });
            (worker, resources)
        });
    }
    let now = unix_ms();
    while let Some(Ok((worker, resources))) = asks.join_next().await {
        let mut workers = lock(&inner.workers);
        match resources {
            Some(resources) => {
                let slots = resources.slots;
                workers.insert(
                    worker,
                    KnownWorker {
                        resources: Some(resources),
                        misses: 0,
                    },
                );
                drop(workers);
                lock(&inner.scheduler).worker_up(worker, slots, now);
            }
            None => {
                let entry = workers.entry(worker).or_insert(KnownWorker {
                    resources: None,
                    misses: 0,
                });
                entry.misses += 1;
                if entry.misses >= MISSES_MAX {
                    workers.remove(&worker);
                    drop(workers);
                    tracing::info!(%worker, "worker gone: its tasks go elsewhere");
                    lock(&inner.scheduler).worker_down(worker, now);
                }
            }
        }
    }
    inner.wake.notify_one();
}

async fn discover_loop(inner: Weak<HubState>, shutdown: CancellationToken) {
    loop {
        {
            let Some(inner) = inner.upgrade() else { return };
            discover(&inner).await;
            let every = inner.config.discover_every;
            drop(inner);
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }
}

async fn flush_loop(inner: Weak<HubState>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(FLUSH_EVERY) => {}
            () = shutdown.cancelled() => return,
        }
        let Some(inner) = inner.upgrade() else { return };
        flush(&inner).await;
    }
}

/// Writes changed jobs and reputations in one transaction.
async fn flush(inner: &Arc<HubState>) {
    let Some(db) = inner.db.clone() else {
        return;
    };
    let (jobs, reputation, forgotten) = {
        let mut scheduler = lock(&inner.scheduler);
        let forgotten = scheduler.take_forgotten_jobs();
        let dirty = scheduler.take_dirty_jobs();
        let jobs: Vec<(JobId, Vec<u8>)> = dirty
            .into_iter()
            .filter_map(|id| {
                let job = scheduler.job(&id)?;
                encode(job).ok().map(|bytes| (id, bytes))
            })
            .collect();
        let reputation: Vec<(Digest, Vec<u8>)> = scheduler
            .take_dirty_workers()
            .into_iter()
            .filter_map(|(id, record)| encode(&record).ok().map(|bytes| (id, bytes)))
            .collect();
        (jobs, reputation, forgotten)
    };
    if jobs.is_empty() && reputation.is_empty() && forgotten.is_empty() {
        return;
    }
    // Forgotten jobs let go of their outputs too, and of their payment
    // records once settled (their escrows are closed in the ledger, so
    // none can pay for another job); an unsettled one stays to be settled.
    let mut settled_forgotten = Vec::new();
    {
        let mut outputs = lock(&inner.outputs);
        let mut payments = lock(&inner.payments);
        for id in &forgotten {
            outputs.remove(id);
            if payments.get(id).is_some_and(|p| p.settled.is_some()) {
                payments.remove(id);
                settled_forgotten.push(*id);
            }
        }
    }
    let store = inner.fabric.store();
    let result = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let write = db.begin_write().map_err(|e| e.to_string())?;
        {
            let mut table = write.open_table(JOBS).map_err(|e| e.to_string())?;
            for (id, bytes) in &jobs {
                table
                    .insert(id.0.as_bytes().as_slice(), bytes.as_slice())
                    .map_err(|e| e.to_string())?;
            }
            for id in &forgotten {
                table
                    .remove(id.0.as_bytes().as_slice())
                    .map_err(|e| e.to_string())?;
            }
            let mut table = write.open_table(REPUTATION).map_err(|e| e.to_string())?;
            for (id, bytes) in &reputation {
                table
                    .insert(id.as_bytes().as_slice(), bytes.as_slice())
                    .map_err(|e| e.to_string())?;
            }
            let mut table = write.open_table(OUTPUTS).map_err(|e| e.to_string())?;
            for id in &forgotten {
                table
                    .remove(id.0.as_bytes().as_slice())
                    .map_err(|e| e.to_string())?;
            }
            let mut table = write.open_table(PAYMENTS).map_err(|e| e.to_string())?;
            for id in &settled_forgotten {
                table
                    .remove(id.0.as_bytes().as_slice())
                    .map_err(|e| e.to_string())?;
            }
        }
        write.commit().map_err(|e| e.to_string())?;
        for id in &forgotten {
            let _ = store.remove_tag(&format!("job/{}", id.0.to_hex()));
        }
        Ok(())
    })
    .await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::error!(%error, "cannot write hub jobs"),
        Err(error) => tracing::error!(%error, "hub writer stopped"),
    }
}

/// The driver: time and actions.
async fn drive(weak: Weak<HubState>, shutdown: CancellationToken) {
    // When the scheduler next has a timeout, as of the last pass: events
    // since then only add deadlines later than now, so it needs no fresh
    // scan of every replica on each wake.
    let mut next: Option<u64> = None;
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let actions = {
            let mut scheduler = lock(&inner.scheduler);
            let now = unix_ms();
            if next.is_some_and(|at| at <= now) {
                scheduler.handle_timeout(now);
            }
            let mut actions = Vec::new();
            while let Some(action) = scheduler.poll_action() {
                actions.push(action);
            }
            next = scheduler.poll_timeout();
            actions
        };
        for action in actions {
            carry_out(&inner, action);
        }
        let sleep = next
            .map(|at| Duration::from_millis(at.saturating_sub(unix_ms())))
            .unwrap_or(Duration::from_secs(3600));
        let woken = async { inner.wake.notified().await };
        tokio::select! {
            () = woken => {}
            () = tokio::time::sleep(sleep) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Feeds an answer back and wakes the driver.
fn with_scheduler(inner: &HubState, apply: impl FnOnce(&mut Scheduler, u64)) {
    apply(&mut lock(&inner.scheduler), unix_ms());
    inner.wake.notify_one();
}

/// Why a call to a worker failed, and whether asking again may work
/// (unreachable, busy, stopping) or not (it refused the input).
fn reason(error: &RpcError) -> (String, bool) {
    match error {
        RpcError::Remote { code, message } => (
            message.clone(),
            !matches!(*code, code::BAD_ARGS | code::UNKNOWN),
        ),
        other => (other.to_string(), true),
    }
}

fn carry_out(inner: &Arc<HubState>, action: Action) {
    let inner = inner.clone();
    match action {
        Action::Run { worker, task } => {
            inner.tasks.clone().spawn(async move {
                let timeout = Duration::from_millis(
                    task.limits.wall_time_ms + inner.config.scheduler.commit_grace_ms,
                );
                let answer = run_on(&inner, worker, &task, timeout).await;
                with_scheduler(&inner, |scheduler, now| match answer {
                    Ok(commitment) => {
                        scheduler.committed(worker, task.job, task.index, commitment, now)
                    }
                    Err((why, transient)) => {
                        scheduler.run_failed(worker, task.job, task.index, &why, transient, now)
                    }
                });
            });
        }
        Action::Reveal { worker, job, index } => {
            inner.tasks.clone().spawn(async move {
                let answer = reveal_from(&inner, worker, &job, index).await;
                with_scheduler(&inner, |scheduler, now| match answer {
                    Ok(reveal) => scheduler.revealed(worker, job, index, reveal, now),
                    Err((why, transient)) => {
                        scheduler.run_failed(worker, job, index, &why, transient, now)
                    }
                });
            });
        }
        Action::Cancel { worker, job, index } => {
            inner.tasks.clone().spawn(async move {
                let args = vec![to_value(&job).unwrap_or(Value::Nil), Value::from(index)];
                let _ = inner
                    .fabric
                    .call(worker, WORKER, method::CANCEL_TASK, args, SHORT_CALL)
                    .await;
            });
        }
        Action::Store {
            job,
            index,
            outcome,
            holders,
        } => {
            inner.tasks.clone().spawn(async move {
                let stored = keep_output(&inner, &job, index, &outcome, holders).await;
                with_scheduler(&inner, |scheduler, now| match stored {
                    Ok(()) => scheduler.output_stored(job, index, now),
                    Err(why) => scheduler.output_lost(job, index, &why, now),
                });
            });
        }
        Action::Ended { job } => {
            take_inline(&inner, &job, None);
            inner.tasks.clone().spawn(async move {
                if let Err(error) = finish(&inner, &job).await {
                    tracing::error!(%job, %error, "cannot keep the job's outputs");
                }
                settle_job(&inner, job).await;
                inner.ended.send_modify(|n| *n += 1);
            });
        }
    }
}

async fn run_on(
    inner: &HubState,
    worker: NodeId,
    task: &TaskSpec,
    timeout: Duration,
) -> Result<Commitment, (String, bool)> {
    let args = vec![to_value(task).map_err(|e| (e.to_string(), false))?];
    let chunks = inner
        .fabric
        .call(worker, WORKER, method::RUN, args, timeout)
        .await
        .map_err(|e| reason(&e))?;
    let value = chunks
        .into_iter()
        .next()
        .and_then(|chunk| chunk.into_iter().next())
        .ok_or(("the worker answered no commitment".to_owned(), false))?;
    from_value(value).map_err(|e| (e.to_string(), false))
}

async fn reveal_from(
    inner: &HubState,
    worker: NodeId,
    job: &JobId,
    index: u32,
) -> Result<Reveal, (String, bool)> {
    let args = vec![
        to_value(job).map_err(|e| (e.to_string(), false))?,
        Value::from(index),
    ];
    let chunks = inner
        .fabric
        .call(worker, WORKER, method::REVEAL, args, SHORT_CALL)
        .await
        .map_err(|e| reason(&e))?;
    let mut values = chunks.into_iter().next().unwrap_or_default().into_iter();
    let revealed = values
        .next()
        .ok_or(("the worker revealed nothing".to_owned(), false))?;
    let reveal: Reveal = from_value(revealed).map_err(|e| (e.to_string(), false))?;
    // Inline outputs are kept if they are what the outcome names.
    let mut inline = lock(&inner.inline);
    for (value, digest) in values.zip([reveal.outcome.stdout, reveal.outcome.stderr]) {
        if let Value::Binary(bytes) = value
            && bytes.len() as u64 <= INLINE_OUTPUT_MAX
            && Digest::of(&bytes) == digest
            && inline.len() < INLINE_CACHE_MAX
        {
            inline.insert((*job, index, digest), Bytes::from(bytes));
        }
    }
    Ok(reveal)
}

/// Takes every inline output held for tasks of `job` (`index`: one task).
fn take_inline(inner: &HubState, job: &JobId, index: Option<u32>) -> HashMap<Digest, Bytes> {
    let mut cache = lock(&inner.inline);
    let (from, to) = match index {
        Some(index) => (
            (*job, index, Digest([0; 32])),
            (*job, index, Digest([0xff; 32])),
        ),
        None => (
            (*job, 0, Digest([0; 32])),
            (*job, u32::MAX, Digest([0xff; 32])),
        ),
    };
    let keys: Vec<_> = cache.range(from..=to).map(|(key, _)| *key).collect();
    keys.into_iter()
        .filter_map(|key| cache.remove(&key).map(|bytes| (key.2, bytes)))
        .collect()
}

/// Gets an accepted outcome's outputs into this node's store.
async fn keep_output(
    inner: &HubState,
    job: &JobId,
    index: u32,
    outcome: &Outcome,
    holders: Vec<NodeId>,
) -> Result<(), String> {
    let store = inner.fabric.store();
    let digests = [outcome.stdout, outcome.stderr];
    let inline: Vec<Option<Bytes>> = {
        let mut held = take_inline(inner, job, Some(index));
        digests.iter().map(|d| held.remove(d)).collect()
    };
    let mut batch = Vec::new();
    let mut missing = Vec::new();
    for (digest, bytes) in digests.iter().zip(inline) {
        match bytes {
            Some(bytes) => batch.push(bytes.to_vec()),
            None => missing.push(*digest),
        }
    }
    if !batch.is_empty() {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.import_batch(&batch))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    }
    crate::fetch_missing(
        inner.fabric.as_ref(),
        &missing,
        &holders,
        inner.config.fetch_timeout,
    )
    .await?;
    Ok(())
}

/// A job ended: the outputs of its accepted tasks (every task of a done
/// job; those accepted before a failed or cancelled one ended, so the
/// stderr of a failed program can be read) become one directory, kept
/// under a tag; its program and inputs are let go.
async fn finish(inner: &Arc<HubState>, id: &JobId) -> Result<(), String> {
    let (outcomes, inputs) = {
        let scheduler = lock(&inner.scheduler);
        let Some(job) = scheduler.job(id) else {
            return Ok(());
        };
        let outcomes: Vec<(u32, Outcome)> = job
            .tasks
            .iter()
            .filter_map(|task| match &task.state {
                TaskState::Accepted {
                    outcome,
                    stored: true,
                    ..
                } => Some((task.index, outcome.clone())),
                _ => None,
            })
            .collect();
        (outcomes, 1 + job.spec.inputs.len())
    };
    let store = inner.fabric.store();
    let tag = format!("job/{}", id.0.to_hex());
    let root = tokio::task::spawn_blocking(move || -> Result<Option<Digest>, String> {
        for n in 0..inputs {
            let _ = store.remove_tag(&format!("{tag}/{n}"));
        }
        if outcomes.is_empty() {
            return Ok(None);
        }
        let mut entries = Vec::new();
        for (index, outcome) in &outcomes {
            for (suffix, digest) in [("out", outcome.stdout), ("err", outcome.stderr)] {
                let hash = store_hash(&digest);
                let size = store
                    .entry(&hash)
                    .map_err(|e| e.to_string())?
                    .map(|entry| entry.size)
                    .ok_or_else(|| format!("output {} is not in the store", digest.to_hex()))?;
                entries.push(DirEntry {
                    name: format!("task-{index:05}.{suffix}"),
                    kind: EntryType::File,
                    executable: false,
                    size,
                    hash,
                });
            }
        }
        let nodes = build_directory(entries).map_err(|e| e.to_string())?;
        let hashes = store.import_batch(&nodes).map_err(|e| e.to_string())?;
        let root = *hashes.last().ok_or("an empty directory")?;
        store.set_tag(&tag, &root).map_err(|e| e.to_string())?;
        Ok(Some(digest_of(&root)))
    })
    .await
    .map_err(|e| e.to_string())??;
    if let Some(root) = root {
        lock(&inner.outputs).insert(*id, root);
        if let Some(db) = inner.db.clone() {
            let id = *id;
            tokio::task::spawn_blocking(move || -> Result<(), String> {
                let write = db.begin_write().map_err(|e| e.to_string())?;
                write
                    .open_table(OUTPUTS)
                    .map_err(|e| e.to_string())?
                    .insert(id.0.as_bytes().as_slice(), root.as_bytes().as_slice())
                    .map_err(|e| e.to_string())?;
                write.commit().map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| e.to_string())??;
        }
    }
    Ok(())
}

/// Writes a job's payment record.
async fn save_payment(
    inner: &Arc<HubState>,
    id: JobId,
    record: &PaymentRecord,
) -> Result<(), String> {
    let Some(db) = inner.db.clone() else {
        return Ok(());
    };
    let bytes = encode(record).map_err(|e| e.to_string())?;
    tokio::task::spawn_blocking(move || -> Result<(), String> {
        let write = db.begin_write().map_err(|e| e.to_string())?;
        write
            .open_table(PAYMENTS)
            .map_err(|e| e.to_string())?
            .insert(id.0.as_bytes().as_slice(), bytes.as_slice())
            .map_err(|e| e.to_string())?;
        write.commit().map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Pays for an ended job from its escrow: the workers in each accepted
/// majority and the hub's fee (what is left returns to the buyer), or a
/// refund if it did not finish; dissenters lose the terms' slash of their
/// deposit. Recorded once done; a failure is retried later, and a
/// release the ledger already has (a restart in between) counts as done.
async fn settle_job(inner: &Arc<HubState>, id: JobId) {
    let Some(payments) = inner.config.payments.clone() else {
        return;
    };
    let Some(record) = lock(&inner.payments).get(&id).cloned() else {
        return;
    };
    if record.settled.is_some() || !lock(&inner.settling).insert(id) {
        return;
    }
    let settlement = {
        let scheduler = lock(&inner.scheduler);
        scheduler
            .job(&id)
            .filter(|job| job.state.is_ended())
            .map(|job| {
                settle(
                    job,
                    record.held,
                    &inner.config.terms,
                    *inner.fabric.node_id().as_bytes(),
                )
            })
    };
    let Some(settlement) = settlement else {
        lock(&inner.settling).remove(&id);
        return;
    };
    let paid = if settlement.payouts.is_empty() {
        payments.refund(record.escrow.0).await
    } else {
        payments
            .release(record.escrow.0, settlement.payouts.clone())
            .await
    };
    // Whether the escrow went back whole instead of paying out.
    let mut refunded_all = settlement.payouts.is_empty();
    let text = match paid {
        Ok(()) | Err(PayError::Closed) if settlement.payouts.is_empty() => format!(
            "payment: the escrow's {} coins returned to the buyer",
            coins(settlement.refund)
        ),
        Ok(()) | Err(PayError::Closed) => format!(
            "payment: {} coins to {} worker(s), {} to the hub, {} back to the buyer{}",
            coins(settlement.workers_total),
            settlement.payouts.len() - usize::from(settlement.fee > 0),
            coins(settlement.fee),
            coins(settlement.refund),
            if settlement.scaled {
                " (scaled down to the escrow)"
            } else {
                ""
            }
        ),
        // Refused for good (the hub's wallet cannot lock its share of the
        // payout, say): the buyer gets the escrow back rather than wait on
        // retries that cannot succeed.
        Err(PayError::Refused(why)) => match payments.refund(record.escrow.0).await {
            Ok(()) | Err(PayError::Closed) => {
                refunded_all = true;
                tracing::warn!(job = %id, %why, "the ledger refused the job's payout; the escrow went back to the buyer");
                format!(
                    "payment: the ledger refused the payout ({why}); the escrow's {} coins went back to the buyer",
                    coins(record.held)
                )
            }
            Err(error) => {
                payment_waits(inner, id, &error.to_string());
                return;
            }
        },
        Err(PayError::Unreachable(error)) => {
            payment_waits(inner, id, &error);
            return;
        }
    };
    let mut lines = vec![text.clone()];
    for worker in &settlement.slash {
        // As the scheduler's lines name workers: the first 8 hex digits.
        let name = NodeId::from_bytes(worker)
            .map(|node| node.short())
            .unwrap_or_else(|_| fogwire_identity::short_form(&Digest(*worker).to_hex()));
        match payments.slash(*worker, inner.config.terms.slash).await {
            Ok(()) => lines.push(format!(
                "payment: {name} caught dissenting: up to {} coins of its deposit slashed to the DAO",
                coins(inner.config.terms.slash)
            )),
            Err(error) => lines.push(format!(
                "payment: {name} caught dissenting, but nothing slashed: {error}"
            )),
        }
    }
    let record = if refunded_all {
        PaymentRecord {
            settled: Some(text),
            paid_workers: 0,
            fee: 0,
            refunded: record.held,
            ..record
        }
    } else {
        PaymentRecord {
            settled: Some(text),
            paid_workers: settlement.workers_total,
            fee: settlement.fee,
            refunded: settlement.refund,
            ..record
        }
    };
    // The log first: whoever sees the job settled finds why in its log.
    {
        let mut scheduler = lock(&inner.scheduler);
        for line in lines {
            tracing::info!(job = %id, "{line}");
            scheduler.note(id, line);
        }
    }
    lock(&inner.payments).insert(id, record.clone());
    if let Err(error) = save_payment(inner, id, &record).await {
        tracing::error!(job = %id, %error, "cannot record the job's payment");
    }
    lock(&inner.settling).remove(&id);
}

/// A settlement could not reach the ledger: it is tried again later. The
/// job's log says so once (not at every retry), so `job logs` tells why
/// its payment is pending.
fn payment_waits(inner: &HubState, id: JobId, error: &str) {
    tracing::warn!(job = %id, %error, "cannot settle the job's payment yet; will try again");
    let mut scheduler = lock(&inner.scheduler);
    let said = scheduler
        .job(&id)
        .is_some_and(|job| job.log.iter().any(|line| line.starts_with(PAYMENT_WAITS)));
    if !said {
        scheduler.note(
            id,
            format!(
                "{PAYMENT_WAITS} ({error}); trying again every {} s",
                SETTLE_RETRY.as_secs()
            ),
        );
    }
    drop(scheduler);
    lock(&inner.settling).remove(&id);
}

/// How the job log's line about a pending payment begins.
const PAYMENT_WAITS: &str = "payment: waiting for the ledger";

/// Settles ended jobs left unsettled (by a restart, or a ledger that was
/// not reachable), now and then.
async fn settle_loop(weak: Weak<HubState>, shutdown: CancellationToken) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let unsettled: Vec<JobId> = {
            let scheduler = lock(&inner.scheduler);
            lock(&inner.payments)
                .iter()
                .filter(|(id, record)| {
                    record.settled.is_none()
                        && scheduler.job(id).is_some_and(|job| job.state.is_ended())
                })
                .map(|(id, _)| *id)
                .collect()
        };
        for id in unsettled {
            settle_job(&inner, id).await;
        }
        drop(inner);
        tokio::select! {
            () = tokio::time::sleep(SETTLE_RETRY) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

impl Service for Hub {
    fn methods(&self) -> &[&'static str] {
        HUB_METHODS
    }

    fn call(&self, method: u64, args: Vec<Value>, mut reply: Replier) -> BoxFuture<()> {
        let hub = self.clone();
        Box::pin(async move {
            let result = hub.answer(method, args, reply.peer()).await;
            match result {
                Ok(values) => {
                    reply.chunk(values).await;
                    reply.choke().await;
                }
                Err((code, message)) => reply.error(code, &message).await,
            }
        })
    }
}

impl Hub {
    /// A job named by its first argument: a full id, or hex digits of one.
    fn job_arg(&self, args: &[Value]) -> Result<JobId, (u64, String)> {
        match args.first() {
            Some(Value::String(text)) => self.resolve(text.as_str().unwrap_or_default()),
            Some(Value::Binary(_)) => {
                arg::<JobId>(args, 0, "the job id").map_err(|e| (code::BAD_ARGS, e))
            }
            _ => Err((
                code::BAD_ARGS,
                "the first argument is the job: its id, or hex digits of it".to_owned(),
            )),
        }
    }

    async fn answer(
        &self,
        method: u64,
        args: Vec<Value>,
        caller: NodeId,
    ) -> Result<Vec<Value>, (u64, String)> {
        let encode = |value: Result<Value, fogwire_compute_proto::DecodeError>| {
            value
                .map(|v| vec![v])
                .map_err(|e| (code::FAILED, e.to_string()))
        };
        let unknown = |id: &JobId| (code::UNKNOWN, format!("no job {id} at this hub"));
        match method {
            method::SUBMIT => {
                let spec: JobSpec = arg(&args, 0, "the job").map_err(|e| (code::BAD_ARGS, e))?;
                let escrow: Option<Digest> = match args.get(1) {
                    None | Some(Value::Nil) => None,
                    Some(_) => Some(
                        arg(&args, 1, "the escrow paying for it")
                            .map_err(|e| (code::BAD_ARGS, e))?,
                    ),
                };
                let id = self.submit(spec, caller, escrow).await?;
                encode(to_value(&id))
            }
            method::STATUS => {
                let id = self.job_arg(&args)?;
                encode(to_value(&self.status(&id).ok_or_else(|| unknown(&id))?))
            }
            method::LOGS => {
                let id = self.job_arg(&args)?;
                let from = args.get(1).and_then(Value::as_u64).unwrap_or(0);
                let (lines, next) = self.logs(&id, from).ok_or_else(|| unknown(&id))?;
                Ok(vec![
                    Value::Array(lines.into_iter().map(Value::from).collect()),
                    Value::from(next),
                ])
            }
            method::RESULT => {
                let id = self.job_arg(&args)?;
                encode(to_value(&self.result(&id).ok_or_else(|| unknown(&id))?))
            }
            method::CANCEL => {
                let id = self.job_arg(&args)?;
                Ok(vec![Value::from(self.cancel(&id))])
            }
            method::WORKERS => encode(to_value(&self.workers())),
            _ => encode(to_value(&self.jobs())),
        }
    }
}
