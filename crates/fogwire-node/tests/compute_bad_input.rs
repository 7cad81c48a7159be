//! Bad input to compute, each ending in a clear status with no worker or
//! hub crash: modules that loop, allocate without bound, trap, or reach
//! for files and sockets; malformed calls to the worker and hub services;
//! a worker that vanishes mid-task; a hub that restarts mid-job.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use fogwire_compute::hub::{HubConfig, JobStatus};
use fogwire_compute::worker::WorkerConfig;
use fogwire_compute::{HUB, WORKER, client, guests, method};
use fogwire_compute_proto::scheduler::JobState;
use fogwire_compute_proto::{Digest, ExitStatus, JobSpec, Replication};
use fogwire_identity::Keypair;
use fogwire_node::{ComputeOptions, Node, NodeOptions};
use fogwire_rpc_proto::{Value, code};
use fogwire_testkit::{nodes, wait};

struct Net {
    hub: Node,
    workers: Vec<Node>,
}

fn hub_options(keypair: Arc<Keypair>, dir: &std::path::Path) -> NodeOptions {
    let mut options = NodeOptions::local(keypair);
    options.compute = ComputeOptions {
        worker: None,
        hub: Some(HubConfig::default()),
        docker: false,
        charge: false,
        agent: None,
    };
    options.compute_dir = Some(dir.join("compute"));
    options.store_dir = Some(dir.join("store"));
    options
}

async fn worker() -> Node {
    let mut options = nodes::options();
    options.compute = ComputeOptions {
        worker: Some(WorkerConfig {
            slots: 2,
            ..WorkerConfig::default()
        }),
        hub: None,
        docker: false,
        charge: false,
        agent: None,
    };
    nodes::start(options).await
}

/// A hub and `count` workers, each worker keeping a link to the hub.
async fn net(count: usize, dir: &std::path::Path) -> Net {
    net_with(count, dir, nodes::keypair()).await
}

async fn net_with(count: usize, dir: &std::path::Path, hub_key: Arc<Keypair>) -> Net {
    let hub = Node::start(hub_options(hub_key, dir)).await.unwrap();
    let mut workers = Vec::new();
    for _ in 0..count {
        let worker = worker().await;
        worker.connect(hub.peer_addr()).await.unwrap();
        workers.push(worker);
    }
    until_workers(&hub, count).await;
    Net { hub, workers }
}

async fn until_workers(hub: &Node, count: usize) {
    wait::until(&format!("{count} workers at the hub"), || {
        hub.hub().unwrap().workers().len() >= count
    })
    .await;
}

fn module(body: &str) -> Vec<u8> {
    guests::compile(&format!(
        r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_accept"
    (func $sock_accept (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "/etc/passwd")
  (func (export "_start") {body}))"#
    ))
    .unwrap()
}

async fn submit(hub: &Node, program: &[u8], change: impl FnOnce(&mut JobSpec)) -> Digest {
    let hash = hub.store().import_bytes(program, None).unwrap();
    let mut spec = JobSpec::wasm(Digest(*hash.as_bytes()));
    spec.replication = Replication::Fixed(3);
    change(&mut spec);
    let fabric = hub.fabric();
    client::submit(fabric.as_ref(), hub.node_id(), &spec)
        .await
        .unwrap()
        .0
}

async fn finished(hub: &Node, job: Digest) -> JobStatus {
    hub.hub()
        .unwrap()
        .wait(&fogwire_compute_proto::JobId(job), Duration::from_secs(120))
        .await
        .unwrap()
}

fn outcome_status(hub: &Node, job: Digest) -> ExitStatus {
    let result = hub
        .hub()
        .unwrap()
        .result(&fogwire_compute_proto::JobId(job))
        .unwrap();
    result.outcomes[0].as_ref().unwrap().status.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_modules_end_in_clear_statuses_and_workers_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    let net = net(3, dir.path()).await;
    let cases: Vec<(&str, String, ExitStatus)> = vec![
        (
            "loops forever",
            "(loop $forever (br $forever))".into(),
            ExitStatus::OutOfFuel,
        ),
        (
            // Fuel for a long while, wall time for 300 ms.
            "runs past its wall time",
            "(loop $forever (br $forever))".into(),
            ExitStatus::TimedOut,
        ),
        (
            "allocates without bound",
            "(loop $more (if (i32.eq (memory.grow (i32.const 16)) (i32.const -1)) (then unreachable)) (br $more))"
                .into(),
            ExitStatus::OutOfMemory,
        ),
        ("traps", "unreachable".into(), ExitStatus::Trapped(String::new())),
        (
            // path_open on fd 3, the first preopen were there one: EBADF.
            "opens a file",
            "(call $proc_exit (call $path_open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 11) (i32.const 0) (i64.const 1) (i64.const 1) (i32.const 0) (i32.const 64)))".into(),
            ExitStatus::Exited(8),
        ),
        (
            // sock_accept on fd 3, a listening socket were there one.
            "accepts on a socket",
            "(call $proc_exit (call $sock_accept (i32.const 3) (i32.const 0) (i32.const 64)))"
                .into(),
            ExitStatus::Exited(8),
        ),
    ];
    for (what, body, expected) in cases {
        let job = submit(&net.hub, &module(&body), |spec| {
            spec.limits.fuel = 50_000_000;
            spec.limits.memory_bytes = 8 * 1024 * 1024;
            if expected == ExitStatus::TimedOut {
                spec.limits.fuel = 1_000_000_000_000;
                spec.limits.wall_time_ms = 300;
            }
        })
        .await;
        let status = finished(&net.hub, job).await;
        // Every replica ended the same way, so the outcome is agreed on;
        // the program failed, so the job did too, saying how.
        let JobState::Failed(why) = &status.state else {
            panic!("{what}: a failed program must fail its job: {status:?}");
        };
        let how = match &expected {
            ExitStatus::Trapped(_) => "its program trapped".to_owned(),
            other => format!("its program {other}"),
        };
        assert!(why.contains(&how), "{what}: {why}");
        assert!(why.contains("3 of 3 replica(s) agree"), "{what}: {why}");
        assert_eq!(status.tasks_done, 1, "{what}: the outcome is kept");
        let got = outcome_status(&net.hub, job);
        match (&expected, &got) {
            (ExitStatus::Trapped(_), ExitStatus::Trapped(why)) => {
                assert!(why.contains("unreachable"), "{what}: {why}")
            }
            _ => assert_eq!(got, expected, "{what}"),
        }
    }
    // The workers are all still there and still work.
    let job = submit(&net.hub, &guests::compile(guests::HELLO).unwrap(), |_| {}).await;
    assert_eq!(finished(&net.hub, job).await.state, JobState::Done);
    assert_eq!(net.hub.hub().unwrap().workers().len(), 3);
    // A module that is not WebAssembly: every worker refuses it, and the
    // job fails saying why, without waiting for its deadline (a day away:
    // `finished` gives up after two minutes).
    let job = submit(&net.hub, b"not a module at all", |spec| {
        spec.deadline_ms = fogwire_compute_proto::spec::DEADLINE_MS_MAX;
    })
    .await;
    let status = finished(&net.hub, job).await;
    match &status.state {
        JobState::Failed(why) => assert!(why.contains("not a valid WebAssembly module"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_calls_are_refused_and_the_services_keep_serving() {
    let dir = tempfile::tempdir().unwrap();
    let net = net(1, dir.path()).await;
    let fabric = net.hub.fabric();
    let worker = net.workers[0].node_id();
    let timeout = Duration::from_secs(10);
    let garbage = [
        vec![],
        vec![Value::from(7u64)],
        vec![Value::Map(vec![(Value::from("job"), Value::from("x"))])],
        vec![Value::Binary(vec![0; 31])],
    ];
    for args in &garbage {
        for method in [method::RUN, method::REVEAL, method::CANCEL_TASK] {
            let error = fabric
                .call(worker, WORKER, method, args.clone(), timeout)
                .await
                .unwrap_err();
            assert_eq!(
                error.code(),
                Some(code::BAD_ARGS),
                "{method} {args:?}: {error}"
            );
        }
        for method in [
            method::SUBMIT,
            method::STATUS,
            method::RESULT,
            method::LOGS,
            method::CANCEL,
        ] {
            let error = fabric
                .call(net.hub.node_id(), HUB, method, args.clone(), timeout)
                .await
                .unwrap_err();
            assert!(
                matches!(error.code(), Some(code::BAD_ARGS) | Some(code::UNKNOWN)),
                "{method} {args:?}: {error}"
            );
        }
    }
    // A job naming no real job, and a reveal of a task never run.
    let unknown = client::status(fabric.as_ref(), net.hub.node_id(), "00ff")
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Some(code::UNKNOWN));
    let id =
        fogwire_compute_proto::to_value(&fogwire_compute_proto::JobId(Digest::of(b"x"))).unwrap();
    let error = fabric
        .call(
            worker,
            WORKER,
            method::REVEAL,
            vec![id, Value::from(0u64)],
            timeout,
        )
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(code::UNKNOWN));
    // Both still serve.
    let job = submit(&net.hub, &guests::compile(guests::HELLO).unwrap(), |spec| {
        spec.replication = Replication::Trust;
    })
    .await;
    assert_eq!(finished(&net.hub, job).await.state, JobState::Done);
}

/// A task that takes a while: counts to `n`.
fn slow_module() -> Vec<u8> {
    module(
        "(local $i i32) (loop $count (local.set $i (i32.add (local.get $i) (i32.const 1))) (br_if $count (i32.lt_u (local.get $i) (i32.const 300000000))))",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_vanishes_mid_task_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = net(4, dir.path()).await;
    let job = submit(&net.hub, &slow_module(), |_| {}).await;
    // Once replicas run, one of their workers goes away.
    let hub = net.hub.hub().unwrap().clone();
    let victim = wait::until_some("a worker running a replica", || {
        let busy = hub.workers().into_iter().find(|w| w.running > 0);
        busy.map(|busy| busy.id)
    })
    .await;
    let index = net
        .workers
        .iter()
        .position(|w| w.node_id().as_bytes() == victim.as_bytes())
        .unwrap();
    let gone = net.workers.remove(index);
    gone.shutdown().await;
    let status = finished(&net.hub, job).await;
    assert_eq!(status.state, JobState::Done, "{status:?}");
    let (lines, _) = hub.logs(&fogwire_compute_proto::JobId(job), 0).unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("could not run it") || l.contains("silent")),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_that_restarts_mid_job_resumes_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = nodes::keypair();
    let net = net_with(3, dir.path(), key.clone()).await;
    let job = submit(&net.hub, &slow_module(), |spec| {
        spec.split = 2;
    })
    .await;
    // Mid-job: its replicas are placed and running, none accepted.
    let id = fogwire_compute_proto::JobId(job);
    wait::until("the job's replicas to be running", || {
        net.hub.hub().unwrap().status(&id).is_some_and(|status| {
            status.replicas_run == 6 && status.tasks_done == 0 && !status.state.is_ended()
        })
    })
    .await;
    let hub_addr = net.hub.local_addr();
    net.hub.shutdown().await;
    drop(net.hub);
    // The same node comes back on the same address, with its key and its
    // data; the workers redial it.
    let mut options = hub_options(key, dir.path());
    options.link_listen = hub_addr;
    let hub = Node::start(options).await.unwrap();
    until_workers(&hub, 3).await;
    let status = finished(&hub, job).await;
    assert_eq!(status.state, JobState::Done, "{status:?}");
    let (lines, _) = hub
        .hub()
        .unwrap()
        .logs(&fogwire_compute_proto::JobId(job), 0)
        .unwrap();
    assert!(lines.iter().any(|l| l.contains("restarted")), "{lines:?}");
    hub.shutdown().await;
    for worker in &net.workers {
        worker.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_worker_reports_what_it_was_doing() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Node::start(hub_options(nodes::keypair(), dir.path()))
        .await
        .unwrap();
    let worker_dir = dir.path().join("worker");
    let key = nodes::keypair();
    let start_worker = |key: Arc<Keypair>| {
        let mut options = NodeOptions::local(key);
        options.compute = ComputeOptions {
            worker: Some(WorkerConfig::default()),
            hub: None,
            docker: false,
            charge: false,
            agent: None,
        };
        options.compute_dir = Some(worker_dir.join("compute"));
        options.store_dir = Some(worker_dir.join("store"));
        Node::start(options)
    };
    let worker = start_worker(key.clone()).await.unwrap();
    worker.connect(hub.peer_addr()).await.unwrap();
    until_workers(&hub, 1).await;
    // One task finished, one cut off by the restart.
    let done = submit(&hub, &guests::compile(guests::HELLO).unwrap(), |spec| {
        spec.replication = Replication::Trust;
    })
    .await;
    assert_eq!(finished(&hub, done).await.state, JobState::Done);
    let slow = submit(&hub, &slow_module(), |spec| {
        spec.replication = Replication::Trust;
    })
    .await;
    wait::until("the worker to hold both tasks", || {
        worker.worker().unwrap().tasks().len() >= 2
    })
    .await;
    worker.shutdown().await;
    drop(worker);
    let worker = start_worker(key).await.unwrap();
    let tasks = worker.worker().unwrap().tasks();
    let state_of = |job: Digest| {
        tasks
            .iter()
            .find(|t| t.job.0 == job)
            .map(|t| t.state.clone())
            .unwrap()
    };
    use fogwire_compute::worker::TaskRecordState;
    assert!(matches!(state_of(done), TaskRecordState::Done { .. }));
    assert!(
        matches!(
            state_of(slow),
            TaskRecordState::Interrupted | TaskRecordState::Failed(_) | TaskRecordState::Cancelled
        ),
        "{:?}",
        state_of(slow)
    );
    // It answers `tasks` over RPC too, and the hub's job still finishes
    // once the worker is back.
    let fabric = hub.fabric();
    worker.connect(hub.peer_addr()).await.unwrap();
    wait::until("the hub linked to the worker again", || {
        hub.link(&worker.node_id()).is_some()
    })
    .await;
    // The link is in the hub's table a moment before its RPC is handed
    // it: until then a call says NotLinked.
    let listed = wait::until_ok("the worker to answer `tasks` over RPC", || {
        fabric.call(
            worker.node_id(),
            WORKER,
            method::TASKS,
            Vec::new(),
            Duration::from_secs(10),
        )
    })
    .await;
    assert_eq!(listed[0][0].as_array().unwrap().len(), 2);
    let status = finished(&hub, slow).await;
    assert_eq!(status.state, JobState::Done, "{status:?}");
    worker.shutdown().await;
    hub.shutdown().await;
}
