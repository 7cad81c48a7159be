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
use fogwire_node::{ComputeOptions, LedgerOptions, Node, NodeOptions};
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
    /// The same, paid for: escrow held, then result accepted and the
    /// escrow paid out (the hub keeps the ledger here).
    pub paid_latency_ms: f64,
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
    Paid,
}

fn failed(error: impl std::fmt::Display) -> BenchError {
    BenchError::Link(error.to_string())
}

struct Network {
    hub: Node,
    workers: Vec<Node>,
    _dir: tempfile::TempDir,
}

/// A hub and its workers; with `paid`, the hub also keeps a ledger (its
/// own account funded at genesis, its wallet registered) and charges.
async fn start(options: &Options, paid: bool) -> Result<Network, BenchError> {
    let dir = tempfile::tempdir().map_err(failed)?;
    let hub_key = Arc::new(Keypair::generate().map_err(failed)?);
    let hub_id = fogwire_ledger::proto::Id(*hub_key.node_id().as_bytes());
    let ledger = |serve: bool| LedgerOptions {
        serve: (paid && serve).then(|| fogwire_ledger::proto::Genesis {
            rules: fogwire_ledger::proto::Rules::new(hub_id, hub_id),
            accounts: vec![(hub_id, 1_000_000 * fogwire_ledger::proto::COIN)],
        }),
        node: paid.then_some(hub_key.node_id()),
    };
    let node = |key: Option<Arc<Keypair>>, compute: ComputeOptions, name: &str, serve: bool| {
        let key = match key {
            Some(key) => key,
            None => Arc::new(Keypair::generate().map_err(failed)?),
        };
        let mut node_options = NodeOptions::local(key);
        node_options.compute = compute;
        node_options.compute_dir = Some(dir.path().join(name));
        node_options.ledger = ledger(serve);
        node_options.ledger_path = Some(dir.path().join(format!("{name}.ledger.redb")));
        Ok::<_, BenchError>(node_options)
    };
    let hub = Node::start(node(
        Some(hub_key.clone()),
        ComputeOptions {
            worker: None,
            hub: Some(HubConfig::default()),
            docker: false,
            charge: paid,
            agent: None,
        },
        "hub",
        true,
    )?)
    .await
    .map_err(failed)?;
    if paid {
        let wallet = hub.ledger().wallet().clone();
        wallet
            .send(fogwire_ledger::proto::Op::WalletFund {
                amount: 1000 * fogwire_ledger::proto::COIN,
            })
            .await
            .map_err(failed)?;
        wallet
            .send(fogwire_ledger::proto::Op::WalletRegister)
            .await
            .map_err(failed)?;
    }
    let mut workers = Vec::new();
    for index in 0..options.workers {
        let worker = Node::start(node(
            None,
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
            false,
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

/// Pays for `spec` (an escrow held by the hub's node, which buys here) and
/// waits for its accepted result and settled payment; the time it took.
async fn paid_job(network: &Network, spec: &JobSpec, n: u64) -> Result<Duration, BenchError> {
    let service = network.hub.hub().ok_or_else(|| failed("no hub"))?;
    let fabric = network.hub.fabric();
    let wallet = network.hub.ledger().wallet().clone();
    let started = Instant::now();
    let mut escrow = [0u8; 32];
    escrow[..8].copy_from_slice(&n.to_be_bytes());
    escrow[8..16].copy_from_slice(&fogwire_compute::unix_ms().to_be_bytes());
    wallet
        .send(fogwire_ledger::proto::Op::Hold {
            id: fogwire_ledger::proto::Id(escrow),
            amount: fogwire_ledger::proto::COIN,
            arbiter: fogwire_ledger::proto::Id(*network.hub.node_id().as_bytes()),
            expires_ms: u64::MAX,
        })
        .await
        .map_err(failed)?;
    let id = client::submit_paid(
        fabric.as_ref(),
        network.hub.node_id(),
        spec,
        Some(Digest(escrow)),
    )
    .await
    .map_err(failed)?;
    service
        .wait(&id, Duration::from_secs(600))
        .await
        .ok_or_else(|| failed("the job vanished"))?;
    loop {
        let status = service
            .status(&id)
            .ok_or_else(|| failed("the job vanished"))?;
        if status.payment.is_some_and(|p| p.settled.is_some()) {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(failed("the payment was never settled"));
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    Ok(started.elapsed())
}

/// The trivial job (its module in the hub's store), and a job of four
/// tasks per worker to warm up with: every worker fetches and compiles
/// the module.
fn specs(
    network: &Network,
    module: &[u8],
    options: &Options,
) -> Result<(JobSpec, JobSpec), BenchError> {
    let program = network
        .hub
        .store()
        .import_bytes(module, None)
        .map_err(failed)?;
    let mut spec = JobSpec::wasm(Digest(*program.as_bytes()));
    spec.replication = Replication::Fixed(options.replicas);
    let mut warm = spec.clone();
    warm.split = (options.workers * 4) as u32;
    Ok((spec, warm))
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
    let (latencies, rates, paid_latency_ms) = runtime.block_on(async {
        let network = start(&options, false).await?;
        let (spec, warm) = specs(&network, &module, &options)?;
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
        // The same one-task jobs, paid for: escrow held, result accepted,
        // workers and hub paid out of it.
        progress(Step::Paid);
        let network = start(&options, true).await?;
        let (spec, warm) = specs(&network, &module, &options)?;
        paid_job(&network, &warm, 0).await?;
        let mut paid = Vec::new();
        for n in 0..(options.latency_jobs * options.rounds) as u64 {
            paid.push(paid_job(&network, &spec, n + 1).await?.as_secs_f64() * 1e3);
        }
        network.hub.shutdown().await;
        for worker in &network.workers {
            worker.shutdown().await;
        }
        Ok::<_, BenchError>((latencies, rates, median(&paid)))
    })?;
    Ok(Report {
        rounds: options.rounds,
        workers: options.workers,
        replicas: options.replicas,
        direct_us: median(&direct_times),
        latency_ms: median(&latencies),
        paid_latency_ms,
        tasks_per_sec: median(&rates),
        direct_runs_per_sec,
    })
}
