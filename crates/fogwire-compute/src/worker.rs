//! The `worker` service: runs a hub's tasks in the sandbox.
//!
//! `run(task)` fetches the task's program and inputs (from the hub that
//! asks, or any neighbour that has them), runs it, stores stdout and
//! stderr as blobs, and answers one chunk, `[commitment]`. `reveal(job,
//! index)` answers `[reveal, stdout?, stderr?]` (outputs up to 24 KiB come
//! inline). A repeated `run` of a finished task answers the same
//! commitment at once, so a hub that restarted simply asks again. What the
//! worker did is kept in redb, so that after a restart `tasks` reports it
//! (tasks cut off by the restart as interrupted) and finished ones can
//! still be revealed.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use fogwire_compute_proto::{
    Commitment, Digest, ExitStatus, JobId, Limits, Outcome, Reveal, Runtime, TaskSpec, to_value,
};
use fogwire_rpc::{BoxFuture, Replier, Service};
use fogwire_rpc_proto::{Value, code};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::resources::{self, Resources};
use crate::runtime::Runtimes;
use crate::{Fabric, WORKER_METHODS, arg, decode, digest_of, encode, method, store_hash, task_key};

const TASKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tasks");
/// Outputs up to this size travel inline in the reveal.
pub const INLINE_OUTPUT_MAX: u64 = 24 * 1024;
/// Task records kept (finished ones beyond it are forgotten, oldest first).
const RECORDS_MAX: usize = 10_000;
/// How long a task's program and inputs may take to arrive.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// How often changed records are written.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// How a worker works.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Tasks run at once (more are answered busy).
    pub slots: u32,
    /// The most a task may ask for.
    pub limits_max: Limits,
    /// Whether containers may have the network, if their job asks.
    pub network_allowed: bool,
    /// Bytes of input (stdin) a task may have.
    pub input_bytes_max: u64,
    /// Where records are kept (none: in memory only).
    pub db_path: Option<PathBuf>,
    /// For the demo only: report a wrong stdout, to show a cheat caught.
    pub cheat: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            slots: resources::cores(),
            limits_max: Limits {
                fuel: 1_000_000_000_000,
                memory_bytes: 4 * 1024 * 1024 * 1024,
                wall_time_ms: 3600 * 1000,
                output_bytes: 256 * 1024 * 1024,
                millicpus: resources::cores() * 1000,
            },
            network_allowed: false,
            input_bytes_max: 512 * 1024 * 1024,
            db_path: None,
            cheat: false,
        }
    }
}

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    #[error("worker records {path}: {message}")]
    Db { path: PathBuf, message: String },
}

/// What a worker did with a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskRecordState {
    Running,
    /// The worker stopped while it ran.
    Interrupted,
    Done {
        commitment: Commitment,
        reveal: Reveal,
        wall_time_ms: u64,
    },
    Failed(String),
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub job: JobId,
    pub index: u32,
    pub hub: Digest,
    pub started_ms: u64,
    pub state: TaskRecordState,
}

#[derive(Default)]
struct Records {
    map: HashMap<[u8; 36], TaskRecord>,
    order: VecDeque<[u8; 36]>,
    running: HashMap<[u8; 36], (Arc<Notify>, CancellationToken)>,
    dirty: Vec<[u8; 36]>,
    forgotten: Vec<[u8; 36]>,
}

impl Records {
    fn put(&mut self, key: [u8; 36], record: TaskRecord) {
        if self.map.insert(key, record).is_none() {
            self.order.push_back(key);
        }
        self.dirty.push(key);
        while self.map.len() > RECORDS_MAX {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if self.running.contains_key(&oldest) {
                self.order.push_back(oldest);
                break;
            }
            self.map.remove(&oldest);
            self.forgotten.push(oldest);
        }
    }
}

struct WorkerState {
    fabric: Arc<dyn Fabric>,
    runtimes: Runtimes,
    config: WorkerConfig,
    slots: Arc<Semaphore>,
    records: Mutex<Records>,
    db: Option<Arc<redb::Database>>,
    shutdown: CancellationToken,
}

/// A worker: serve it as [`crate::WORKER`].
#[derive(Clone)]
pub struct Worker {
    inner: Arc<WorkerState>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("slots", &self.inner.config.slots)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Worker {
    /// Starts a worker; reads back what it did before a restart.
    pub fn start(
        fabric: Arc<dyn Fabric>,
        runtimes: Runtimes,
        config: WorkerConfig,
    ) -> Result<Worker, WorkerError> {
        let mut records = Records::default();
        let db = match &config.db_path {
            Some(path) => {
                let db_error = |message: String| WorkerError::Db {
                    path: path.clone(),
                    message,
                };
                let db = redb::Database::create(path).map_err(|e| db_error(e.to_string()))?;
                let mut loaded = load(&db).map_err(db_error)?;
                loaded.sort_by_key(|(_, record)| record.started_ms);
                for (key, mut record) in loaded {
                    if record.state == TaskRecordState::Running {
                        record.state = TaskRecordState::Interrupted;
                        records.dirty.push(key);
                    }
                    records.map.insert(key, record);
                    records.order.push_back(key);
                }
                Some(Arc::new(db))
            }
            None => None,
        };
        let inner = Arc::new(WorkerState {
            fabric,
            runtimes,
            slots: Arc::new(Semaphore::new(config.slots.max(1) as usize)),
            config,
            records: Mutex::new(records),
            db,
            shutdown: CancellationToken::new(),
        });
        if inner.db.is_some() {
            tokio::spawn(flush_loop(Arc::downgrade(&inner), inner.shutdown.clone()));
        }
        Ok(Worker { inner })
    }

    /// What this worker has now.
    pub fn resources(&self) -> Resources {
        let (memory_bytes, memory_available_bytes) = resources::memory();
        let store = self.inner.fabric.store();
        Resources {
            cores: resources::cores(),
            memory_bytes,
            memory_available_bytes,
            disk_free_bytes: resources::disk_free(store.root()),
            gpus: resources::gpus(),
            slots: self.inner.config.slots,
            runtimes: self.inner.runtimes.offered(),
            network_allowed: self.inner.config.network_allowed,
            limits_max: self.inner.config.limits_max,
        }
    }

    /// How many task records it keeps: the tasks it ran, within its
    /// records' bound.
    pub fn task_count(&self) -> usize {
        lock(&self.inner.records).map.len()
    }

    /// Every task record, oldest first.
    pub fn tasks(&self) -> Vec<TaskRecord> {
        let records = lock(&self.inner.records);
        records
            .order
            .iter()
            .filter_map(|key| records.map.get(key).cloned())
            .collect()
    }

    /// Writes what changed and stops.
    pub async fn shutdown(&self) {
        // Running tasks end with "the worker is stopping", which tells the
        // hub it may ask again.
        self.inner.shutdown.cancel();
        flush(&self.inner).await;
    }
}

fn load(db: &redb::Database) -> Result<Vec<([u8; 36], TaskRecord)>, String> {
    let write = db.begin_write().map_err(|e| e.to_string())?;
    write.open_table(TASKS).map_err(|e| e.to_string())?;
    write.commit().map_err(|e| e.to_string())?;
    let read = db.begin_read().map_err(|e| e.to_string())?;
    let table = read.open_table(TASKS).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for row in table.iter().map_err(|e| e.to_string())? {
        let (key, value) = row.map_err(|e| e.to_string())?;
        let Ok(key) = <[u8; 36]>::try_from(key.value()) else {
            continue;
        };
        match decode::<TaskRecord>(value.value()) {
            Ok(record) => out.push((key, record)),
            Err(error) => tracing::warn!(%error, "unreadable worker record skipped"),
        }
    }
    Ok(out)
}

async fn flush_loop(inner: std::sync::Weak<WorkerState>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(FLUSH_EVERY) => {}
            () = shutdown.cancelled() => return,
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        flush(&inner).await;
    }
}

/// Writes changed records in one transaction.
async fn flush(inner: &Arc<WorkerState>) {
    let Some(db) = inner.db.clone() else {
        return;
    };
    let (rows, forgotten) = {
        let mut records = lock(&inner.records);
        let dirty = std::mem::take(&mut records.dirty);
        let forgotten = std::mem::take(&mut records.forgotten);
        let rows: Vec<([u8; 36], Vec<u8>)> = dirty
            .into_iter()
            .filter_map(|key| {
                let record = records.map.get(&key)?;
                encode(record).ok().map(|bytes| (key, bytes))
            })
            .collect();
        (rows, forgotten)
    };
    if rows.is_empty() && forgotten.is_empty() {
        return;
    }
    let result = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let write = db.begin_write().map_err(|e| e.to_string())?;
        {
            let mut table = write.open_table(TASKS).map_err(|e| e.to_string())?;
            for (key, bytes) in &rows {
                table
                    .insert(key.as_slice(), bytes.as_slice())
                    .map_err(|e| e.to_string())?;
            }
            for key in &forgotten {
                table.remove(key.as_slice()).map_err(|e| e.to_string())?;
            }
        }
        write.commit().map_err(|e| e.to_string())
    })
    .await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::error!(%error, "cannot write worker records"),
        Err(error) => tracing::error!(%error, "worker record writer stopped"),
    }
}

impl Service for Worker {
    fn methods(&self) -> &[&'static str] {
        WORKER_METHODS
    }

    fn call(&self, method: u64, args: Vec<Value>, reply: Replier) -> BoxFuture<()> {
        let worker = self.clone();
        Box::pin(async move {
            match method {
                method::DESCRIBE => worker.describe(reply).await,
                method::RUN => worker.run(args, reply).await,
                method::REVEAL => worker.reveal(args, reply).await,
                method::CANCEL_TASK => worker.cancel(args, reply).await,
                _ => worker.list(reply).await,
            }
        })
    }
}

/// Answers one value, or an error.
async fn answer(mut reply: Replier, result: Result<Vec<Value>, (u64, String)>) {
    match result {
        Ok(values) => {
            reply.chunk(values).await;
            reply.choke().await;
        }
        Err((code, message)) => reply.error(code, &message).await,
    }
}

fn bad_args(message: String) -> (u64, String) {
    (code::BAD_ARGS, message)
}

impl Worker {
    async fn describe(&self, reply: Replier) {
        let result = to_value(&self.resources())
            .map(|value| vec![value])
            .map_err(|e| (code::FAILED, e.to_string()));
        answer(reply, result).await;
    }

    async fn list(&self, reply: Replier) {
        let result = to_value(&self.tasks())
            .map(|value| vec![value])
            .map_err(|e| (code::FAILED, e.to_string()));
        answer(reply, result).await;
    }

    async fn cancel(&self, args: Vec<Value>, reply: Replier) {
        let result = (|| {
            let job: JobId = arg(&args, 0, "the job id").map_err(bad_args)?;
            let index: u32 = arg(&args, 1, "the task index").map_err(bad_args)?;
            let records = lock(&self.inner.records);
            let cancelled = match records.running.get(&task_key(&job, index)) {
                Some((_, token)) => {
                    token.cancel();
                    true
                }
                None => false,
            };
            Ok(vec![Value::from(cancelled)])
        })();
        answer(reply, result).await;
    }

    async fn reveal(&self, args: Vec<Value>, reply: Replier) {
        let result = async {
            let job: JobId = arg(&args, 0, "the job id").map_err(bad_args)?;
            let index: u32 = arg(&args, 1, "the task index").map_err(bad_args)?;
            let record = lock(&self.inner.records)
                .map
                .get(&task_key(&job, index))
                .cloned();
            let Some(TaskRecord {
                state: TaskRecordState::Done { reveal, .. },
                ..
            }) = record
            else {
                return Err((
                    code::UNKNOWN,
                    format!("task {index} of job {job} has not finished here"),
                ));
            };
            let store = self.inner.fabric.store();
            let inline = |digest: Digest| {
                let store = store.clone();
                async move {
                    tokio::task::spawn_blocking(move || {
                        store
                            .read_to_vec(&store_hash(&digest), INLINE_OUTPUT_MAX)
                            .ok()
                    })
                    .await
                    .ok()
                    .flatten()
                }
            };
            let stdout = inline(reveal.outcome.stdout).await;
            let stderr = inline(reveal.outcome.stderr).await;
            let reveal = to_value(&reveal).map_err(|e| (code::FAILED, e.to_string()))?;
            let bin = |bytes: Option<Vec<u8>>| bytes.map(Value::Binary).unwrap_or(Value::Nil);
            Ok(vec![reveal, bin(stdout), bin(stderr)])
        }
        .await;
        answer(reply, result).await;
    }

    async fn run(&self, args: Vec<Value>, reply: Replier) {
        let task: TaskSpec = match arg(&args, 0, "the task") {
            Ok(task) => task,
            Err(message) => return answer(reply, Err(bad_args(message))).await,
        };
        let result = self.run_task(&task, &reply).await;
        let result = result.map(|commitment| vec![to_value(&commitment).unwrap_or(Value::Nil)]);
        answer(reply, result).await;
    }

    fn check(&self, task: &TaskSpec) -> Result<(), (u64, String)> {
        if !self.inner.runtimes.offered().contains(&task.runtime) {
            return Err((
                code::BAD_ARGS,
                format!("this worker does not run {} tasks", task.runtime.name()),
            ));
        }
        let max = &self.inner.config.limits_max;
        let l = &task.limits;
        if l.fuel > max.fuel
            || l.memory_bytes > max.memory_bytes
            || l.wall_time_ms > max.wall_time_ms
            || l.output_bytes > max.output_bytes
            || l.millicpus > max.millicpus
        {
            return Err((
                code::BAD_ARGS,
                format!("the task asks for more than this worker allows ({max:?})"),
            ));
        }
        if task.network && !(task.runtime == Runtime::Docker && self.inner.config.network_allowed) {
            return Err((
                code::BAD_ARGS,
                "the task asks for the network, which this worker does not allow".to_owned(),
            ));
        }
        Ok(())
    }

    /// Runs a task (or finds it run), answering its commitment.
    async fn run_task(
        &self,
        task: &TaskSpec,
        reply: &Replier,
    ) -> Result<Commitment, (u64, String)> {
        self.check(task)?;
        let key = task_key(&task.job, task.index);
        // Finished already, or running: answer from that.
        loop {
            let waiting = {
                let records = lock(&self.inner.records);
                if let Some(TaskRecord {
                    state: TaskRecordState::Done { commitment, .. },
                    ..
                }) = records.map.get(&key)
                {
                    return Ok(*commitment);
                }
                records.running.get(&key).map(|(notify, _)| notify.clone())
            };
            match waiting {
                Some(notify) => {
                    tokio::select! {
                        () = notify.notified() => {}
                        () = reply.cancelled() => return Err((code::CANCELLED, "cancelled".into())),
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
                None => break,
            }
        }
        let Ok(permit) = self.inner.slots.clone().try_acquire_owned() else {
            return Err((
                code::BUSY,
                format!(
                    "all {} slots of this worker are busy",
                    self.inner.config.slots
                ),
            ));
        };
        let cancel = CancellationToken::new();
        let notify = Arc::new(Notify::new());
        {
            let mut records = lock(&self.inner.records);
            records
                .running
                .insert(key, (notify.clone(), cancel.clone()));
            records.put(
                key,
                TaskRecord {
                    job: task.job,
                    index: task.index,
                    hub: Digest(*reply.peer().as_bytes()),
                    started_ms: crate::unix_ms(),
                    state: TaskRecordState::Running,
                },
            );
        }
        let result = tokio::select! {
            result = self.execute(task, reply.peer()) => result,
            () = cancel.cancelled() => Err((code::CANCELLED, "cancelled by the hub".to_owned())),
            () = reply.cancelled() => Err((code::CANCELLED, "the hub gave up".to_owned())),
            () = self.inner.shutdown.cancelled() => Err((code::FAILED, "the worker is stopping".to_owned())),
        };
        drop(permit);
        let mut records = lock(&self.inner.records);
        records.running.remove(&key);
        let state = match &result {
            Ok((commitment, reveal, wall_time_ms)) => TaskRecordState::Done {
                commitment: *commitment,
                reveal: reveal.clone(),
                wall_time_ms: *wall_time_ms,
            },
            Err((code::CANCELLED, _)) => TaskRecordState::Cancelled,
            Err((_, message)) => TaskRecordState::Failed(message.clone()),
        };
        if let Some(record) = records.map.get(&key).cloned() {
            records.put(key, TaskRecord { state, ..record });
        }
        drop(records);
        notify.notify_waiters();
        result.map(|(commitment, _, _)| commitment)
    }

    /// Fetches, runs, stores and commits.
    async fn execute(
        &self,
        task: &TaskSpec,
        hub: fogwire_identity::NodeId,
    ) -> Result<(Commitment, Reveal, u64), (u64, String)> {
        let store = self.inner.fabric.store();
        let mut wanted = vec![task.program];
        wanted.extend(task.inputs.iter().copied());
        crate::fetch_missing(self.inner.fabric.as_ref(), &wanted, &[hub], FETCH_TIMEOUT)
            .await
            .map_err(|why| (code::FAILED, why))?;
        let input_max = self.inner.config.input_bytes_max;
        let program_max = fogwire_sandbox::wasm::MODULE_BYTES_MAX as u64;
        let (program, stdin) = {
            let store = store.clone();
            let task = task.clone();
            let program_max = if task.runtime == Runtime::Docker {
                input_max
            } else {
                program_max
            };
            tokio::task::spawn_blocking(move || -> Result<(Bytes, Bytes), String> {
                let size = store
                    .entry(&store_hash(&task.program))
                    .map_err(|e| format!("the program: {e}"))?
                    .map_or(0, |entry| entry.size);
                if size > program_max {
                    return Err(format!(
                        "the program is {size} bytes; this worker takes at most {program_max}"
                    ));
                }
                let program = store
                    .read_to_vec(&store_hash(&task.program), program_max)
                    .map_err(|e| format!("the program: {e}"))?;
                let mut stdin = Vec::new();
                for input in &task.inputs {
                    let left = input_max.saturating_sub(stdin.len() as u64);
                    let bytes = store.read_to_vec(&store_hash(input), left).map_err(|e| {
                        format!(
                            "input {}: {e} (inputs may be {input_max} bytes in all)",
                            input.to_hex()
                        )
                    })?;
                    stdin.extend_from_slice(&bytes);
                }
                Ok((Bytes::from(program), Bytes::from(stdin)))
            })
            .await
            .map_err(|e| (code::FAILED, e.to_string()))?
            .map_err(|message| (code::BAD_ARGS, message))?
        };
        let output = self
            .inner
            .runtimes
            .run(task, program, stdin)
            .await
            .map_err(|error| (code::BAD_ARGS, error.to_string()))?;
        let mut stdout = output.stdout.to_vec();
        if self.inner.config.cheat {
            // The demo's cheat: claims a result it did not compute.
            for byte in stdout.iter_mut().take(64) {
                *byte = byte.wrapping_add(1);
            }
            if stdout.is_empty() {
                stdout.push(b'?');
            }
        }
        let mut stderr = output.stderr.to_vec();
        let mut fuel_used = output.fuel_used;
        if output.status == ExitStatus::TimedOut {
            // How far a program got before its wall time ran out differs
            // between workers: what it wrote and the fuel it burned would
            // make honest replicas disagree. A timed-out outcome carries
            // neither (compute.md §6).
            stdout.clear();
            stderr.clear();
            fuel_used = 0;
        }
        let blobs = vec![stdout, stderr];
        // Outputs can be made again: no sync per task (a crash loses them,
        // and the hub then asks another worker).
        let hashes = tokio::task::spawn_blocking(move || store.import_batch_unsynced(&blobs))
            .await
            .map_err(|e| (code::FAILED, e.to_string()))?
            .map_err(|e| (code::FAILED, format!("cannot store the output: {e}")))?;
        let outcome = Outcome {
            status: output.status,
            stdout: digest_of(&hashes[0]),
            stderr: digest_of(&hashes[1]),
            fuel_used,
        };
        let mut nonce = [0u8; 32];
        getrandom::fill(&mut nonce).map_err(|e| (code::FAILED, e.to_string()))?;
        let nonce = Digest(nonce);
        let me = self.inner.fabric.node_id();
        let commitment = Commitment::new(
            me.as_bytes(),
            &task.job,
            task.index,
            &outcome.digest(),
            &nonce,
        );
        if matches!(outcome.status, ExitStatus::Trapped(_)) {
            tracing::debug!(job = %task.job, index = task.index, status = %outcome.status, "task trapped");
        }
        Ok((
            commitment,
            Reveal { outcome, nonce },
            output.wall_time.as_millis() as u64,
        ))
    }
}
