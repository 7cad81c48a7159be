//! The Debian package and the Docker image, installed and run for real:
//! the package in a Debian 12 container booted with systemd (`apt install
//! ./fogwire_*.deb`, the service started, ready, reloaded and stopped),
//! and the image built from `packaging/docker` and run. No registry can
//! be reached here, so the Debian base image is made with debootstrap
//! (once per machine) and imported into Docker.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use crate::harness::{BINARY, wait_until};

const BASE_IMAGE: &str = "fogwire-test-debian:bookworm";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn ok(program: &str, args: &[&str]) -> String {
    let output = run(program, args);
    assert!(
        output.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn available() -> bool {
    let docker = run("docker", &["version"]).status.success();
    let tools = ["debootstrap", "dpkg-deb", "strip"].iter().all(|tool| {
        run("sh", &["-c", &format!("command -v {tool}")])
            .status
            .success()
    });
    fogwire_testkit::prerequisite(
        docker && tools,
        "a Docker daemon, debootstrap, dpkg-deb and strip (Debian packages)",
    )
}

/// The Debian 12 base image, made once per machine.
fn base_image() {
    static MADE: Mutex<bool> = Mutex::new(false);
    let mut made = MADE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if *made
        || run("docker", &["image", "inspect", BASE_IMAGE])
            .status
            .success()
    {
        *made = true;
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let target = root.path().join("root");
    ok(
        "debootstrap",
        &[
            "--variant=minbase",
            "--include=systemd,systemd-sysv,dbus,adduser,passwd",
            "bookworm",
            target.to_str().unwrap(),
            "http://deb.debian.org/debian",
        ],
    );
    ok(
        "sh",
        &[
            "-c",
            &format!(
                "tar -C '{}' -c . | docker import - {BASE_IMAGE}",
                target.display()
            ),
        ],
    );
    *made = true;
}

/// A container, removed when dropped.
struct Container(String);

impl Container {
    fn exec(&self, args: &[&str]) -> Output {
        let mut all = vec!["exec", self.0.as_str()];
        all.extend_from_slice(args);
        run("docker", &all)
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.exec(args);
        assert!(
            output.status.success(),
            "{args:?} in the container: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = run("docker", &["rm", "-f", &self.0]);
    }
}

#[test]
fn the_debian_package_installs_and_systemd_runs_the_node() {
    if !available() {
        return;
    }
    base_image();
    let out = tempfile::tempdir().unwrap();
    let built = Command::new(repo().join("packaging/build-deb"))
        .args([BINARY, out.path().to_str().unwrap()])
        .env("FOGWIRE_DEB_FAST", "1")
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let deb = PathBuf::from(String::from_utf8_lossy(&built.stdout).trim());
    let name = deb.file_name().unwrap().to_str().unwrap().to_owned();
    assert!(
        name.starts_with("fogwire_") && name.ends_with(".deb"),
        "{name}"
    );

    // A Debian 12 machine booted with systemd.
    let container = Container(format!("fogwire-deb-test-{}", std::process::id()));
    ok(
        "docker",
        &[
            "run",
            "-d",
            "--name",
            &container.0,
            "-v",
            "/sys/fs/cgroup:/sys/fs/cgroup:ro",
            "--tmpfs",
            "/run",
            "--tmpfs",
            "/run/lock",
            BASE_IMAGE,
            "/sbin/init",
        ],
    );
    wait_until("systemd to boot in the container", || {
        let state = container.exec(&["systemctl", "is-system-running"]);
        let state = String::from_utf8_lossy(&state.stdout);
        state.starts_with("running") || state.starts_with("degraded")
    });

    // apt install ./fogwire_*.deb: the user, the configuration, the
    // service enabled and started, ready when its API answers.
    ok(
        "docker",
        &[
            "cp",
            deb.to_str().unwrap(),
            &format!("{}:/root/", container.0),
        ],
    );
    container.ok(&["apt-get", "install", "-y", &format!("/root/{name}")]);
    wait_until("the service to be active (it said READY=1)", || {
        container
            .exec(&["systemctl", "is-active", "fogwire"])
            .status
            .success()
    });
    let status = container.ok(&[
        "runuser",
        "-u",
        "fogwire",
        "--",
        "env",
        "FOGWIRE_HOME=/var/lib/fogwire",
        "fogwire",
        "status",
        "--json",
    ]);
    let status: fogwire_api::Status = serde_json::from_str(&status).unwrap();
    assert_eq!(status.data_dir.as_deref(), Some("/var/lib/fogwire/data"));
    let key_mode = container.ok(&["stat", "-c", "%a %U", "/var/lib/fogwire/data/node.key"]);
    assert_eq!(key_mode.trim(), "600 fogwire");
    for installed in [
        "/usr/share/man/man1/fogwire.1.gz",
        "/usr/share/bash-completion/completions/fogwire",
    ] {
        container.ok(&["test", "-s", installed]);
    }

    // systemctl reload re-reads the file; stop stops it cleanly.
    container.ok(&["systemctl", "reload", "fogwire"]);
    wait_until("the reload in the journal", || {
        String::from_utf8_lossy(
            &container
                .exec(&["journalctl", "-u", "fogwire", "--no-pager"])
                .stdout,
        )
        .contains("SIGHUP: configuration reloaded")
    });
    container.ok(&["systemctl", "stop", "fogwire"]);
    assert!(
        !container
            .exec(&["systemctl", "is-active", "fogwire"])
            .status
            .success()
    );
    let journal = container.ok(&["journalctl", "-u", "fogwire", "--no-pager"]);
    assert!(journal.contains("stopped cleanly"), "{journal}");

    // Removed, the key stays: it is the node's identity and its coins.
    container.ok(&["apt-get", "purge", "-y", "fogwire"]);
    assert!(
        !container
            .exec(&["test", "-e", "/usr/bin/fogwire"])
            .status
            .success()
    );
    container.ok(&["test", "-s", "/var/lib/fogwire/data/node.key"]);
}

#[test]
fn the_docker_image_runs_a_node_in_its_volume() {
    if !available() {
        return;
    }
    base_image();
    let context = tempfile::tempdir().unwrap();
    for file in ["Dockerfile", "entrypoint.sh"] {
        std::fs::copy(
            repo().join("packaging/docker").join(file),
            context.path().join(file),
        )
        .unwrap();
    }
    ok(
        "strip",
        &[
            "-o",
            context.path().join("fogwire").to_str().unwrap(),
            BINARY,
        ],
    );
    let image = format!("fogwire-test-image:{}", std::process::id());
    ok(
        "docker",
        &[
            "build",
            "-q",
            "-t",
            &image,
            "--build-arg",
            &format!("BASE={BASE_IMAGE}"),
            context.path().to_str().unwrap(),
        ],
    );
    let container = Container(format!("fogwire-image-test-{}", std::process::id()));
    ok("docker", &["run", "-d", "--name", &container.0, &image]);
    let status = || -> Option<fogwire_api::Status> {
        let output = container.exec(&["fogwire", "status", "--json"]);
        serde_json::from_slice(&output.stdout).ok()
    };
    let first = crate::harness::wait_for("the node in the container to answer", status);
    // The key is in the volume: a restarted container is the same node.
    ok("docker", &["restart", &container.0]);
    let again = crate::harness::wait_for("the node to answer again", status);
    assert_eq!(again.node_id, first.node_id);
    ok("docker", &["stop", &container.0]);
    let code = ok(
        "docker",
        &["inspect", &container.0, "--format", "{{.State.ExitCode}}"],
    );
    assert_eq!(code.trim(), "0");
    let logs = run("docker", &["logs", &container.0]);
    assert!(String::from_utf8_lossy(&logs.stderr).contains("stopped cleanly"));
    drop(container);
    let _ = run("docker", &["rmi", &image]);
}
