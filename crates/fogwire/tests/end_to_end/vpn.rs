//! The VPN between real `fogwire node` processes in network namespaces:
//! node to node by derived addresses, and a host's default routes through
//! an exit (ping and iperf3 to a host only the exit reaches, a relay
//! killed under a TCP flow, the exit's policy, the routes given back).

use std::process::Stdio;

use fogwire_api::{ExitsReport, Routes, VpnStatus};

use crate::exit::{Killed, json};
use crate::harness::{stderr, stdout, wait_for, wait_until};
use crate::netns::{NsNode, hosts, ip, namespaces_available, tools_available, veth};

/// Pings the internet host (10.77.98.2) from `node` until a reply comes:
/// ping's report.
fn ping_answered(node: &NsNode, what: &str) -> String {
    wait_for(&format!("a ping answered by {what}"), || {
        let output = node
            .run("ping")
            .args(["-c", "3", "-i", "0.2", "-W", "2", "10.77.98.2"])
            .output()
            .unwrap();
        output.status.success().then(|| stdout(&output))
    })
}

#[test]
fn the_vpn_carries_ping_between_two_nodes_by_their_derived_addresses() {
    let tag = std::process::id().to_string();
    if !namespaces_available(&format!("v{tag}"))
        || !fogwire_testkit::prerequisite(
            std::process::Command::new("ping")
                .arg("-V")
                .output()
                .is_ok(),
            "ping (apt-get install iputils-ping)",
        )
    {
        return;
    }
    let mut nodes: Vec<NsNode> = ["a", "b", "c"]
        .iter()
        .map(|name| NsNode::new(&format!("fv{name}{tag}")))
        .collect();
    // A line: a – b – c; a reaches c's address over a 2-hop route.
    veth(&nodes[0], &nodes[1], &format!("v01{tag}"), 21).unwrap();
    veth(&nodes[1], &nodes[2], &format!("v12{tag}"), 22).unwrap();
    for node in &mut nodes {
        node.start();
    }
    let ids: Vec<String> = nodes.iter().map(NsNode::id).collect();
    for (x, y, subnet) in [(0, 1, 21), (1, 2, 22)] {
        let linked = nodes[x].cli(&["connect", &format!("{}@10.77.{subnet}.2:7100", ids[y])]);
        assert!(linked.status.success(), "{}", stderr(&linked));
    }
    for node in [&nodes[0], &nodes[2]] {
        let up = node.cli(&["vpn", "up"]);
        assert!(up.status.success(), "{}", stderr(&up));
        assert!(
            stdout(&up).contains("VPN up on fogwire0"),
            "{}",
            stdout(&up)
        );
    }
    let far = stdout(&nodes[2].cli(&["ip"])).trim().to_owned();
    assert!(far.starts_with("fd77:6972:"), "{far}");
    // The first packets may go while the route opens (and are dropped,
    // as while a neighbour is resolved); a reply must come.
    let ping = wait_for("a ping answered over the VPN", || {
        let output = nodes[0]
            .run("ping")
            .args(["-6", "-c", "3", "-i", "0.2", "-W", "2", &far])
            .output()
            .unwrap();
        output.status.success().then(|| stdout(&output))
    });
    assert!(ping.contains("bytes from"), "{ping}");
    let status = nodes[2].cli(&["vpn", "status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["up"], true);
    assert!(status["packets_in"].as_u64().unwrap() >= 1, "{status}");
    // Through a node that is no exit: refused, and said so.
    let down = nodes[0].cli(&["vpn", "down"]);
    assert!(down.status.success(), "{}", stderr(&down));
    let refused = nodes[0].cli(&["vpn", "up", "--exit", &ids[2]]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("advertises no exit"),
        "{}",
        stderr(&refused)
    );
    let up = nodes[0].cli(&["vpn", "up"]);
    assert!(up.status.success(), "{}", stderr(&up));
    let down = nodes[0].cli(&["vpn", "down"]);
    assert!(down.status.success(), "{}", stderr(&down));
}

#[test]
fn vpn_up_through_an_exit_carries_ping_and_iperf3_to_a_host_only_the_exit_reaches() {
    let tag = std::process::id().to_string();
    if !namespaces_available(&format!("w{tag}"))
        || !tools_available(&[
            ("ping", "ping (apt-get install iputils-ping)"),
            ("iperf3", "iperf3 (apt-get install iperf3)"),
            ("nft", "nft (apt-get install nftables)"),
        ])
    {
        return;
    }
    // c: the client; r1, r3: relays side by side; r2: the relay before
    // the exit; e: the exit; i: "the internet", reached from e only.
    let names = ["c", "r1", "r3", "r2", "e", "i"];
    let edges = [
        (0, 1, 31),
        (0, 2, 32),
        (1, 3, 33),
        (2, 3, 34),
        (3, 4, 35),
        (4, 5, 98),
    ];
    let mut nodes = hosts(&names, "fw", &tag, &edges);
    let (client, exit, internet) = (0, 4, 5);
    // The client reaches r1's far address through its default route, as
    // a host reaches its peers through its router: when the VPN takes the
    // default routes, only the mark on fogwire's own sockets keeps that
    // link out of the tunnel it carries.
    ip(&[
        "-n",
        &nodes[client].namespace,
        "route",
        "add",
        "default",
        "via",
        "10.77.31.2",
    ])
    .unwrap();
    nodes[exit].edit_config(|text| {
        text.replacen(
            "[exit]\n",
            "[exit]\nserve = true\nvpn = true\nallow = [\"10.77.98.2/32\"]\n",
            1,
        )
    });
    let _iperf = Killed(
        nodes[internet]
            .run("iperf3")
            .args(["-s", "-B", "10.77.98.2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for node in nodes.iter_mut().take(5) {
        node.start();
    }
    let ids: Vec<String> = nodes.iter().take(5).map(NsNode::id).collect();
    let peers = [
        (0, 1, "10.77.33.1"),
        (0, 2, "10.77.32.2"),
        (1, 3, "10.77.33.2"),
        (2, 3, "10.77.34.2"),
        (3, 4, "10.77.35.2"),
    ];
    for (x, y, address) in peers {
        let linked = nodes[x].cli(&["connect", &format!("{}@{address}:7100", ids[y])]);
        assert!(linked.status.success(), "{}", stderr(&linked));
    }
    wait_until(
        "the client to know the exit and that it carries the VPN",
        || {
            json::<ExitsReport>(&nodes[client].cli(&["exits", "--json"])).is_some_and(|report| {
                report
                    .exits
                    .iter()
                    .any(|exit| exit.node_id == ids[4] && exit.vpn && exit.hops == Some(3))
            })
        },
    );
    let listed = stdout(&nodes[client].cli(&["exits"]));
    assert!(listed.contains("; vpn"), "{listed}");

    let up = nodes[client].cli(&["vpn", "up", "--exit", &ids[4]]);
    assert!(up.status.success(), "{}", stderr(&up));
    assert!(
        stdout(&up).contains(&format!("default routes through exit {} (leased)", ids[4])),
        "{}",
        stdout(&up)
    );
    let ping = ping_answered(&nodes[client], "the internet host, through the exit");
    assert!(ping.contains("bytes from 10.77.98.2"), "{ping}");
    // The link to r1 goes by the default route, and stays out of the
    // tunnel by its socket's mark.
    let sockets = nodes[client]
        .run("ss")
        .args(["-tnHe", "dst", "10.77.33.1"])
        .output()
        .unwrap();
    assert!(
        stdout(&sockets).contains("fwmark:0x6677"),
        "{}",
        stdout(&sockets)
    );

    // A TCP flow, with the first relay of its route killed under it.
    let iperf = nodes[client]
        .run("iperf3")
        .args(["-c", "10.77.98.2", "-t", "8", "-J"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    let routes: Routes = json(&nodes[client].cli(&["route", "list", "--json"])).unwrap();
    let route = routes
        .routes
        .iter()
        .find(|route| route.path.last() == Some(&ids[4]))
        .expect("the VPN's route to the exit");
    assert_eq!(route.path.len(), 3, "{route:?}");
    let relay = ids.iter().position(|id| *id == route.path[0]).unwrap();
    assert!(relay == 1 || relay == 2, "the first relay is r1 or r3");
    let mut killed = nodes[relay].child.take().unwrap();
    killed.kill().unwrap();
    killed.wait().unwrap();
    let finished = iperf.wait_with_output().unwrap();
    assert!(finished.status.success(), "iperf3: {}", stderr(&finished));
    let report: serde_json::Value = serde_json::from_slice(&finished.stdout).unwrap();
    let received = report["end"]["sum_received"]["bytes"].as_u64().unwrap();
    let bits_per_second = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap();
    eprintln!(
        "iperf3 through the exit over 3 hops, a relay killed after 3 s: {:.0} Mbit/s",
        bits_per_second / 1e6
    );
    assert!(received > 0, "{report}");
    // After the repair, packets still cross.
    let ping = ping_answered(&nodes[client], "the internet host, after the repair");
    assert!(ping.contains("bytes from"), "{ping}");

    // The exit's own network toward r2: refused by its policy.
    let refused = nodes[client]
        .run("ping")
        .args(["-c", "2", "-i", "0.2", "-W", "1", "10.77.35.2"])
        .output()
        .unwrap();
    assert!(!refused.status.success(), "{}", stdout(&refused));
    let status: VpnStatus = json(&nodes[exit].cli(&["vpn", "status", "--json"])).unwrap();
    let gateway = status.gateway.expect("the exit's gateway");
    assert_eq!(gateway.clients, 1, "{gateway:?}");
    assert!(gateway.forwarded > 0 && gateway.answered > 0, "{gateway:?}");
    assert!(gateway.refused >= 2, "{gateway:?}");
    assert_eq!(gateway.spoofed, 0, "{gateway:?}");
    let status: VpnStatus = json(&nodes[client].cli(&["vpn", "status", "--json"])).unwrap();
    assert!(status.exit_leased, "{status:?}");
    assert!(
        status
            .ipv4
            .as_deref()
            .is_some_and(|v4| v4.starts_with("100.")),
        "{status:?}"
    );

    // Down: the rules go, and the host's own routes are back.
    let down = nodes[client].cli(&["vpn", "down"]);
    assert!(down.status.success(), "{}", stderr(&down));
    let rules = nodes[client]
        .run("ip")
        .args(["rule", "show"])
        .output()
        .unwrap();
    assert!(!stdout(&rules).contains("0x6677"), "{}", stdout(&rules));
}
