//! `fogwire job submit` from hand-started nodes: a WebAssembly job and a
//! Docker job run on workers elsewhere, replicated, and their outputs
//! come back; `job status|logs|result|list` and `workers` report them.

use std::path::Path;

use crate::harness::{TestNode, stderr, stdout, wait_until};

/// A hub (which also buys) and three workers, in a line: the hub reaches
/// the far workers by linking to them on demand.
fn network() -> (TestNode, Vec<TestNode>) {
    let hub = TestNode::start_with("compute", "hub = true");
    let workers: Vec<TestNode> = (0..3)
        .map(|_| TestNode::start_with("compute", "worker = true\nslots = 2"))
        .collect();
    let mut previous = &hub;
    for worker in &workers {
        let out = previous.cli(&["connect", &worker.peer_addr()]);
        assert!(out.status.success(), "{}", stderr(&out));
        previous = worker;
    }
    wait_until("the hub to know three workers", || {
        let out = hub.cli(&["workers", "--json"]);
        out.status.success()
            && serde_json::from_str::<Vec<serde_json::Value>>(&stdout(&out))
                .is_ok_and(|w| w.len() == 3)
    });
    (hub, workers)
}

/// The job id `job submit` printed.
fn job_in(text: &str) -> String {
    text.lines()
        .find_map(|line| line.strip_prefix("job      "))
        .unwrap()
        .to_owned()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}

#[test]
fn job_submit_runs_wasm_and_docker_jobs_on_workers_elsewhere() {
    let (hub, workers) = network();
    let scratch = tempfile::tempdir().unwrap();
    let program = write(
        scratch.path(),
        "upper.wat",
        fogwire_compute::guests::UPPER.as_bytes(),
    );
    let input = write(scratch.path(), "input.txt", b"hello, fog compute\n");
    let out = scratch.path().join("out.txt");

    // WebAssembly: three replicas, two tasks, outputs joined.
    let submitted = hub.cli(&[
        "job",
        "submit",
        &program,
        "--input",
        &input,
        "--replicas",
        "3",
        "--replication",
        "fixed",
        "--split",
        "2",
        "-o",
        out.to_str().unwrap(),
        "--join",
    ]);
    assert!(submitted.status.success(), "{}", stderr(&submitted));
    let text = stdout(&submitted);
    assert!(text.contains("state    done"), "{text}");
    assert!(text.contains("2 of 2 done"), "{text}");
    assert_eq!(
        std::fs::read(&out).unwrap(),
        b"HELLO, FOG COMPUTE\nHELLO, FOG COMPUTE\n"
    );
    let job = job_in(&text);

    // The other commands report it.
    let status = hub.cli(&["job", "status", &job[..12], "--json"]);
    let status: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    assert_eq!(status["state"], "done");
    assert_eq!(status["replicas_run"], 6);
    let logs = stdout(&hub.cli(&["job", "logs", &job[..12]]));
    assert!(logs.contains("accepted (3 of 3 agree"), "{logs}");
    // Then what the program printed, task by task.
    assert!(logs.contains("── task 1 stdout"), "{logs}");
    assert!(logs.contains("HELLO, FOG COMPUTE"), "{logs}");
    // The same, one JSON object each: the hub's lines, then the outputs.
    let as_json = stdout(&hub.cli(&["job", "logs", &job[..12], "--json"]));
    let objects: Vec<serde_json::Value> = as_json
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let hub_lines: Vec<&str> = objects
        .iter()
        .filter_map(|object| object["line"].as_str())
        .collect();
    assert!(!hub_lines.is_empty());
    assert!(logs.starts_with(&hub_lines.join("\n")), "{logs}");
    assert!(
        objects.iter().any(
            |object| object["stream"] == "stdout" && object["output"] == "HELLO, FOG COMPUTE\n"
        ),
        "{as_json}"
    );
    let result = hub.cli(&["job", "result", &job[..12], "--json"]);
    let result: serde_json::Value = serde_json::from_str(&stdout(&result)).unwrap();
    assert_eq!(result["outcomes"][0]["exit_code"], 0);
    let dir = scratch.path().join("outputs");
    let fetched = hub.cli(&["job", "result", &job[..12], "-o", dir.to_str().unwrap()]);
    assert!(fetched.status.success(), "{}", stderr(&fetched));
    assert_eq!(
        std::fs::read(dir.join("task-00001.out")).unwrap(),
        b"HELLO, FOG COMPUTE\n"
    );
    // stderr: the byte count, in hex.
    assert_eq!(
        std::fs::read(dir.join("task-00000.err")).unwrap(),
        b"00000013\n"
    );
    let list = stdout(&hub.cli(&["job", "list"]));
    assert!(list.contains(&fogwire_identity::short_form(&job)), "{list}");
    let table = stdout(&hub.cli(&["workers"]));
    assert_eq!(table.lines().count(), 4, "{table}");
    assert!(table.contains("wasm"), "{table}");

    // A program that fails: `job submit` says how and exits non-zero, the
    // job reads `failed`, and the failing task's stderr can be read.
    let failing = write(
        scratch.path(),
        "fails.wat",
        br#"(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "bad input\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 10))
    (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $proc_exit (i32.const 2))))"#,
    );
    let submitted = hub.cli(&["job", "submit", &failing, "--replicas", "2"]);
    assert!(!submitted.status.success(), "{}", stdout(&submitted));
    let said = stderr(&submitted);
    assert!(
        said.contains("failed: task 0: its program exited with 2 (2 of 2 replica(s) agree"),
        "{said}"
    );
    let text = stdout(&submitted);
    assert!(text.contains("state    failed"), "{text}");
    let job = job_in(&text);
    let status = hub.cli(&["job", "status", &job[..12], "--json"]);
    assert!(status.status.success(), "{}", stderr(&status));
    let status: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    assert_eq!(status["state"], "failed");
    assert_eq!(status["fewer_replicas"], 0);
    let dir = scratch.path().join("failed");
    let fetched = hub.cli(&["job", "result", &job[..12], "-o", dir.to_str().unwrap()]);
    assert!(fetched.status.success(), "{}", stderr(&fetched));
    assert_eq!(
        std::fs::read(dir.join("task-00000.err")).unwrap(),
        b"bad input\n"
    );

    // Docker: an image made of busybox, loaded from the store on each
    // worker, run with no network; every container removed after.
    if !fogwire_testkit::prerequisite(
        Path::new("/bin/busybox").exists(),
        "the Docker job needs /bin/busybox (apt-get install busybox-static)",
    ) {
        return;
    }
    let docker_workers = stdout(&hub.cli(&["workers", "--json"]));
    if !fogwire_testkit::prerequisite(
        docker_workers.contains("docker"),
        "the Docker job needs a Docker daemon the workers can reach",
    ) {
        return;
    }
    let image = fogwire_compute::docker::image_tarball(
        "fogwire-test/busybox:1",
        &["/bin/busybox"],
        &[(
            "bin/busybox",
            0o755,
            &std::fs::read("/bin/busybox").unwrap(),
        )],
    )
    .unwrap();
    let image = write(scratch.path(), "busybox.tar", &image);
    let out = scratch.path().join("docker.txt");
    let submitted = hub.cli(&[
        "job", "submit", &image, "--input", &input, "--arg", "sh", "--arg", "-c", "--arg",
        "tr a-z A-Z; echo task $FOGWIRE_TASK of $FOGWIRE_TASKS; wget -q -T 2 -O- http://1.1.1.1 || echo no network",
        "--replicas", "3", "--replication", "fixed", "-o", out.to_str().unwrap(), "--join",
    ]);
    assert!(submitted.status.success(), "{}", stderr(&submitted));
    assert_eq!(
        String::from_utf8(std::fs::read(&out).unwrap()).unwrap(),
        "HELLO, FOG COMPUTE\ntask 0 of 1\nno network\n"
    );
    let leftovers = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", "label=fogwire.task"])
        .output()
        .unwrap();
    assert_eq!(stdout(&leftovers).trim(), "", "containers left behind");
    drop(workers);
}
