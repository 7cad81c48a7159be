//! The Docker runtime against this machine's Docker daemon: an image made
//! from busybox runs with stdin, arguments and environment and no
//! network; a corrupt or oversized tarball is refused; a container that
//! ignores SIGTERM is killed at its wall time; a cancelled run's container
//! is removed. No container is ever left behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fogwire_compute::docker::{Docker, image_tarball};
use fogwire_compute::runtime::{ContainerRuntime, RunError};
use fogwire_compute_proto::{ExitStatus, Limits};

/// The daemon, or `None` (a failure under CI, where it must be there).
async fn docker(limit: usize) -> Option<Arc<Docker>> {
    let busybox = std::path::Path::new("/bin/busybox").exists();
    match (Docker::connect_with_limit(limit).await, busybox) {
        (Ok(docker), true) => Some(Arc::new(docker)),
        (result, _) => {
            let what = format!(
                "the Docker tests need the daemon ({:?}) and /bin/busybox (present: {busybox})",
                result.err()
            );
            fogwire_testkit::prerequisite(false, &what);
            None
        }
    }
}

fn image() -> Bytes {
    let busybox = std::fs::read("/bin/busybox").unwrap();
    Bytes::from(
        image_tarball(
            "fogwire-test/busybox:1",
            &["/bin/busybox"],
            &[("bin/busybox", 0o755, &busybox)],
        )
        .unwrap(),
    )
}

fn limits(wall_ms: u64) -> Limits {
    Limits {
        wall_time_ms: wall_ms,
        memory_bytes: 64 * 1024 * 1024,
        ..Limits::default()
    }
}

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

async fn no_leftovers(docker: &Docker) {
    fogwire_testkit::wait::until_async("every container removed", || async {
        docker.leftovers().await.unwrap().is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_container_task_runs_isolated_and_is_removed() {
    let Some(docker) = docker(1 << 30).await else {
        return;
    };
    let output = docker
        .clone()
        .run(
            image(),
            sh("tr a-z A-Z; echo $GREETING >&2; wget -q -T 2 -O- http://1.1.1.1 || echo offline; exit 3"),
            vec![("GREETING".into(), "hello".into())],
            Bytes::from_static(b"quiet\n"),
            limits(20_000),
            false,
        )
        .await
        .unwrap();
    assert_eq!(output.status, ExitStatus::Exited(3));
    assert_eq!(&output.stdout[..], b"QUIET\noffline\n");
    // (busybox's wget may also complain on stderr when it finds no
    // network.)
    assert!(output.stderr.starts_with(b"hello\n"), "{:?}", output.stderr);
    no_leftovers(&docker).await;
}

#[tokio::test]
async fn corrupt_and_oversized_tarballs_are_refused() {
    let Some(docker) = docker(4 * 1024 * 1024).await else {
        return;
    };
    let run = |tarball: Bytes| {
        docker.clone().run(
            tarball,
            Vec::new(),
            Vec::new(),
            Bytes::new(),
            limits(5_000),
            false,
        )
    };
    let corrupt = run(Bytes::from_static(b"this is not a tar archive"))
        .await
        .unwrap_err();
    assert!(
        matches!(&corrupt, RunError::Docker(m) if m.contains("cannot be loaded")),
        "{corrupt}"
    );
    let mut truncated = image().to_vec();
    truncated.truncate(truncated.len() / 2);
    let truncated = run(Bytes::from(truncated)).await.unwrap_err();
    assert!(
        matches!(&truncated, RunError::Docker(m) if m.contains("cannot be loaded")),
        "{truncated}"
    );
    let oversized = run(Bytes::from(vec![0u8; 5 * 1024 * 1024]))
        .await
        .unwrap_err();
    assert!(
        matches!(&oversized, RunError::Docker(m) if m.contains("at most")),
        "{oversized}"
    );
    no_leftovers(&docker).await;
}

#[tokio::test]
async fn a_container_ignoring_sigterm_is_killed_at_its_wall_time() {
    let Some(docker) = docker(1 << 30).await else {
        return;
    };
    // It would sleep for an hour: only the kill at its wall time (1.5 s)
    // ends it as timed out.
    let output = docker
        .clone()
        .run(
            image(),
            sh("trap '' TERM; echo started; sleep 3600"),
            Vec::new(),
            Bytes::new(),
            limits(1_500),
            false,
        )
        .await
        .unwrap();
    assert_eq!(output.status, ExitStatus::TimedOut);
    no_leftovers(&docker).await;
}

#[tokio::test]
async fn a_cancelled_run_leaves_no_container() {
    let Some(docker) = docker(1 << 30).await else {
        return;
    };
    let run = docker.clone().run(
        image(),
        sh("sleep 60"),
        Vec::new(),
        Bytes::new(),
        limits(60_000),
        false,
    );
    // The caller gives up after a moment.
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), run)
            .await
            .is_err()
    );
    no_leftovers(&docker).await;
}
