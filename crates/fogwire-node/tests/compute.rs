//! Jobs across real nodes over real links: a buyer submits through a hub
//! that is not every worker's neighbour, four workers (one a cheat) run
//! each task, the cheat is caught on every task, and the accepted output is exactly
//! what running the module directly gives.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use fogwire_compute::hub::HubConfig;
use fogwire_compute::worker::WorkerConfig;
use fogwire_compute::{client, guests};
use fogwire_compute_proto::scheduler::JobState;
use fogwire_compute_proto::{Digest, JobSpec, Replication};
use fogwire_node::{ComputeOptions, Node};
use fogwire_testkit::nodes;

async fn node(compute: ComputeOptions, dir: Option<&std::path::Path>) -> Node {
    let mut options = nodes::options();
    options.compute = compute;
    options.compute_dir = dir.map(|d| d.to_owned());
    nodes::start(options).await
}

fn worker(cheat: bool) -> ComputeOptions {
    ComputeOptions {
        worker: Some(WorkerConfig {
            slots: 2,
            cheat,
            ..WorkerConfig::default()
        }),
        hub: None,
        docker: false,
        charge: false,
        agent: None,
    }
}

fn hub() -> ComputeOptions {
    ComputeOptions {
        worker: None,
        hub: Some(HubConfig::default()),
        docker: false,
        charge: false,
        agent: None,
    }
}

/// What the module writes when run directly, for task `index` of `count`.
fn direct(module: &[u8], args: &[&str], index: u32, count: u32) -> Vec<u8> {
    let runtime = fogwire_sandbox::WasmRuntime::new().unwrap();
    let task = fogwire_sandbox::Task {
        args: std::iter::once("program")
            .chain(args.iter().copied())
            .map(str::to_owned)
            .collect(),
        env: vec![
            ("FOGWIRE_TASK".into(), index.to_string()),
            ("FOGWIRE_TASKS".into(), count.to_string()),
        ],
        ..Default::default()
    };
    runtime.run(module, &task).unwrap().stdout.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_split_job_catches_the_cheat_and_returns_the_true_image() {
    let hub_dir = tempfile::tempdir().unwrap();
    let hub = node(hub(), Some(hub_dir.path())).await;
    let honest = [
        node(worker(false), None).await,
        node(worker(false), None).await,
        node(worker(false), None).await,
    ];
    let cheat = node(worker(true), None).await;
    let buyer = node(ComputeOptions::default(), None).await;
    // A line: buyer – hub – w0 – w1 – w2 – cheat. The hub reaches the far
    // workers by linking to them on demand.
    buyer.connect(hub.peer_addr()).await.unwrap();
    hub.connect(honest[0].peer_addr()).await.unwrap();
    honest[0].connect(honest[1].peer_addr()).await.unwrap();
    honest[1].connect(honest[2].peer_addr()).await.unwrap();
    honest[2].connect(cheat.peer_addr()).await.unwrap();
    nodes::until_located(&hub, fogwire_compute::WORKER, 4).await;

    let module = guests::compile(guests::MANDELBROT).unwrap();
    let program = buyer.store().import_bytes(&module, None).unwrap();
    let mut spec = JobSpec::wasm(Digest(*program.as_bytes()));
    spec.args = vec!["96".into(), "64".into(), "60".into()];
    spec.split = 4;
    // Every task on all four workers: the cheat runs each one, and the
    // three honest replicas outvote it.
    spec.replication = Replication::Fixed(4);
    let fabric = buyer.fabric();
    let hub_id = client::choose_hub(fabric.as_ref(), None).await.unwrap();
    assert_eq!(hub_id, hub.node_id());
    let job = client::submit(fabric.as_ref(), hub_id, &spec)
        .await
        .unwrap();

    let started = Instant::now();
    let status = loop {
        let status = client::status(fabric.as_ref(), hub_id, &job.to_string())
            .await
            .unwrap();
        if status.state.is_ended() && status.output.is_some() {
            break status;
        }
        assert!(
            !status.state.is_ended() || status.state == JobState::Done,
            "{status:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "job never ended: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.state, JobState::Done);
    assert_eq!((status.tasks, status.tasks_done), (4, 4));

    // The outputs, fetched by the buyer from the hub, joined in order, are
    // the image the module makes when run directly.
    let result = client::result(fabric.as_ref(), hub_id, &job.to_string())
        .await
        .unwrap();
    let mut image = Vec::new();
    let mut expected = Vec::new();
    for (index, outcome) in result.outcomes.iter().enumerate() {
        let outcome = outcome.as_ref().unwrap();
        fabric.fetch(outcome.stdout, vec![hub_id]).await.unwrap();
        image.extend(
            buyer
                .store()
                .read_to_vec(&fogwire_compute::store_hash(&outcome.stdout), 1 << 20)
                .unwrap(),
        );
        expected.extend(tokio::task::block_in_place(|| {
            direct(&module, &["96", "64", "60"], index as u32, 4)
        }));
    }
    assert!(image.starts_with(b"P5\n96 64\n255\n"));
    assert_eq!(image.len(), b"P5\n96 64\n255\n".len() + 96 * 64);
    assert_eq!(image, expected);

    // The cheat ran a replica of every task and was caught each time.
    assert_eq!(status.dissents, 4, "{status:?}");
    let workers = client::workers(fabric.as_ref(), hub_id).await.unwrap();
    assert_eq!(workers.len(), 4);
    let cheat_record = workers
        .iter()
        .find(|w| w.id == Digest(*cheat.node_id().as_bytes()))
        .unwrap();
    assert_eq!(cheat_record.reputation.agreed, 0);
    assert_eq!(cheat_record.reputation.dissented, 4);
    for worker in workers.iter().filter(|w| w.id != cheat_record.id) {
        assert_eq!(worker.reputation.dissented, 0);
    }
    assert!(cheat_record.resources.as_ref().unwrap().cores >= 1);
    let (lines, _) = client::logs(fabric.as_ref(), hub_id, &job.to_string(), 0)
        .await
        .unwrap();
    eprintln!("{status:?}\n{}", lines.join("\n"));
    assert!(lines.iter().any(|l| l.starts_with("done")), "{lines:?}");
    let caught = lines.iter().filter(|l| l.contains("caught")).count();
    assert_eq!(caught, 4, "{lines:?}");

    for node in [&buyer, &hub, &cheat] {
        node.shutdown().await;
    }
    for node in &honest {
        node.shutdown().await;
    }
}
