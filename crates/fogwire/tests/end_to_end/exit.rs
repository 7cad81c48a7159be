//! Exits and the SOCKS proxy between real `fogwire node` processes, each
//! in a network namespace of its own: a client, three relays, an exit,
//! and an "internet" host that only the exit can reach, serving HTTP and
//! DNS: curl through `fogwire proxy`, a relay killed mid-download, a DNS
//! query over UDP ASSOCIATE, and the exit's policy.

use std::path::Path;
use std::process::{Child, Output, Stdio};

use fogwire_api::{ExitsReport, Routes};

use crate::harness::{BINARY, stderr, stdout, wait_for, wait_until};
use crate::netns::{NsNode, hosts, namespaces_available};

const BIG_LEN: usize = 48 * 1024 * 1024;

/// A DNS server for one name: answers every A query with 10.77.99.2.
const DNS_SERVER: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.77.99.2", 53))
while True:
    q, peer = s.recvfrom(512)
    end = 12
    while q[end] != 0:
        end += q[end] + 1
    question = q[12:end + 5]
    answer = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + bytes([10, 77, 99, 2])
    s.sendto(q[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + question + answer, peer)
"#;

/// A SOCKS 5 client that asks, over UDP ASSOCIATE, the DNS server at
/// 10.77.99.2 for origin.test and prints the address it gets.
const DNS_THROUGH_SOCKS: &str = r#"
import socket, struct
c = socket.create_connection(("127.0.0.1", 1080))
c.sendall(b"\x05\x01\x00")
assert c.recv(2) == b"\x05\x00"
c.sendall(b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00")
r = b""
while len(r) < 10:
    r += c.recv(10 - len(r))
assert r[1] == 0, r
relay = (socket.inet_ntoa(r[4:8]), struct.unpack(">H", r[8:10])[0])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(30)
query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x06origin\x04test\x00\x00\x01\x00\x01"
u.sendto(b"\x00\x00\x00\x01" + bytes([10, 77, 99, 2]) + b"\x00\x35" + query, relay)
data, _ = u.recvfrom(2048)
assert data[:10] == b"\x00\x00\x00\x01" + bytes([10, 77, 99, 2]) + b"\x00\x35", data[:10]
answer = data[10:]
assert answer[:2] == b"\x12\x34"
print(socket.inet_ntoa(answer[-4:]))
"#;

pub(crate) fn json<T: serde::de::DeserializeOwned>(output: &Output) -> Option<T> {
    output
        .status
        .success()
        .then(|| serde_json::from_slice(&output.stdout).ok())
        .flatten()
}

/// Files `ip netns exec` shows a namespace as its /etc; removed on drop.
struct EtcOverlay(std::path::PathBuf);

impl EtcOverlay {
    fn hosts(namespace: &str, hosts: &str) -> EtcOverlay {
        let dir = Path::new("/etc/netns").join(namespace);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hosts"), hosts).unwrap();
        EtcOverlay(dir)
    }
}

impl Drop for EtcOverlay {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed on drop.
pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `curl --socks5-hostname` in `node`'s namespace through its proxy on
/// port 1080.
fn curl(node: &NsNode, url: &str, extra: &[&str]) -> std::process::Command {
    let mut command = node.run("curl");
    command
        .args([
            "-sS",
            "--max-time",
            "60",
            "--socks5-hostname",
            "127.0.0.1:1080",
        ])
        .args(extra)
        .arg(url);
    command
}

#[test]
fn curl_through_a_three_hop_route_survives_a_relay_killed_and_the_exit_keeps_its_policy() {
    let tag = std::process::id().to_string();
    if !namespaces_available(&format!("x{tag}"))
        || !fogwire_testkit::prerequisite(
            std::process::Command::new("curl")
                .arg("--version")
                .output()
                .is_ok()
                && std::process::Command::new("python3")
                    .arg("--version")
                    .output()
                    .is_ok(),
            "curl and python3",
        )
    {
        return;
    }
    // c: client; r1, r3: relays side by side; r2: the relay before the
    // exit; e: the exit; i: the internet, reachable from e only.
    let names = ["c", "r1", "r3", "r2", "e", "i"];
    let edges = [
        (0, 1, 11),
        (0, 2, 12),
        (1, 3, 13),
        (2, 3, 14),
        (3, 4, 15),
        (4, 5, 99),
    ];
    let mut nodes = hosts(&names, "fx", &tag, &edges);
    let (client, exit, internet) = (0, 4, 5);
    nodes[exit].edit_config(|text| {
        text.replacen(
            "[exit]\n",
            "[exit]\nserve = true\nallow = [\"10.77.99.2/32\"]\n",
            1,
        )
    });
    // The test hostname exists at the exit only: the client never looks
    // it up.
    let _hosts = EtcOverlay::hosts(
        &nodes[exit].namespace,
        "127.0.0.1 localhost\n10.77.99.2 origin.test\n",
    );
    let site = tempfile::tempdir().unwrap();
    let big = fogwire_testkit::data::pattern(BIG_LEN, 15);
    std::fs::write(site.path().join("big.bin"), &big).unwrap();
    std::fs::write(site.path().join("hello.txt"), "hello from the internet\n").unwrap();
    let _origin = Killed(
        nodes[internet]
            .run("python3")
            .args([
                "-m",
                "http.server",
                "8080",
                "--bind",
                "10.77.99.2",
                "--directory",
            ])
            .arg(site.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _dns = Killed(
        nodes[internet]
            .run("python3")
            .args(["-c", DNS_SERVER])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for node in nodes.iter_mut().take(5) {
        node.start();
    }
    let ids: Vec<String> = nodes.iter().take(5).map(NsNode::id).collect();
    for (x, y, subnet) in edges.iter().take(5) {
        let peer = format!("{}@10.77.{subnet}.2:7100", ids[*y]);
        let linked = nodes[*x].cli(&["connect", &peer]);
        assert!(linked.status.success(), "{}", stderr(&linked));
    }
    wait_until("the client to know the exit, 3 hops away", || {
        json::<ExitsReport>(&nodes[client].cli(&["exits", "--json"])).is_some_and(|report| {
            report
                .exits
                .iter()
                .any(|exit| exit.node_id == ids[4] && exit.hops == Some(3))
        })
    });
    let proxy = Killed(
        nodes[client]
            .run(BINARY)
            .arg("--home")
            .arg(nodes[client].home.path())
            .args(["proxy", "--listen", "127.0.0.1:1080", "--min-hops", "3"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // A page by name, resolved at the exit.
    let page = wait_for("a page through the proxy", || {
        let output = curl(&nodes[client], "http://origin.test:8080/hello.txt", &[])
            .output()
            .unwrap();
        output.status.success().then(|| stdout(&output))
    });
    assert_eq!(page, "hello from the internet\n");

    // A download paced to last a few seconds; the relay carrying it is
    // killed in the middle.
    let out = site.path().join("downloaded.bin");
    let download = nodes[client]
        .run("curl")
        .args([
            "-sS",
            "--max-time",
            "120",
            "--socks5-hostname",
            "127.0.0.1:1080",
            "--limit-rate",
            "8M",
            "-o",
        ])
        .arg(&out)
        .arg("http://origin.test:8080/big.bin")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("a quarter of the download", || {
        std::fs::metadata(&out).is_ok_and(|meta| meta.len() > (BIG_LEN / 4) as u64)
    });
    let routes: Routes = json(&nodes[client].cli(&["route", "list", "--json"])).unwrap();
    let route = routes
        .routes
        .iter()
        .find(|route| route.path.last() == Some(&ids[4]))
        .expect("the proxy's route to the exit");
    assert_eq!(route.path.len(), 3, "{route:?}");
    let relay = ids.iter().position(|id| *id == route.path[0]).unwrap();
    assert!(relay == 1 || relay == 2, "the first relay is r1 or r3");
    let mut killed = nodes[relay].child.take().unwrap();
    killed.kill().unwrap();
    killed.wait().unwrap();
    let finished = download.wait_with_output().unwrap();
    assert!(finished.status.success(), "curl: {}", stderr(&finished));
    let downloaded = std::fs::read(&out).unwrap();
    assert_eq!(downloaded.len(), BIG_LEN);
    assert!(downloaded == big, "the download, byte for byte");
    let routes: Routes = json(&nodes[client].cli(&["route", "list", "--json"])).unwrap();
    let route = routes
        .routes
        .iter()
        .find(|route| route.path.last() == Some(&ids[4]))
        .unwrap();
    assert_ne!(
        route.path[0], ids[relay],
        "repaired around the killed relay"
    );

    // The exit's own loopback and its link network toward r2: refused,
    // and curl is told so (SOCKS reply 2, curl's exit code 97).
    for url in ["http://127.0.0.1:7101/v1/status", "http://10.77.15.2:7100/"] {
        let output = curl(&nodes[client], url, &["-v"]).output().unwrap();
        assert_eq!(output.status.code(), Some(97), "{url}: {}", stderr(&output));
    }
    // A DNS query over UDP ASSOCIATE, to a resolver only the exit reaches.
    let answer = nodes[client]
        .run("python3")
        .args(["-c", DNS_THROUGH_SOCKS])
        .output()
        .unwrap();
    assert!(answer.status.success(), "{}", stderr(&answer));
    assert_eq!(stdout(&answer).trim(), "10.77.99.2");

    let report: ExitsReport = json(&nodes[exit].cli(&["exits", "--json"])).unwrap();
    let serving = report.serving.expect("the exit reports itself");
    assert_eq!(
        (serving.udp_sent, serving.udp_received),
        (1, 1),
        "{serving:?}"
    );
    assert_eq!(serving.refused, 2, "{serving:?}");
    assert!(serving.connected >= 2, "{serving:?}");
    drop(proxy);
}
