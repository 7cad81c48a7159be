//! Hosts of their own for tests: network namespaces joined by veth
//! pairs, each with a `fogwire node` in it.

use std::process::{Child, Command, Output, Stdio};

use crate::harness::{BINARY, init_home, stderr, stdout, wait_until};

/// A namespace with a `fogwire node` in it; both removed on drop.
pub struct NsNode {
    pub namespace: String,
    pub home: tempfile::TempDir,
    pub child: Option<Child>,
}

pub fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), stderr(&output)))
    }
}

impl NsNode {
    /// A new namespace with its loopback up, and a fresh home whose node
    /// listens for links on every address at port 7100 and serves its API
    /// at 127.0.0.1:7101 (each namespace has its own loopback).
    pub fn new(namespace: &str) -> NsNode {
        ip(&["netns", "add", namespace]).unwrap();
        ip(&["-n", namespace, "link", "set", "lo", "up"]).unwrap();
        let node = NsNode {
            namespace: namespace.to_owned(),
            home: init_home("0.0.0.0:7100"),
            child: None,
        };
        node.edit_config(|text| {
            text.replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:7101\"")
        });
        node
    }

    /// Rewrites the node's fogwire.toml.
    pub fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        let config = self.home.path().join("fogwire.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(&config, edit(text)).unwrap();
    }

    /// Runs a command in the namespace.
    pub fn run(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.namespace, program]);
        command
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.namespace, BINARY, "--home"])
            .arg(self.home.path())
            .args(args)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    }

    pub fn start(&mut self) {
        let log = std::fs::File::create(self.home.path().join("node.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.namespace, BINARY, "--home"])
            .arg(self.home.path())
            .arg("node")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let api = self.home.path().join("data/api.addr");
        wait_until("the namespaced node's API", || api.exists());
    }

    pub fn id(&self) -> String {
        let output = self.cli(&["id"]);
        stdout(&output).trim().to_owned()
    }
}

impl Drop for NsNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = ip(&["netns", "del", &self.namespace]);
    }
}

/// Can this machine make network namespaces? Under CI it must.
pub fn namespaces_available(tag: &str) -> bool {
    let probe = format!("fwprobe{tag}");
    let available = ip(&["netns", "add", &probe]).is_ok();
    let _ = ip(&["netns", "del", &probe]);
    fogwire_testkit::prerequisite(available, "network namespaces (needs root and iproute2)")
}

/// Joins namespaces `a` and `b` with a veth pair on a /30 of their own.
pub fn veth(a: &NsNode, b: &NsNode, name: &str, subnet: u8) -> Result<(), String> {
    let (end_a, end_b) = (format!("{name}a"), format!("{name}b"));
    ip(&[
        "link",
        "add",
        &end_a,
        "netns",
        &a.namespace,
        "type",
        "veth",
        "peer",
        "name",
        &end_b,
        "netns",
        &b.namespace,
    ])?;
    for (namespace, end, host) in [(&a.namespace, &end_a, 1), (&b.namespace, &end_b, 2)] {
        let address = format!("10.77.{subnet}.{host}/30");
        ip(&["-n", namespace, "addr", "add", &address, "dev", end])?;
        ip(&["-n", namespace, "link", "set", end, "up"])?;
    }
    Ok(())
}

/// Hosts named `names` (namespaces `<prefix><name><tag>`), joined by veth
/// pairs: `(a, b, subnet)` joins hosts `a` and `b` on `10.77.<subnet>.0/30`,
/// `a` at `.1` and `b` at `.2`.
pub fn hosts(names: &[&str], prefix: &str, tag: &str, edges: &[(usize, usize, u8)]) -> Vec<NsNode> {
    let nodes: Vec<NsNode> = names
        .iter()
        .map(|name| NsNode::new(&format!("{prefix}{name}{tag}")))
        .collect();
    for (x, y, subnet) in edges {
        veth(
            &nodes[*x],
            &nodes[*y],
            &format!("{prefix}{x}{y}{tag}"),
            *subnet,
        )
        .unwrap();
    }
    nodes
}
