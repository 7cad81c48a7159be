//! Exits and the SOCKS proxy between real `fogwire node` processes, each
//! in a network namespace of its own: a client, three relays, an exit,
//! and an "internet" host that only the exit can reach, serving HTTP and
//! DNS: curl through `fogwire proxy`, a relay killed mid-download, a DNS
//! query over UDP ASSOCIATE, and the exit's policy; and a charging exit
//! with a ledger, which refuses a client with no coins and is paid, with
//! its relay, for a download.

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

/// An HTTP server at 10.77.99.2:8080 in `node`'s namespace, serving
/// `directory`.
fn origin_server(node: &NsNode, directory: &Path) -> Killed {
    Killed(
        node.run("python3")
            .args([
                "-m",
                "http.server",
                "8080",
                "--bind",
                "10.77.99.2",
                "--directory",
            ])
            .arg(directory)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Links each `(x, y, subnet)` of `edges`: `x` dials `y` at
/// `10.77.<subnet>.2`.
fn link_edges(nodes: &[NsNode], ids: &[String], edges: &[(usize, usize, u8)]) {
    for (x, y, subnet) in edges {
        let peer = format!("{}@10.77.{subnet}.2:7100", ids[*y]);
        let linked = nodes[*x].cli(&["connect", &peer]);
        assert!(linked.status.success(), "{}", stderr(&linked));
    }
}

/// Waits until `client` knows the exit `exit` at `hops` hops.
fn until_exit_known(client: &NsNode, exit: &str, hops: usize) {
    wait_until("the client to know the exit", || {
        json::<ExitsReport>(&client.cli(&["exits", "--json"])).is_some_and(|report| {
            report
                .exits
                .iter()
                .any(|e| e.node_id == exit && e.hops == Some(hops))
        })
    });
}

/// `fogwire proxy --listen 127.0.0.1:1080 <args>` in `node`'s namespace.
fn proxy(node: &NsNode, args: &[&str]) -> Killed {
    Killed(
        node.run(BINARY)
            .arg("--home")
            .arg(node.home.path())
            .args(["proxy", "--listen", "127.0.0.1:1080"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
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
    let _origin = origin_server(&nodes[internet], site.path());
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
    link_edges(&nodes, &ids, &edges[..5]);
    until_exit_known(&nodes[client], &ids[4], 3);
    let proxy = proxy(&nodes[client], &["--min-hops", "3"]);
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

/// A charging exit, with a ledger, all from the command line, each node in
/// a namespace of its own: `p`, whose account holds nothing, is refused
/// with a SOCKS error and told why in its log; `c`, funded at
/// genesis, downloads through the relay `r` and the exit `e` (more than the
/// exit's credit, so it goes on only as receipts come), and `c`'s coins go
/// to the exit and the relay, every one of them.
#[test]
fn a_charging_exit_refuses_a_client_without_coins_and_it_and_its_relay_are_paid() {
    const DOWNLOAD: usize = 80 * 1024 * 1024;
    let tag = std::process::id().to_string();
    if !namespaces_available(&format!("y{tag}"))
        || !fogwire_testkit::prerequisite(
            std::process::Command::new("curl")
                .arg("--version")
                .output()
                .is_ok(),
            "curl",
        )
    {
        return;
    }
    // c: paying client; p: client with no coins; r: relay; e: exit;
    // i: the internet, reachable from e only; l: the ledger.
    let names = ["c", "p", "r", "e", "i", "l"];
    let edges = [(0, 2, 41), (1, 2, 42), (2, 3, 43), (3, 4, 99), (2, 5, 44)];
    let mut nodes = hosts(&names, "fp", &tag, &edges);
    let (payer, pauper, relay, exit, internet, ledger) = (0, 1, 2, 3, 4, 5);
    let ids: Vec<String> = nodes.iter().map(NsNode::id).collect();
    nodes[ledger].edit_config(|text| {
        text.replacen(
            "[ledger]\n",
            &format!(
                "[ledger]\nserve = true\ngenesis = [{{ account = \"{}\", coins = \"10\" }}]\n",
                ids[payer]
            ),
            1,
        )
    });
    nodes[exit].edit_config(|text| {
        text.replacen(
            "[exit]\n",
            "[exit]\nserve = true\nallow = [\"10.77.99.2/32\"]\nprice_per_gib = \"0.5\"\n",
            1,
        )
    });
    let site = tempfile::tempdir().unwrap();
    let big = fogwire_testkit::data::pattern(DOWNLOAD, 16);
    std::fs::write(site.path().join("big.bin"), &big).unwrap();
    let _origin = origin_server(&nodes[internet], site.path());
    for index in [payer, pauper, relay, exit, ledger] {
        nodes[index].start();
    }
    let linked: Vec<_> = edges
        .into_iter()
        .filter(|(_, y, _)| *y != internet)
        .collect();
    link_edges(&nodes, &ids, &linked);
    let balance = |id: &str| -> u64 {
        let output = nodes[ledger].cli(&["wallet", "balance", id, "--json"]);
        json::<fogwire_api::LedgerAccount>(&output).map_or(0, |account| account.balance)
    };
    let mut proxies = Vec::new();
    for client in [payer, pauper] {
        until_exit_known(&nodes[client], &ids[exit], 2);
        proxies.push(proxy(&nodes[client], &["--exit", &ids[exit]]));
    }

    // No coins: refused (SOCKS reply 2, curl's exit code 97), and the
    // proxy's log says why.
    let refused = wait_for("the exit to answer the client with no coins", || {
        let output = curl(
            &nodes[pauper],
            "http://10.77.99.2:8080/big.bin",
            &["-o", "/dev/null"],
        )
        .output()
        .unwrap();
        (output.status.code() == Some(97)).then_some(output)
    });
    assert!(!refused.status.success());
    // The proxy runs in the node (`fogwire proxy` asks it for one).
    let node_log = nodes[pauper].home.path().join("node.log");
    wait_until("the proxy to log the refusal", || {
        std::fs::read_to_string(&node_log).is_ok_and(|log| log.contains("want of payment"))
    });
    let log = std::fs::read_to_string(&node_log).unwrap();
    assert!(log.contains("your account holds 0"), "{log}");

    // Coins: the download completes, byte for byte.
    let out = site.path().join("downloaded.bin");
    let download = curl(
        &nodes[payer],
        "http://10.77.99.2:8080/big.bin",
        &["-o", out.to_str().unwrap()],
    )
    .output()
    .unwrap();
    assert!(download.status.success(), "curl: {}", stderr(&download));
    assert!(
        std::fs::read(&out).unwrap() == big,
        "the download, byte for byte"
    );

    // The exit is paid for nearly every byte at its price, the relay for
    // forwarding; the payer paid exactly what they earned.
    use fogwire_ledger::proto::{COIN, receipt::cost};
    let carried = cost(DOWNLOAD as u64, COIN / 2);
    wait_until("the exit and the relay paid", || {
        balance(&ids[exit]) * 10 >= carried * 9 && balance(&ids[relay]) > 0
    });
    let paid = 10 * COIN - balance(&ids[payer]);
    let earned = balance(&ids[exit]) + balance(&ids[relay]);
    assert_eq!(
        paid, earned,
        "every coin the payer lost, the exit and relay got"
    );
    assert_eq!(balance(&ids[pauper]), 0);
    drop(proxies);
}
