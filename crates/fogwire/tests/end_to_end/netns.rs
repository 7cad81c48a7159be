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
    let address = |host: u8| format!("10.77.{subnet}.{host}/30");
    wire(a, &address(1), b, &address(2), name)
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

/// Joins namespaces `a` and `b` with a veth pair `<name>a`/`<name>b`,
/// giving each end its address (`10.1.2.3/24`, say).
pub fn wire(
    a: &NsNode,
    a_address: &str,
    b: &NsNode,
    b_address: &str,
    name: &str,
) -> Result<(), String> {
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
    for (namespace, end, address) in [
        (&a.namespace, &end_a, a_address),
        (&b.namespace, &end_b, b_address),
    ] {
        ip(&["-n", namespace, "addr", "add", address, "dev", end])?;
        ip(&["-n", namespace, "link", "set", end, "up"])?;
    }
    Ok(())
}

/// How a NAT gateway maps its inside hosts' connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    /// `masquerade persistent`: one outside port per inside address and
    /// port, whatever the destination (endpoint-independent, "cone").
    Cone,
    /// `masquerade fully-random`: a new outside port per destination
    /// ("symmetric").
    Symmetric,
}

/// Makes `gateway` a NAT from interface `inside` to interface `outside`:
/// it forwards, masquerades what leaves by `outside`, and drops whatever
/// would cross it otherwise (so nothing bypasses the NAT). Like a home
/// router's firewall it drops unsolicited UDP from outside addressed to
/// itself: kept, such a packet would leave a connection-tracking entry
/// that takes the very port the inside host's reply is about to be mapped
/// to (TCP is still answered with resets, so dial-backs end at once).
pub fn nat(gateway: &NsNode, inside: &str, outside: &str, kind: Nat) -> Result<(), String> {
    let sysctl = gateway
        .run("sysctl")
        .args(["-qw", "net.ipv4.ip_forward=1"])
        .output()
        .map_err(|e| format!("cannot run sysctl: {e}"))?;
    if !sysctl.status.success() {
        return Err(format!("sysctl: {}", stderr(&sysctl)));
    }
    let flavour = match kind {
        Nat::Cone => "persistent",
        Nat::Symmetric => "fully-random",
    };
    let rules = format!(
        "table ip fwnat {{
            chain postrouting {{
                type nat hook postrouting priority srcnat; policy accept;
                oifname \"{outside}\" masquerade {flavour}
            }}
            chain forward {{
                type filter hook forward priority filter; policy drop;
                ct state established,related accept
                iifname \"{inside}\" oifname \"{outside}\" accept
            }}
            chain input {{
                type filter hook input priority filter; policy accept;
                iifname \"{outside}\" meta l4proto udp ct state new drop
            }}
        }}"
    );
    let mut nft = gateway
        .run("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    use std::io::Write;
    nft.stdin
        .take()
        .ok_or("nft has no stdin")?
        .write_all(rules.as_bytes())
        .map_err(|e| format!("nft: {e}"))?;
    let output = nft.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("nft: {}", stderr(&output)))
    }
}

/// Are these tools installed? Under CI they must be.
pub fn tools_available(tools: &[(&str, &str)]) -> bool {
    tools.iter().all(|(tool, install)| {
        fogwire_testkit::prerequisite(
            Command::new(tool).arg("--version").output().is_ok(),
            install,
        )
    })
}

/// Puts `host` behind `gateway` on 10.0.0.0/24 (the gateway at .1, the
/// host at .2 with its default route through it, joined by the veth pair
/// `<inside>a`/`<inside>b`), and makes the gateway a NAT of `kind` onto its
/// interface `outside`.
pub fn behind_nat(
    host: &NsNode,
    gateway: &NsNode,
    inside: &str,
    outside: &str,
    kind: Nat,
) -> Result<(), String> {
    wire(gateway, "10.0.0.1/24", host, "10.0.0.2/24", inside)?;
    ip(&[
        "-n",
        &host.namespace,
        "route",
        "add",
        "default",
        "via",
        "10.0.0.1",
    ])?;
    nat(gateway, &format!("{inside}a"), outside, kind)
}

/// Puts a bridge `br0` in `switch` and joins each `(host, address)` to it
/// with a veth pair `<prefix><index>a` (in the host, with the address) and
/// `<prefix><index>b` (on the bridge): one network segment, like hosts on
/// one switch.
pub fn bridge(switch: &NsNode, hosts: &[(&NsNode, &str)], prefix: &str) -> Result<(), String> {
    ip(&[
        "-n",
        &switch.namespace,
        "link",
        "add",
        "br0",
        "type",
        "bridge",
    ])?;
    ip(&["-n", &switch.namespace, "link", "set", "br0", "up"])?;
    for (index, (host, address)) in hosts.iter().enumerate() {
        let (end_host, end_switch) = (format!("{prefix}{index}a"), format!("{prefix}{index}b"));
        ip(&[
            "link",
            "add",
            &end_host,
            "netns",
            &host.namespace,
            "type",
            "veth",
            "peer",
            "name",
            &end_switch,
            "netns",
            &switch.namespace,
        ])?;
        ip(&[
            "-n",
            &host.namespace,
            "addr",
            "add",
            address,
            "dev",
            &end_host,
        ])?;
        ip(&["-n", &host.namespace, "link", "set", &end_host, "up"])?;
        ip(&[
            "-n",
            &switch.namespace,
            "link",
            "set",
            &end_switch,
            "master",
            "br0",
            "up",
        ])?;
    }
    Ok(())
}
