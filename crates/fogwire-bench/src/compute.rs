//! Jobs on real nodes over real links on loopback: the time from
//! submitting a trivial task with 3 replicas to its accepted result, and
//! tasks per second across a hub and seven workers — each beside running
//! the same module directly in wasmtime, in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fogwire_compute::hub::HubConfig;
use fogwire_compute::worker::WorkerConfig;
use fogwire_compute::{client, guests};
use fogwire_compute_proto::scheduler::JobState;
use fogwire_compute_proto::{Digest, JobSpec, Replication};
use fogwire_identity::Keypair;
use fogwire_node::{ComputeOptions, Node, NodeOptions};
use serde::Serialize;

use crate::link::{BenchError, median};

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// Workers besides the hub.
    pub workers: usize,
    /// Tasks each worker runs at once.
    pub slots: u32,
    /// Replicas per task.
    pub replicas: u8,
    /// Jobs of one trivial task timed one after another, per round.
    pub latency_jobs: usize,
    /// Tasks of the throughput job, per round.
    pub tasks: u32,
    pub rounds: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            workers: 7,
            slots: 4,
            replicas: 3,
            latency_jobs: 50,
            tasks: 2000,
            rounds: 3,
        }
    }
}

/// Medians over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub rounds: usize,
    pub workers: usize,
    pub replicas: u8,
    /// Running the trivial module once, directly in wasmtime (compiled
    /// module cached, as a worker has it).
    pub direct_us: f64,
    /// Submit to accepted (and stored) result, one trivial task.
    pub latency_ms: f64,
    /// Tasks accepted per second, each run on `replicas` workers.
    pub tasks_per_sec: f64,
    /// Runs per second directly in wasmtime, one after another on one
    /// thread.
    pub direct_runs_per_sec: f64,
}

/// Which step is being measured, for progress output.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    Starting,
    Direct,
    Latency { round: usize },
    Throughput { round: usize },
}

fn failed(error: impl std::fmt::Display) -> BenchError {
    BenchError::Link(error.to_string())
}

struct Network {
    hub: Node,
    workers: Vec<Node>,
    _dir: tempfile::TempDir,
}

async fn start(options: &Options) -> Result<Network, BenchError> {
    let dir = tempfile::tempdir().map_err(failed)?;
    let node = |compute: ComputeOptions, name: &str| {
        let mut node_options = NodeOptions::local(Arc::new(Keypair::generate().map_err(failed)?));
        node_options.compute = compute;
        node_options.compute_dir = Some(dir.path().join(name));
        Ok::<_, BenchError>(node_options)
    };
    let hub = Node::start(node(
        ComputeOptions {
            worker: None,
            hub: Some(HubConfig::default()),
            docker: false,
            charge: false,
            agent: None,
        },
        "hub",
    )?)
    .await
    .map_err(failed)?;
    let mut workers = Vec::new();
    for index in 0..options.workers {
        let worker = Node::start(node(
            ComputeOptions {
                worker: Some(WorkerConfig {
                    slots: options.slots,
                    ..WorkerConfig::default()
                }),
                hub: None,
                docker: false,
                charge: false,
                agent: None,
            },
            &format!("worker{index}"),
        )?)
        .await
        .map_err(failed)?;
        hub.connect(worker.peer_addr()).await.map_err(failed)?;
        workers.push(worker);
    }
    let service = hub.hub().ok_or_else(|| failed("no hub"))?;
    let started = Instant::now();
    while service.workers().len() < options.workers {
        if started.elapsed() > Duration::from_secs(30) {
            return Err(failed("the hub did not find its workers"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Network {
        hub,
        workers,
        _dir: dir,
    })
}

/// Submits `spec` and waits for its accepted result; the time it took.
async fn job(network: &Network, spec: &JobSpec) -> Result<Duration, BenchError> {
    let service = network.hub.hub().ok_or_else(|| failed("no hub"))?;
    let fabric = network.hub.fabric();
    let started = Instant::now();
    let id = client::submit(fabric.as_ref(), network.hub.node_id(), spec)
        .await
        .map_err(failed)?;
    let status = service
        .wait(&id, Duration::from_secs(600))
        .await
        .ok_or_else(|| failed("the job vanished"))?;
    let took = started.elapsed();
    if status.state != JobState::Done {
        return Err(failed(format!("the job ended {:?}", status.state)));
    }
    Ok(took)
}

/// Runs the benchmark, telling `progress` each step.
pub fn run(options: &Options, progress: &mut dyn FnMut(Step)) -> Result<Report, BenchError> {
    let module = guests::compile(guests::HELLO).map_err(failed)?;
    progress(Step::Direct);
    let direct = fogwire_sandbox::WasmRuntime::new().map_err(failed)?;
    let task = fogwire_sandbox::Task {
        args: vec!["program".to_owned()],
        ..Default::default()
    };
    direct.run(&module, &task).map_err(failed)?;
    let mut direct_times = Vec::new();
    let runs_started = Instant::now();
    for _ in 0..2000 {
        let started = Instant::now();
        direct.run(&module, &task).map_err(failed)?;
        direct_times.push(started.elapsed().as_secs_f64() * 1e6);
    }
    let direct_runs_per_sec = 2000.0 / runs_started.elapsed().as_secs_f64();
    drop(direct);

    progress(Step::Starting);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(failed)?;
    let options = options.clone();
    let (latencies, rates) = runtime.block_on(async {
        let network = start(&options).await?;
        let program = network
            .hub
            .store()
            .import_bytes(&module, None)
            .map_err(failed)?;
        let mut spec = JobSpec::wasm(Digest(*program.as_bytes()));
        spec.replication = Replication::Fixed(options.replicas);
        // Warm up: every worker fetches and compiles the module.
        let mut warm = spec.clone();
        warm.split = (options.workers * 4) as u32;
        job(&network, &warm).await?;
        let mut latencies = Vec::new();
        let mut rates = Vec::new();
        for round in 0..options.rounds {
            progress(Step::Latency { round });
            let mut times = Vec::new();
            for _ in 0..options.latency_jobs {
                times.push(job(&network, &spec).await?.as_secs_f64() * 1e3);
            }
            latencies.push(median(&times));
            progress(Step::Throughput { round });
            let mut many = spec.clone();
            many.split = options.tasks;
            let took = job(&network, &many).await?;
            rates.push(f64::from(options.tasks) / took.as_secs_f64());
        }
        network.hub.shutdown().await;
        for worker in &network.workers {
            worker.shutdown().await;
        }
        Ok::<_, BenchError>((latencies, rates))
    })?;
    Ok(Report {
        rounds: options.rounds,
        workers: options.workers,
        replicas: options.replicas,
        direct_us: median(&direct_times),
        latency_ms: median(&latencies),
        tasks_per_sec: median(&rates),
        direct_runs_per_sec,
    })
}
