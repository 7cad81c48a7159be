//! WebAssembly tasks under wasmtime.
//!
//! A task is a WASI (preview 1) command module run with what it is given
//! and nothing else: its arguments, environment and standard input; no
//! preopened directory (so no file system), no sockets, a wall clock
//! frozen at the Unix epoch and a monotonic clock that never moves, and
//! randomness drawn from a seed the task names. With NaN canonicalisation,
//! deterministic relaxed SIMD and no threads, replicas of one task produce
//! the same bytes on any worker: that is what lets results be checked by
//! comparing them.
//!
//! Limits: fuel (one unit per instruction, roughly: the unit of billing),
//! linear memory, wall time (an epoch ticker interrupts the task), and the
//! bytes it may write to stdout and stderr. Compiled modules are cached by
//! their BLAKE3 hash, so a module seen before starts by instantiating a
//! pre-linked instance.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmtime::{Engine, InstancePre, Linker, Module, ResourceLimiter, Store, Trap};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtxBuilder};

/// How often the epoch ticks (the granularity of wall-time limits).
const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Compiled modules kept.
const CACHE_MODULES_MAX: usize = 64;
/// Largest module accepted.
pub const MODULE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// What a task may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Fuel: about one unit per WebAssembly instruction.
    pub fuel: u64,
    /// Linear memory, in bytes.
    pub memory_bytes: usize,
    /// Wall time from start to end.
    pub wall_time: Duration,
    /// Bytes of stdout, and of stderr, kept (more fails the task).
    pub output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: 10_000_000_000,
            memory_bytes: 256 * 1024 * 1024,
            wall_time: Duration::from_secs(60),
            output_bytes: 16 * 1024 * 1024,
        }
    }
}

/// One run of a module.
#[derive(Debug, Clone, Default)]
pub struct Task {
    /// argv, the program's name first.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub stdin: Bytes,
    /// Seeds the randomness the task gets (replicas share it).
    pub seed: u64,
    pub limits: Limits,
    /// Set to stop the task early (within one epoch tick); it then ends
    /// as [`Status::TimedOut`].
    pub cancel: Option<Arc<AtomicBool>>,
}

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// It returned from `_start` (code 0) or called `proc_exit`.
    Exited(i32),
    /// It ran out of fuel.
    OutOfFuel,
    /// It ran past its wall time.
    TimedOut,
    /// It asked for more memory than its limit and then failed.
    OutOfMemory,
    /// It wrote more output than its limit.
    OutputTooLarge,
    /// It trapped (unreachable, a bad memory access, …).
    Trapped(String),
}

/// What a task did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: Status,
    pub stdout: Bytes,
    pub stderr: Bytes,
    pub fuel_used: u64,
    pub wall_time: Duration,
    /// Whether the compiled module came from the cache.
    pub cached: bool,
}

/// Why a task could not run at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WasmError {
    #[error("the module is {0} bytes; at most {MODULE_BYTES_MAX} are accepted")]
    TooLarge(usize),
    #[error("not a valid WebAssembly module: {0}")]
    Invalid(String),
    #[error("the module cannot be linked (it imports what a task is not given): {0}")]
    Link(String),
    #[error("wasmtime: {0}")]
    Engine(String),
}

struct State {
    wasi: WasiP1Ctx,
    limits: MemoryLimit,
}

/// Memory limit that remembers when it said no.
struct MemoryLimit {
    max_bytes: usize,
    denied: bool,
}

impl ResourceLimiter for MemoryLimit {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.max_bytes;
        if !allowed {
            self.denied = true;
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }

    fn instances(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        4
    }
}

/// Randomness that is the same for every replica of a task: BLAKE3 in
/// its extendable-output mode, keyed by the task's seed.
struct SeededRandom(blake3::OutputReader);

impl SeededRandom {
    fn new(seed: u64, purpose: &str) -> SeededRandom {
        let mut hasher = blake3::Hasher::new_derive_key("fogwire task randomness v1");
        hasher.update(purpose.as_bytes());
        hasher.update(&seed.to_le_bytes());
        SeededRandom(hasher.finalize_xof())
    }
}

impl wasmtime_wasi::RngCore for SeededRandom {
    fn next_u32(&mut self) -> u32 {
        let mut bytes = [0u8; 4];
        self.0.fill(&mut bytes);
        u32::from_le_bytes(bytes)
    }

    fn next_u64(&mut self) -> u64 {
        let mut bytes = [0u8; 8];
        self.0.fill(&mut bytes);
        u64::from_le_bytes(bytes)
    }

    fn fill_bytes(&mut self, bytes: &mut [u8]) {
        self.0.fill(bytes);
    }

    fn try_fill_bytes(&mut self, bytes: &mut [u8]) -> Result<(), cap_rand::Error> {
        self.0.fill(bytes);
        Ok(())
    }
}

/// A wall clock stopped at the Unix epoch.
struct FrozenWallClock;

impl HostWallClock for FrozenWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

/// A monotonic clock that does not move.
struct FrozenMonotonicClock;

impl HostMonotonicClock for FrozenMonotonicClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }

    fn now(&self) -> u64 {
        0
    }
}

/// Runs WebAssembly tasks; one per worker, shared by its threads.
pub struct WasmRuntime {
    engine: Engine,
    linker: Linker<State>,
    cache: Mutex<HashMap<[u8; 32], InstancePre<State>>>,
    ticker_stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for WasmRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmRuntime").finish_non_exhaustive()
    }
}

impl WasmRuntime {
    pub fn new() -> Result<WasmRuntime, WasmError> {
        let mut config = wasmtime::Config::new();
        config
            .consume_fuel(true)
            .epoch_interruption(true)
            .cranelift_nan_canonicalization(true)
            .relaxed_simd_deterministic(true)
            // Threads (a source of nondeterminism) are not even compiled
            // in: wasmtime's `threads` feature is off.
            .max_wasm_stack(1024 * 1024);
        let engine = Engine::new(&config).map_err(|e| WasmError::Engine(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |state: &mut State| &mut state.wasi)
            .map_err(|e| WasmError::Engine(e.to_string()))?;
        // The epoch ticks on a thread of its own while the runtime lives.
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (ticking, stop) = (engine.weak(), ticker_stop.clone());
        std::thread::Builder::new()
            .name("fogwire-wasm-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match ticking.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => return,
                    }
                }
            })
            .map_err(|e| WasmError::Engine(e.to_string()))?;
        Ok(WasmRuntime {
            engine,
            linker,
            cache: Mutex::new(HashMap::new()),
            ticker_stop,
        })
    }

    /// Compiles and links `module`, or takes it from the cache.
    fn prepare(&self, module: &[u8]) -> Result<(InstancePre<State>, bool), WasmError> {
        if module.len() > MODULE_BYTES_MAX {
            return Err(WasmError::TooLarge(module.len()));
        }
        let key = *blake3::hash(module).as_bytes();
        if let Some(pre) = self.lock_cache().get(&key) {
            return Ok((pre.clone(), true));
        }
        let compiled =
            Module::new(&self.engine, module).map_err(|e| WasmError::Invalid(format!("{e:#}")))?;
        let pre = self
            .linker
            .instantiate_pre(&compiled)
            .map_err(|e| WasmError::Link(format!("{e:#}")))?;
        let mut cache = self.lock_cache();
        if cache.len() >= CACHE_MODULES_MAX
            && let Some(evicted) = cache.keys().next().copied()
        {
            cache.remove(&evicted);
        }
        cache.insert(key, pre.clone());
        Ok((pre, false))
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], InstancePre<State>>> {
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `task` on `module` (WebAssembly binary, or text) on this thread
    /// until it ends or a limit stops it. Blocking: call from a thread
    /// that may block.
    pub fn run(&self, module: &[u8], task: &Task) -> Result<Outcome, WasmError> {
        let started = Instant::now();
        let (pre, cached) = self.prepare(module)?;
        // One byte more than allowed: holding it means the task wrote too
        // much (its output would be cut short, so it is no result).
        let capacity = task.limits.output_bytes.saturating_add(1);
        let stdout = MemoryOutputPipe::new(capacity);
        let stderr = MemoryOutputPipe::new(capacity);
        let mut wasi = WasiCtxBuilder::new();
        wasi.args(&task.args)
            .envs(&task.env)
            .stdin(MemoryInputPipe::new(task.stdin.clone()))
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .wall_clock(FrozenWallClock)
            .monotonic_clock(FrozenMonotonicClock)
            .secure_random(SeededRandom::new(task.seed, "random"))
            .insecure_random(SeededRandom::new(task.seed, "insecure random"))
            .insecure_random_seed(u128::from(task.seed));
        let mut store = Store::new(
            &self.engine,
            State {
                wasi: wasi.build_p1(),
                limits: MemoryLimit {
                    max_bytes: task.limits.memory_bytes,
                    denied: false,
                },
            },
        );
        store.limiter(|state| &mut state.limits);
        store
            .set_fuel(task.limits.fuel)
            .map_err(|e| WasmError::Engine(e.to_string()))?;
        // The next tick may come at once: one more, so the task gets at
        // least its wall time.
        let ticks = task
            .limits
            .wall_time
            .as_millis()
            .div_ceil(EPOCH_TICK.as_millis())
            + 1;
        // Checked every tick: past the wall time, or cancelled, it stops.
        let mut ticks_left = u64::try_from(ticks).unwrap_or(u64::MAX);
        let cancel = task.cancel.clone();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            ticks_left = ticks_left.saturating_sub(1);
            let cancelled = cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed));
            if ticks_left == 0 || cancelled {
                Err(Trap::Interrupt.into())
            } else {
                Ok(wasmtime::UpdateDeadline::Continue(1))
            }
        });
        let result = pre.instantiate(&mut store).and_then(|instance| {
            instance
                .get_typed_func::<(), ()>(&mut store, "_start")
                .and_then(|start| start.call(&mut store, ()))
        });
        let fuel_used = task
            .limits
            .fuel
            .saturating_sub(store.get_fuel().unwrap_or(0));
        let (stdout, stderr) = (stdout.contents(), stderr.contents());
        let too_much = |pipe: &Bytes| pipe.len() > task.limits.output_bytes;
        let status = match result {
            _ if too_much(&stdout) || too_much(&stderr) => Status::OutputTooLarge,
            Ok(()) => Status::Exited(0),
            Err(error) => {
                if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
                    Status::Exited(exit.0)
                } else if let Some(trap) = error.downcast_ref::<Trap>() {
                    match trap {
                        Trap::OutOfFuel => Status::OutOfFuel,
                        Trap::Interrupt => Status::TimedOut,
                        _ if store.data().limits.denied => Status::OutOfMemory,
                        other => Status::Trapped(other.to_string()),
                    }
                } else if store.data().limits.denied {
                    Status::OutOfMemory
                } else {
                    Status::Trapped(format!("{error:#}"))
                }
            }
        };
        Ok(Outcome {
            status,
            stdout,
            stderr,
            fuel_used,
            wall_time: started.elapsed(),
            cached,
        })
    }
}

impl Drop for WasmRuntime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}
