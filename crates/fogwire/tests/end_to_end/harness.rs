//! Starting `fogwire node` processes and talking to them.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use fogwire_api::{Peer, Status};
use fogwire_identity::{Keypair, NodeId};
use fogwire_link::LinkHandle;
use fogwire_link::proto::{Config, LinkIdentity};

pub const BINARY: &str = env!("CARGO_BIN_EXE_fogwire");

pub use fogwire_testkit::wait::PATIENCE;
pub use fogwire_testkit::wait::blocking::{until as wait_until, until_some as wait_for};

/// Runs `fogwire --home <home> <args>`.
pub fn fogwire(home: &Path, args: &[&str]) -> Output {
    Command::new(BINARY)
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run fogwire")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A successful command's JSON output (the command's output if it failed).
pub fn json<T: serde::de::DeserializeOwned>(output: &Output) -> T {
    assert!(
        output.status.success(),
        "{}\n{}",
        stdout(output),
        stderr(output)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A fresh home after `fogwire init`, peers dialing it at `listen` and its
/// control API on any free loopback port.
pub fn init_home(listen: &str) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let init = fogwire(
        home.path(),
        &["init", "--listen", listen, "--api", "127.0.0.1:0"],
    );
    assert!(init.status.success(), "init failed: {}", stderr(&init));
    home
}

/// A `fogwire node` process in a temporary home.
pub struct TestNode {
    pub home: tempfile::TempDir,
    child: Child,
    log: PathBuf,
}

impl TestNode {
    /// `fogwire init` on free ports, then `[link]` settings appended from
    /// `link_settings` (e.g. "handshake_timeout_ms = 1000"), then start.
    pub fn start(link_settings: &str) -> Self {
        let home = init_home("127.0.0.1:0");
        if !link_settings.is_empty() {
            let path = home.path().join("fogwire.toml");
            let text = std::fs::read_to_string(&path).unwrap();
            let text = text.replace("[link]\n", &format!("[link]\n{link_settings}\n"));
            std::fs::write(&path, text).unwrap();
        }
        Self::start_in(home)
    }

    /// Like [`TestNode::start`], with `settings` put in `[section]`.
    pub fn start_with(section: &str, settings: &str) -> Self {
        let home = init_home("127.0.0.1:0");
        let path = home.path().join("fogwire.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let header = format!("[{section}]\n");
        assert!(text.contains(&header), "no [{section}] in the template");
        let text = text.replace(&header, &format!("{header}{settings}\n"));
        std::fs::write(&path, text).unwrap();
        Self::start_in(home)
    }

    /// Starts `fogwire node` in an initialised home.
    pub fn start_in(home: tempfile::TempDir) -> Self {
        Self::start_logging(home, "info")
    }

    /// [`TestNode::start_in`] with `RUST_LOG` set to `rust_log`.
    pub fn start_logging(home: tempfile::TempDir, rust_log: &str) -> Self {
        let log = home.path().join("node.log");
        let child = Command::new(BINARY)
            .arg("--home")
            .arg(home.path())
            .arg("node")
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start fogwire node");
        let node = Self { home, child, log };
        let api_addr = node.home.path().join("data/api.addr");
        wait_until("the node to write data/api.addr", || api_addr.exists());
        node
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        fogwire(self.home(), args)
    }

    /// Runs a CLI command in the background, its output discarded: a
    /// client that may be killed, or go away, before it ends.
    pub fn cli_in_background(&self, args: &[&str]) -> Child {
        Command::new(BINARY)
            .arg("--home")
            .arg(self.home())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Starts the node again in its home, after it was stopped or killed.
    pub fn start_again(mut self) -> TestNode {
        let home = std::mem::replace(&mut self.home, tempfile::tempdir().unwrap());
        // A killed node leaves its api.addr behind; the next start writes
        // it again, and the harness waits for that.
        let _ = std::fs::remove_file(home.path().join("data/api.addr"));
        TestNode::start_in(home)
    }

    pub fn status(&self) -> Status {
        let output = self.cli(&["status", "--json"]);
        assert!(output.status.success(), "status: {}", stderr(&output));
        serde_json::from_slice(&output.stdout).unwrap()
    }

    pub fn peers(&self) -> Vec<Peer> {
        let output = self.cli(&["peers", "--json"]);
        assert!(output.status.success(), "peers: {}", stderr(&output));
        serde_json::from_slice(&output.stdout).unwrap()
    }

    pub fn node_id(&self) -> NodeId {
        self.status().node_id.parse().unwrap()
    }

    pub fn link_addr(&self) -> SocketAddr {
        self.status().link_listen
    }

    pub fn peer_addr(&self) -> String {
        format!("{}@{}", self.node_id(), self.link_addr())
    }

    pub fn log(&self) -> String {
        let mut text = String::new();
        std::fs::File::open(&self.log)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text
    }

    /// Lines of the log containing `needle`.
    pub fn log_lines(&self, needle: &str) -> usize {
        self.log()
            .lines()
            .filter(|line| line.contains(needle))
            .count()
    }

    /// Waits until the log holds at least `count` lines containing `needle`.
    pub fn wait_for_log(&self, needle: &str, count: usize) {
        wait_until(&format!("{count} log lines with {needle:?}"), || {
            self.log_lines(needle) >= count
        });
    }

    /// The process id of the node.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the process, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Sends a signal (TERM, INT, STOP, …) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} failed");
    }

    /// Sends `signal` (TERM, INT, KILL) and waits for the process to exit.
    pub fn stop(&mut self, signal: &str) -> std::process::ExitStatus {
        self.signal(signal);
        wait_for(&format!("the node to exit after SIG{signal}"), || {
            self.child.try_wait().unwrap()
        })
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An in-process peer that links to a node and pings it often, to show the
/// node keeps serving its links while it is being abused elsewhere.
pub struct WatchPeer {
    pub link: LinkHandle,
}

impl WatchPeer {
    pub async fn link_to(node: &TestNode) -> Self {
        let keypair = Arc::new(Keypair::generate().unwrap());
        let identity = LinkIdentity::generate(keypair).unwrap();
        let config = Arc::new(Config {
            keepalive_interval: Duration::from_millis(50),
            ..Config::default()
        });
        let established =
            fogwire_link::connect(node.link_addr(), node.node_id(), &identity, config)
                .await
                .expect("the watch peer links to the node");
        Self {
            link: fogwire_link::spawn(established),
        }
    }

    /// Asserts the link is up and the node answered several more pings.
    pub async fn assert_still_served(&self) {
        let before = self.link.snapshot().records_in;
        fogwire_testkit::wait::until("the node to answer three more pings", || {
            assert!(
                !self.link.is_closed(),
                "the node dropped its other link: {:?}",
                self.link.close_reason()
            );
            self.link.snapshot().records_in >= before + 3
        })
        .await;
        assert!(!self.link.is_closed());
    }
}
