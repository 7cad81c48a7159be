//! Hole punching between real hosts behind real NATs (network
//! namespaces, nftables masquerade; relay.md §3): a public node, two
//! nodes behind cone NATs, one behind a symmetric NAT and one behind two
//! cone NATs, all meeting through one relay. Where the NATs allow it,
//! `fogwire connect <node id>` makes a direct QUIC link; where they do
//! not, it says so and the nodes still reach each other through the
//! relay.

use std::time::{Duration, Instant};

use fogwire_api::{Peer, Status};

use crate::exit::json;
use crate::harness::{stderr, wait_for, wait_until};
use crate::netns::{
    Nat, NsNode, behind_nat, bridge, ip, namespaces_available, nat, tools_available, wire,
};

/// Tries of the cone–cone punch.
const TRIES: usize = 20;

fn private_and_reserved(node: &NsNode) -> bool {
    json::<Status>(&node.cli(&["status", "--json"])).is_some_and(|status| {
        status.reach.reachability == "private"
            && status
                .reach
                .relays
                .iter()
                .any(|relay| relay.state == "reserved")
    })
}

/// `fogwire connect <id>` from `from` to `to`: the link's peer entry and
/// how long the command took, or its error.
fn direct(from: &NsNode, to: &str) -> (Result<Peer, String>, Duration) {
    let started = Instant::now();
    let output = from.cli(&["connect", to, "--json"]);
    let took = started.elapsed();
    if !output.status.success() {
        return (Err(stderr(&output)), took);
    }
    let peer = json::<Peer>(&output).ok_or_else(|| "no peer in the output".to_owned());
    (peer, took)
}

#[test]
fn nodes_behind_cone_nats_punch_direct_links_and_a_symmetric_nat_stays_on_the_relay() {
    let tag = format!("h{}", std::process::id());
    if !namespaces_available(&format!("r{tag}"))
        || !tools_available(&[("nft", "nft (apt-get install nftables)")])
    {
        return;
    }
    let name = |what: &str| format!("fw{what}{tag}");
    // One public segment: the relay, a public node and the outside of
    // each NAT. Behind them: cone (c, d), symmetric (s), and e behind a
    // cone NAT behind another cone NAT.
    let switch = NsNode::new(&name("w"));
    let mut relay = NsNode::new(&name("r"));
    let mut public = NsNode::new(&name("p"));
    let gateways: Vec<NsNode> = ["1", "2", "3", "4"]
        .iter()
        .map(|g| NsNode::new(&name(&format!("g{g}"))))
        .collect();
    let mut cone_c = NsNode::new(&name("c"));
    let mut cone_d = NsNode::new(&name("d"));
    let mut symmetric = NsNode::new(&name("s"));
    let inner = NsNode::new(&name("i"));
    let mut double = NsNode::new(&name("e"));
    let outside = format!("fwo{tag}");
    bridge(
        &switch,
        &[
            (&relay, "198.51.100.10/24"),
            (&public, "198.51.100.3/24"),
            (&gateways[0], "198.51.100.251/24"),
            (&gateways[1], "198.51.100.252/24"),
            (&gateways[2], "198.51.100.253/24"),
            (&gateways[3], "198.51.100.254/24"),
        ],
        &outside,
    )
    .unwrap();
    let behind = |host: &NsNode, index: usize, kind: Nat| {
        let inside = format!("fwn{index}{tag}");
        let out = format!("{outside}{}a", index + 2);
        behind_nat(host, &gateways[index], &inside, &out, kind).unwrap();
    };
    behind(&cone_c, 0, Nat::Cone);
    behind(&cone_d, 1, Nat::Cone);
    behind(&symmetric, 2, Nat::Symmetric);
    // The inner gateway is the host behind the fourth; e is behind it.
    behind(&inner, 3, Nat::Cone);
    let deep = format!("fwx{tag}");
    wire(&inner, "10.1.0.1/24", &double, "10.1.0.2/24", &deep).unwrap();
    ip(&[
        "-n",
        &double.namespace,
        "route",
        "add",
        "default",
        "via",
        "10.1.0.1",
    ])
    .unwrap();
    nat(
        &inner,
        &format!("{deep}a"),
        &format!("fwn3{tag}b"),
        Nat::Cone,
    )
    .unwrap();

    relay.edit_config(|text| text.replacen("[relay]\n", "[relay]\nserve = true\n", 1));
    for node in [
        &mut relay,
        &mut public,
        &mut cone_c,
        &mut cone_d,
        &mut symmetric,
        &mut double,
    ] {
        node.start();
    }
    // The public node links to the relay over TCP; those behind NATs
    // over QUIC, so the relay tells each where its NAT maps its UDP socket.
    let relay_id = relay.id();
    let tcp = format!("{relay_id}@198.51.100.10:7100");
    let quic = format!("{relay_id}@quic:198.51.100.10:7100");
    for (node, bootstrap) in [
        (&public, &tcp),
        (&cone_c, &quic),
        (&cone_d, &quic),
        (&symmetric, &quic),
        (&double, &quic),
    ] {
        let connect = node.cli(&["connect", bootstrap]);
        assert!(connect.status.success(), "{}", stderr(&connect));
    }
    for node in [&cone_c, &cone_d, &symmetric, &double] {
        wait_until(
            "the node behind a NAT to be private with a reservation",
            || private_and_reserved(node),
        );
    }
    let ids: Vec<String> = [&public, &cone_c, &cone_d, &symmetric, &double]
        .iter()
        .map(|node| node.id())
        .collect();
    // Every node reaches every other through the relay (or directly).
    let mut setups_ms = Vec::new();
    for (from, node) in [&public, &cone_c, &cone_d, &symmetric, &double]
        .iter()
        .enumerate()
    {
        for (to, id) in ids.iter().enumerate() {
            if from != to {
                let report = wait_for("a path between the two nodes", || {
                    let output = node.cli(&["ping", id, "--count", "1", "--json"]);
                    json::<fogwire_api::PingReport>(&output)
                        .filter(|report| report.rtts_ms.iter().all(Option::is_some))
                });
                setups_ms.push(report.setup_ms);
            }
        }
    }
    setups_ms.sort_by(f64::total_cmp);
    eprintln!(
        "all 20 ordered pairs reached (through the relay where behind NATs): route setup median {:.2} ms, slowest {:.2} ms",
        setups_ms[setups_ms.len() / 2],
        setups_ms[setups_ms.len() - 1]
    );

    // Cone to cone: a direct QUIC link, every time. (Asked from one side:
    // its `disconnect` refuses the other's links for a while, which only
    // its own asking lifts.)
    let (from, to) = (&cone_c, &cone_d);
    let cone_d_id = cone_d.id();
    let to_id = &cone_d_id;
    let mut times = Vec::new();
    for attempt in 0..TRIES {
        let (linked, took) = direct(from, to_id);
        let peer = linked.unwrap_or_else(|error| panic!("try {attempt}: {error}"));
        assert_eq!(peer.transport.as_deref(), Some("quic"), "try {attempt}");
        assert!(
            peer.address
                .as_deref()
                .is_some_and(|a| a.starts_with("198.51.100.25")),
            "the other NAT's outside address, try {attempt}: {:?}",
            peer.address
        );
        times.push(took);
        let cut = from.cli(&["disconnect", to_id]);
        assert!(cut.status.success(), "{}", stderr(&cut));
        wait_until("both ends to drop the direct link", || {
            let gone = |node: &NsNode, id: &str| {
                json::<Vec<Peer>>(&node.cli(&["peers", "--json"]))
                    .is_some_and(|peers| !peers.iter().any(|p| p.node_id == id))
            };
            gone(from, to_id) && gone(to, &from.id())
        });
    }
    times.sort();
    eprintln!(
        "cone-cone direct links: {TRIES}/{TRIES}; time from asking to linked (the CLI's whole run): median {:?}, slowest {:?}",
        times[TRIES / 2],
        times[TRIES - 1]
    );

    // Nobody asks: a transfer from behind the double NAT to a node behind
    // a cone NAT starts through the relay (they have no link), and once
    // its route has been up
    // a few seconds the two punch a direct link on their own and the
    // route moves onto it, mid-transfer; every byte arrives.
    let started = Instant::now();
    let output = std::thread::scope(|scope| {
        let sending =
            scope.spawn(|| double.cli(&["route", "send", &cone_d_id, "--bytes", "4G", "--json"]));
        // It moves while the transfer runs (or the test says why not).
        let moved = || {
            json::<fogwire_api::Routes>(&double.cli(&["route", "list", "--json"]))
                .is_some_and(|routes| routes.stats.routes_moved >= 1)
        };
        while !moved() && !sending.is_finished() {
            std::thread::sleep(Duration::from_millis(100));
        }
        let moved_after = started.elapsed();
        let output = sending.join().unwrap();
        (output, moved_after)
    });
    let (output, moved_after) = output;
    assert!(output.status.success(), "{}", stderr(&output));
    let report = json::<fogwire_api::SendReport>(&output).unwrap();
    if report.repairs == 0 {
        for node in [&double, &cone_d] {
            let log =
                std::fs::read_to_string(node.home.path().join("node.log")).unwrap_or_default();
            let lines = log
                .lines()
                .filter(|l| l.contains("punch") || l.contains("route"));
            for line in lines {
                eprintln!("{}: {line}", node.namespace);
            }
        }
    }
    assert!(report.intact, "{report:?}");
    assert_eq!(
        report.path,
        std::slice::from_ref(&cone_d_id),
        "it ended direct: {report:?}"
    );
    assert!(report.repairs >= 1, "it moved: {report:?}");
    let peers = json::<Vec<Peer>>(&double.cli(&["peers", "--json"])).unwrap();
    let direct_link = peers.iter().find(|p| p.node_id == cone_d_id).unwrap();
    assert_eq!(direct_link.transport.as_deref(), Some("quic"));
    eprintln!(
        "relayed→direct mid-transfer: moved {:.1} s after the transfer began (the route must be up 3 s first); 4 GiB in {:.1} s ({:.0} Mbit/s)",
        moved_after.as_secs_f64(),
        report.secs,
        report.mbit_per_sec
    );

    // Public to cone, and across a double NAT: direct too.
    for (from, to) in [(&public, cone_c.id()), (&double, cone_d_id.clone())] {
        let (linked, _) = direct(from, &to);
        let peer = linked.unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(peer.transport.as_deref(), Some("quic"));
    }

    // A symmetric NAT maps each destination to a new port: the addresses
    // the relay saw are not where the punch comes from, and nothing gets
    // through. The command says so, and the relay still carries.
    let symmetric_id = symmetric.id();
    let (linked, _) = direct(&cone_c, &symmetric_id);
    let error = linked.unwrap_err();
    assert!(error.contains("no direct link"), "{error}");
    assert!(error.contains("through relays"), "{error}");
    let output = cone_c.cli(&["ping", &symmetric_id, "--count", "1", "--json"]);
    let report = json::<fogwire_api::PingReport>(&output).unwrap();
    assert!(report.path.contains(&relay_id), "{:?}", report.path);
}
