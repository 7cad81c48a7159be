//! Jobs through hubs, and the workers hubs know.

use serde::{Deserialize, Serialize};

/// `POST /v1/jobs`: a job to submit through a hub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSubmitRequest {
    /// The most the buyer pays (units): held in escrow for the hub when
    /// the job is submitted, paid out when its result is accepted, the
    /// rest (or all, if it fails) returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_price: Option<u64>,
    /// The program: an absolute path (a `.wasm` or `.wat` module, or an
    /// image `.tar`), or the hash of a blob in this node's store.
    pub program: String,
    /// `wasm` or `docker`; by default from the program's name (`.tar`:
    /// docker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Inputs: absolute paths or hashes; the task reads them on stdin.
    #[serde(default)]
    pub inputs: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
    /// Workers per task.
    #[serde(default = "default_replicas")]
    pub replicas: u8,
    /// `fixed` (default: exactly `replicas` workers), `adaptive` (a worker
    /// with a verified record may run a task alone, with spot checks),
    /// `trust` (one worker) or `full`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<String>,
    #[serde(default = "default_split")]
    pub split: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_time_ms: Option<u64>,
    /// Containers only: ask for the network.
    #[serde(default)]
    pub network: bool,
    /// The hub (its id or the start of one); by default the first known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<String>,
}

fn default_replicas() -> u8 {
    3
}

fn default_split() -> u32 {
    1
}

/// The answer to `POST /v1/jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSubmitted {
    /// The job's id (64 hex digits; any unique start of it will do).
    pub job: String,
    /// The escrow paying for it, if it is paid for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escrow: Option<String>,
    pub hub: String,
    pub program: String,
    pub inputs: Vec<String>,
}

/// A job, as `GET /v1/jobs/<id>` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobInfo {
    pub job: String,
    pub hub: String,
    /// `running`, `done`, `failed` or `cancelled`.
    pub state: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub runtime: String,
    pub replication: String,
    pub tasks: u32,
    pub tasks_done: u32,
    pub submitted_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<u64>,
    /// The directory of the accepted tasks' outputs (`task-<index>.out`,
    /// `.err`), once the job ended (a failed job's too, so the failing
    /// task's stderr can be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    pub replicas_run: u32,
    pub dissents: u32,
    pub silences: u32,
    pub fuel_used: u64,
    pub log_lines: u64,
    /// Paid jobs: what the buyer's escrow held (units).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escrow_held: Option<u64>,
    /// Paid jobs, once settled: what was paid and refunded, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<String>,
    /// Tasks that ran on fewer workers than asked: `adaptive`
    /// replication let a worker with a verified record run them alone
    /// (the job's log says which and why). Always 0 for `fixed`.
    #[serde(default)]
    pub fewer_replicas: u32,
}

/// One task's accepted outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskOutcome {
    pub index: u32,
    /// How the program ended, e.g. `exited with 0`, `ran out of fuel`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub fuel_used: u64,
}

/// `GET /v1/jobs/<id>/result`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResultInfo {
    pub job: JobInfo,
    /// Accepted outcomes, by task (tasks without one are left out).
    pub outcomes: Vec<TaskOutcome>,
}

/// `POST /v1/jobs/<id>/fetch`: get a finished job's outputs here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobFetchRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<String>,
    /// An absolute path: a directory of `task-<index>.out`/`.err` files,
    /// or with `join`, one file of every task's stdout in order.
    pub out: String,
    #[serde(default)]
    pub join: bool,
}

/// The answer to `POST /v1/jobs/<id>/fetch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFetched {
    pub output: String,
    pub path: String,
    pub files: u64,
    pub bytes: u64,
}

/// `GET /v1/jobs/<id>/logs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLogs {
    pub lines: Vec<String>,
    /// The number of the next line (ask `?from=` it to follow).
    pub next: u64,
}

/// `POST /v1/jobs/<id>/cancel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCancelled {
    pub job: String,
    /// False if it had ended already.
    pub cancelled: bool,
}

/// A worker, as `GET /v1/workers` reports it (through a hub).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub node_id: String,
    pub slots: u32,
    pub running: u32,
    pub agreed: u64,
    pub dissented: u64,
    pub silent: u64,
    pub streak: u32,
    pub cores: u32,
    pub memory_bytes: u64,
    pub disk_free_bytes: u64,
    pub gpus: u32,
    pub runtimes: Vec<String>,
}
