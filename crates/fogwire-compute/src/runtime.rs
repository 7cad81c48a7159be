//! The task runtimes behind one interface: WebAssembly (wasmtime, the
//! default) and Docker containers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fogwire_compute_proto::{ExitStatus, Limits, Runtime, TaskSpec};
use fogwire_sandbox::{Status, WasmRuntime};

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunOutput {
    pub status: ExitStatus,
    pub stdout: Bytes,
    pub stderr: Bytes,
    pub fuel_used: u64,
    pub wall_time: Duration,
}

/// Why a task could not run at all (as opposed to running and failing,
/// which is an outcome like any other).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    #[error("this worker does not run {0} tasks")]
    Unsupported(&'static str),
    #[error(transparent)]
    Wasm(#[from] fogwire_sandbox::WasmError),
    #[error("container: {0}")]
    Docker(String),
    #[error("the runtime stopped: {0}")]
    Internal(String),
}

/// The runtimes a worker has.
#[derive(Clone)]
pub struct Runtimes {
    wasm: Arc<WasmRuntime>,
    docker: Option<Arc<dyn ContainerRuntime>>,
}

impl std::fmt::Debug for Runtimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtimes")
            .field("docker", &self.docker.is_some())
            .finish_non_exhaustive()
    }
}

/// Containers, as the worker uses them (the Docker runtime implements it).
pub trait ContainerRuntime: Send + Sync + 'static {
    /// Loads the image tarball (if not loaded already), runs it with
    /// `args`, `env` and `stdin` under `limits`, collects its output, and
    /// removes the container whatever happens.
    fn run(
        self: Arc<Self>,
        image: Bytes,
        args: Vec<String>,
        env: Vec<(String, String)>,
        stdin: Bytes,
        limits: Limits,
        network: bool,
    ) -> fogwire_rpc::BoxFuture<Result<RunOutput, RunError>>;
}

impl Runtimes {
    pub fn new(wasm: Arc<WasmRuntime>, docker: Option<Arc<dyn ContainerRuntime>>) -> Runtimes {
        Runtimes { wasm, docker }
    }

    /// Which runtimes this worker offers.
    pub fn offered(&self) -> Vec<Runtime> {
        let mut out = vec![Runtime::Wasm];
        if self.docker.is_some() {
            out.push(Runtime::Docker);
        }
        out
    }

    /// Runs `task` with its program and stdin in hand.
    pub async fn run(
        &self,
        task: &TaskSpec,
        program: Bytes,
        stdin: Bytes,
    ) -> Result<RunOutput, RunError> {
        match task.runtime {
            Runtime::Wasm => {
                let wasm = self.wasm.clone();
                // If this future is dropped (the task was cancelled), the
                // guard stops the module within one epoch tick.
                let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let _stop_on_drop = StopOnDrop(cancel.clone());
                let sandbox_task = fogwire_sandbox::Task {
                    args: std::iter::once("program".to_owned())
                        .chain(task.args.iter().cloned())
                        .collect(),
                    env: task.env(),
                    stdin,
                    seed: task.seed(),
                    limits: fogwire_sandbox::Limits {
                        fuel: task.limits.fuel,
                        memory_bytes: usize::try_from(task.limits.memory_bytes)
                            .unwrap_or(usize::MAX),
                        wall_time: Duration::from_millis(task.limits.wall_time_ms),
                        output_bytes: usize::try_from(task.limits.output_bytes)
                            .unwrap_or(usize::MAX),
                    },
                    cancel: Some(cancel),
                };
                let outcome =
                    tokio::task::spawn_blocking(move || wasm.run(&program, &sandbox_task))
                        .await
                        .map_err(|e| RunError::Internal(e.to_string()))??;
                Ok(RunOutput {
                    status: exit_status(outcome.status),
                    stdout: outcome.stdout,
                    stderr: outcome.stderr,
                    fuel_used: outcome.fuel_used,
                    wall_time: outcome.wall_time,
                })
            }
            Runtime::Docker => {
                let Some(docker) = &self.docker else {
                    return Err(RunError::Unsupported("docker"));
                };
                docker
                    .clone()
                    .run(
                        program,
                        task.args.clone(),
                        task.env(),
                        stdin,
                        task.limits,
                        task.network,
                    )
                    .await
            }
        }
    }
}

/// Sets its flag when dropped.
struct StopOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn exit_status(status: Status) -> ExitStatus {
    match status {
        Status::Exited(code) => ExitStatus::Exited(code),
        Status::OutOfFuel => ExitStatus::OutOfFuel,
        Status::TimedOut => ExitStatus::TimedOut,
        Status::OutOfMemory => ExitStatus::OutOfMemory,
        Status::OutputTooLarge => ExitStatus::OutputTooLarge,
        Status::Trapped(why) => ExitStatus::Trapped(why),
    }
}
