//! What a buyer asks for (a [`JobSpec`]), what a worker is given (a
//! [`TaskSpec`]) and what it reports (an [`Outcome`]). All of them travel
//! as MessagePack maps (`docs/protocol/compute.md`), encoded through serde
//! into [`rmpv::Value`]s, the form the RPC carries.

use serde::{Deserialize, Serialize};

use crate::Digest;

/// Largest number of tasks one job may be split into.
pub const SPLIT_MAX: u32 = 4096;
/// Most replicas a task may run on (also the bound for "full").
pub const REPLICAS_MAX: u8 = 9;
/// Most inputs a job may name.
pub const INPUTS_MAX: usize = 64;
/// Most arguments, and bytes in all of them.
pub const ARGS_MAX: usize = 256;
pub const ARGS_BYTES_MAX: usize = 16 * 1024;
/// The longest deadline a job may ask for.
pub const DEADLINE_MS_MAX: u64 = 24 * 3600 * 1000;

/// How a task's program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// A WebAssembly (WASI preview 1) module.
    Wasm,
    /// A Docker image, as the tarball `docker save` writes.
    Docker,
}

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Wasm => "wasm",
            Runtime::Docker => "docker",
        }
    }
}

/// How many workers run each task, and whether a good record lowers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Replication {
    /// One worker, trusted: no verification.
    Trust,
    /// Exactly this many workers, always.
    Fixed(u8),
    /// Up to this many; a worker with a long record of agreeing may run a
    /// task alone, apart from random spot checks.
    Adaptive(u8),
    /// Every worker the hub knows (up to [`REPLICAS_MAX`]).
    Full,
}

impl Replication {
    /// Replicas asked for, before adaptive lowering; `workers` resolves
    /// "full".
    pub fn replicas(self, workers: usize) -> u8 {
        match self {
            Replication::Trust => 1,
            Replication::Fixed(n) | Replication::Adaptive(n) => n,
            Replication::Full => workers.clamp(1, REPLICAS_MAX as usize) as u8,
        }
    }
}

/// What a task may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// WebAssembly fuel (about one per instruction): the unit of billing.
    pub fuel: u64,
    pub memory_bytes: u64,
    pub wall_time_ms: u64,
    /// Bytes of stdout, and of stderr, kept.
    pub output_bytes: u64,
    /// CPUs a container may use, in thousandths.
    pub millicpus: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: 10_000_000_000,
            memory_bytes: 256 * 1024 * 1024,
            wall_time_ms: 60_000,
            output_bytes: 16 * 1024 * 1024,
            millicpus: 1000,
        }
    }
}

/// A job, as a buyer submits it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub runtime: Runtime,
    /// The module or image tarball, by hash (a blob in the store).
    pub program: Digest,
    /// Blobs the program reads (on stdin, one after another).
    pub inputs: Vec<Digest>,
    /// argv after the program's name.
    pub args: Vec<String>,
    pub limits: Limits,
    pub replication: Replication,
    /// How many tasks: each gets `FOGWIRE_TASK` (0-based) and
    /// `FOGWIRE_TASKS` in its environment.
    pub split: u32,
    /// From submission to the end of the job.
    pub deadline_ms: u64,
    /// Containers only: whether it may use the network (the worker must
    /// allow it too).
    pub network: bool,
}

/// Why a job specification was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    #[error("split must be 1..={SPLIT_MAX}, not {0}")]
    Split(u32),
    #[error("replicas must be 1..={REPLICAS_MAX}, not {0}")]
    Replicas(u8),
    #[error("at most {INPUTS_MAX} inputs, not {0}")]
    Inputs(usize),
    #[error("at most {ARGS_MAX} arguments of {ARGS_BYTES_MAX} bytes in all")]
    Args,
    #[error("the deadline must be 1..={DEADLINE_MS_MAX} ms, not {0}")]
    Deadline(u64),
    #[error("limits must all be above zero")]
    Limits,
    #[error("the network is for containers only")]
    Network,
}

impl JobSpec {
    /// A WebAssembly job with default limits, 3 replicas, one task and a
    /// 10-minute deadline.
    pub fn wasm(program: Digest) -> JobSpec {
        JobSpec {
            runtime: Runtime::Wasm,
            program,
            inputs: Vec::new(),
            args: Vec::new(),
            limits: Limits::default(),
            replication: Replication::Fixed(3),
            split: 1,
            deadline_ms: 600_000,
            network: false,
        }
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        if !(1..=SPLIT_MAX).contains(&self.split) {
            return Err(SpecError::Split(self.split));
        }
        if let Replication::Fixed(n) | Replication::Adaptive(n) = self.replication
            && !(1..=REPLICAS_MAX).contains(&n)
        {
            return Err(SpecError::Replicas(n));
        }
        if self.inputs.len() > INPUTS_MAX {
            return Err(SpecError::Inputs(self.inputs.len()));
        }
        let args_bytes: usize = self.args.iter().map(String::len).sum();
        if self.args.len() > ARGS_MAX || args_bytes > ARGS_BYTES_MAX {
            return Err(SpecError::Args);
        }
        if !(1..=DEADLINE_MS_MAX).contains(&self.deadline_ms) {
            return Err(SpecError::Deadline(self.deadline_ms));
        }
        let l = &self.limits;
        if l.fuel == 0
            || l.memory_bytes == 0
            || l.wall_time_ms == 0
            || l.output_bytes == 0
            || l.millicpus == 0
        {
            return Err(SpecError::Limits);
        }
        if self.network && self.runtime != Runtime::Docker {
            return Err(SpecError::Network);
        }
        Ok(())
    }
}

/// A job's id: derived from the hub, the buyer and a counter, so two jobs
/// never share one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobId(pub Digest);

impl JobId {
    pub fn derive(hub: &[u8; 32], submitter: &[u8; 32], sequence: u64, spec: &[u8]) -> JobId {
        let mut hasher = blake3::Hasher::new_derive_key("fogwire compute job id v1");
        hasher.update(hub);
        hasher.update(submitter);
        hasher.update(&sequence.to_le_bytes());
        hasher.update(spec);
        JobId(Digest(*hasher.finalize().as_bytes()))
    }
}

impl std::fmt::Display for JobId {
    /// The short form ([`fogwire_identity::short_form`]): what users type,
    /// a prefix of the id.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&fogwire_identity::short_form(&self.0.to_hex()))
    }
}

/// One task of a job, as a worker is asked to run it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub job: JobId,
    pub index: u32,
    pub count: u32,
    pub runtime: Runtime,
    pub program: Digest,
    pub inputs: Vec<Digest>,
    pub args: Vec<String>,
    pub limits: Limits,
    pub network: bool,
}

impl TaskSpec {
    /// The seed of the task's randomness: the same for every replica.
    pub fn seed(&self) -> u64 {
        let mut hasher = blake3::Hasher::new_derive_key("fogwire compute task seed v1");
        hasher.update(self.job.0.as_bytes());
        hasher.update(&self.index.to_le_bytes());
        let hash = hasher.finalize();
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&hash.as_bytes()[..8]);
        u64::from_le_bytes(seed)
    }

    /// The environment every task gets.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("FOGWIRE_TASK".to_owned(), self.index.to_string()),
            ("FOGWIRE_TASKS".to_owned(), self.count.to_string()),
        ]
    }
}

/// How a task's program ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    Exited(i32),
    OutOfFuel,
    TimedOut,
    OutOfMemory,
    OutputTooLarge,
    Trapped(String),
}

impl ExitStatus {
    /// The program ran to its end and said it succeeded (exit code 0):
    /// anything else fails its job.
    pub fn succeeded(&self) -> bool {
        *self == ExitStatus::Exited(0)
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Exited(code) => write!(f, "exited with {code}"),
            ExitStatus::OutOfFuel => f.write_str("ran out of fuel"),
            ExitStatus::TimedOut => f.write_str("ran past its wall time"),
            ExitStatus::OutOfMemory => f.write_str("ran out of memory"),
            ExitStatus::OutputTooLarge => f.write_str("wrote more output than its limit"),
            ExitStatus::Trapped(why) => write!(f, "trapped: {why}"),
        }
    }
}

/// What a task did: the part replicas must agree on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub status: ExitStatus,
    /// The stdout blob.
    pub stdout: Digest,
    /// The stderr blob.
    pub stderr: Digest,
    /// WebAssembly fuel used (0 for containers).
    pub fuel_used: u64,
}

impl Outcome {
    /// The digest replicas are compared by, and committed to.
    pub fn digest(&self) -> Digest {
        let mut hasher = blake3::Hasher::new_derive_key("fogwire compute outcome v1");
        let (code, detail): (u8, &[u8]) = match &self.status {
            ExitStatus::Exited(code) => {
                hasher.update(&code.to_le_bytes());
                (0, b"")
            }
            ExitStatus::OutOfFuel => (1, b""),
            ExitStatus::TimedOut => (2, b""),
            ExitStatus::OutOfMemory => (3, b""),
            ExitStatus::OutputTooLarge => (4, b""),
            ExitStatus::Trapped(why) => (5, why.as_bytes()),
        };
        hasher.update(&[code]);
        hasher.update(&(detail.len() as u64).to_le_bytes());
        hasher.update(detail);
        hasher.update(self.stdout.as_bytes());
        hasher.update(self.stderr.as_bytes());
        hasher.update(&self.fuel_used.to_le_bytes());
        Digest(*hasher.finalize().as_bytes())
    }
}

/// Encodes anything serde can into the MessagePack value the RPC carries.
pub fn to_value<T: Serialize>(value: &T) -> Result<rmpv::Value, DecodeError> {
    rmpv::ext::to_value(value).map_err(|e| DecodeError(e.to_string()))
}

/// Decodes a MessagePack value into `T`, with a typed error.
pub fn from_value<T: serde::de::DeserializeOwned>(value: rmpv::Value) -> Result<T, DecodeError> {
    rmpv::ext::from_value(value).map_err(|e| DecodeError(e.to_string()))
}

/// A value that is not what it should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed compute message: {0}")]
pub struct DecodeError(pub String);
