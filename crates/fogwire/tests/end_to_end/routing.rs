//! Routing between real `fogwire node` processes: hand-started nodes on
//! loopback, and nodes in separate network namespaces joined by veth
//! pairs, one of which is really cut in the middle of a stream.

use std::process::{Command, Stdio};

use fogwire_api::{GraphNode, PingReport, Routes, SendReport};

use crate::harness::{BINARY, TestNode, json, stderr, stdout, wait_for, wait_until};
use crate::netns::{NsNode, ip, namespaces_available, veth};

/// Four nodes in a line, A–B–C–D, started and linked by hand.
fn line_of_four() -> Vec<TestNode> {
    let nodes: Vec<TestNode> = (0..4).map(|_| TestNode::start("")).collect();
    for pair in nodes.windows(2) {
        let linked = pair[0].cli(&["connect", &pair[1].peer_addr()]);
        assert!(linked.status.success(), "{}", stderr(&linked));
    }
    let a = &nodes[0];
    wait_until("A to learn every node and link", || {
        let graph: Vec<GraphNode> = json(&a.cli(&["nodes", "--json"]));
        graph.len() == 4 && graph.iter().map(|n| n.links.len()).sum::<usize>() == 6
    });
    nodes
}

#[test]
fn ping_goes_through_two_relays_between_hand_started_nodes() {
    let nodes = line_of_four();
    let (a, d) = (&nodes[0], &nodes[3]);
    let d_id = d.node_id().to_string();
    // The table, by a prefix of D's id.
    let output = a.cli(&["ping", &d_id[..12], "--hops", "3", "--count", "3"]);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}{}", stderr(&output));
    assert!(text.contains("over 3 hops"), "{text}");
    assert!(text.contains("3 sent, 3 answered"), "{text}");
    let report: PingReport = json(&a.cli(&["ping", &d_id, "--hops", "3", "--json"]));
    assert_eq!(report.path.len(), 3);
    assert_eq!(report.path[2], d_id);
    assert!(report.rtts_ms.iter().all(Option::is_some));

    // No 2-hop path exists on a line: the error says so.
    let output = a.cli(&["ping", &d_id, "--hops", "2"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("no path"), "{}", stderr(&output));

    // A transfer checked end to end, and a route kept open, listed with its
    // bytes at the source and at a relay, then closed.
    let report: SendReport = json(&a.cli(&["route", "send", &d_id, "--bytes", "32M", "--json"]));
    assert!(report.intact, "{report:?}");
    assert_eq!(report.bytes, 32 << 20);
    let opened = a.cli(&["route", "open", &d_id]);
    assert!(opened.status.success(), "{}", stderr(&opened));
    let routes: Routes = json(&a.cli(&["route", "list", "--json"]));
    assert_eq!(routes.routes.len(), 1);
    let id = routes.routes[0].id.to_string();
    let relay: Routes = json(&nodes[1].cli(&["route", "list", "--json"]));
    assert_eq!(relay.transit.len(), 1);
    assert!(relay.stats.receipts_received >= 1, "{relay:?}");
    let list = stdout(&a.cli(&["route", "list"]));
    assert!(list.contains("SENT") && list.contains("up"), "{list}");
    let closed = a.cli(&["route", "close", &id]);
    assert!(closed.status.success(), "{}", stderr(&closed));
    wait_until("the relay to drop the route's rule", || {
        let relay: Routes = json(&nodes[1].cli(&["route", "list", "--json"]));
        relay.transit.is_empty()
    });
}

#[test]
fn a_restarted_node_knows_the_graph_before_any_link_is_up() {
    let mut nodes = line_of_four();
    let a = nodes.remove(0);
    let home = {
        let mut a = a;
        assert!(a.stop("TERM").success());
        // Keep the home; the node goes.
        std::mem::replace(&mut a.home, tempfile::tempdir().unwrap())
    };
    // Without the peers it linked with `connect` (which it would link again
    // at once), so that the graph can only come from its routing store.
    std::fs::remove_file(home.path().join("data/peers")).unwrap();
    let restarted = TestNode::start_in(home);
    let graph: Vec<GraphNode> = json(&restarted.cli(&["nodes", "--json"]));
    assert_eq!(graph.len(), 4, "{graph:?}");
    assert!(graph.iter().all(|node| !node.neighbour));
}

// ----- network namespaces -----

#[test]
fn a_stream_survives_a_link_really_cut_between_namespaces() {
    let tag = std::process::id().to_string();
    if !namespaces_available(&tag) {
        return;
    }
    // A diamond: A–B–D and A–C–D, each node in its own namespace.
    let mut nodes: Vec<NsNode> = ["a", "b", "c", "d"]
        .iter()
        .map(|name| NsNode::new(&format!("fw{name}{tag}")))
        .collect();
    let edges = [(0, 1, 1), (1, 3, 2), (0, 2, 3), (2, 3, 4)];
    for (x, y, subnet) in edges {
        veth(&nodes[x], &nodes[y], &format!("v{x}{y}{tag}"), subnet).unwrap();
    }
    for node in &mut nodes {
        node.start();
    }
    let ids: Vec<String> = nodes.iter().map(NsNode::id).collect();
    for (x, y, subnet) in edges {
        let peer = format!("{}@10.77.{subnet}.2:7100", ids[y]);
        let linked = nodes[x].cli(&["connect", &peer]);
        assert!(linked.status.success(), "{}", stderr(&linked));
    }
    let a = &nodes[0];
    wait_until("A to learn the diamond", || {
        let output = a.cli(&["nodes", "--json"]);
        output.status.success() && {
            let graph: Vec<GraphNode> = json(&output);
            graph.len() == 4 && graph.iter().map(|n| n.links.len()).sum::<usize>() == 8
        }
    });

    // A long transfer from A to D over 2 hops, in the background.
    let transfer = Command::new("ip")
        .args(["netns", "exec", &a.namespace, BINARY, "--home"])
        .arg(a.home.path())
        .args([
            "route", "send", &ids[3], "--hops", "2", "--bytes", "1G", "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Which relay carries it, once some data has crossed.
    let relay = wait_for("the transfer to get going", || {
        let routes: Routes = json(&a.cli(&["route", "list", "--json"]));
        let route = routes.routes.first()?;
        (route.counters.bytes_forward > 64 << 20).then(|| route.path[0].clone())
    });
    let relay_index = ids.iter().position(|id| *id == relay).unwrap();
    // Cut the relay's link to D for real: its veth pair goes away, and no
    // end gets told (TCP just stops hearing back).
    let cut = edges
        .iter()
        .find(|(x, y, _)| *x == relay_index && *y == 3)
        .map(|(x, y, _)| format!("v{x}{y}{tag}"))
        .unwrap();
    ip(&[
        "-n",
        &nodes[relay_index].namespace,
        "link",
        "del",
        &format!("{cut}a"),
    ])
    .unwrap();
    let output = transfer.wait_with_output().unwrap();
    let report: SendReport = json(&output);
    assert!(report.intact, "{report:?}");
    assert_eq!(report.bytes, 1 << 30);
    assert_eq!(report.repairs, 1, "{report:?}");
    assert_ne!(report.path[0], relay, "still through the cut link");
}
