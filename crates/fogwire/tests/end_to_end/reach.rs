//! Reachability between real hosts: a node on a public address and a node
//! behind a NAT (network namespaces; nftables masquerade on a gateway that
//! drops whatever would bypass it).

use fogwire_api::{GraphNode, Reach, Status};

use crate::exit::json;
use crate::harness::{stderr, stdout, wait_for, wait_until};
use crate::netns::{Nat, NsNode, behind_nat, bridge, namespaces_available, tools_available, wire};

fn reach(node: &NsNode) -> Option<Reach> {
    json::<Status>(&node.cli(&["status", "--json"])).map(|status| status.reach)
}

#[test]
fn a_node_behind_a_cone_nat_finds_it_is_private_and_a_public_node_that_it_is_public() {
    behind(Nat::Cone, "c");
}

#[test]
fn a_node_behind_a_symmetric_nat_finds_it_is_private_and_a_public_node_that_it_is_public() {
    behind(Nat::Symmetric, "s");
}

fn behind(kind: Nat, letter: &str) {
    let tag = format!("{letter}{}", std::process::id());
    if !namespaces_available(&format!("r{tag}"))
        || !tools_available(&[("nft", "nft (apt-get install nftables)")])
    {
        return;
    }
    // public (198.51.100.1) — gateway (198.51.100.254 | 10.0.0.1) — private (10.0.0.2)
    let mut public = NsNode::new(&format!("fwrp{tag}"));
    let gateway = NsNode::new(&format!("fwrg{tag}"));
    let mut private = NsNode::new(&format!("fwrn{tag}"));
    let (outside, inside) = (format!("fwro{tag}"), format!("fwri{tag}"));
    wire(
        &public,
        "198.51.100.1/24",
        &gateway,
        "198.51.100.254/24",
        &outside,
    )
    .unwrap();
    behind_nat(&private, &gateway, &inside, &format!("{outside}b"), kind).unwrap();
    public.start();
    private.start();
    let (public_id, private_id) = (public.id(), private.id());
    let connect = private.cli(&["connect", &format!("{public_id}@198.51.100.1:7100")]);
    assert!(connect.status.success(), "{}", stderr(&connect));

    // Each checks the address the other sees it at: the public node's
    // check by the private one reaches it through the NAT; the private
    // node is seen at the NAT's outside address, where nothing answers.
    let public_reach = wait_for("the public node to find it is public", || {
        reach(&public).filter(|reach| reach.reachability == "public")
    });
    let address = &public_reach.addresses[0];
    assert_eq!(address.address.to_string(), "198.51.100.1:7100");
    assert_eq!(address.state, "confirmed");
    assert_eq!(address.confirmed_by, vec![private_id.clone()]);
    let private_reach = wait_for("the node behind the NAT to find it is private", || {
        reach(&private).filter(|reach| reach.reachability == "private")
    });
    let address = &private_reach.addresses[0];
    assert_eq!(address.address.to_string(), "198.51.100.254:7100");
    assert_eq!(address.state, "refuted");
    assert_eq!(address.refuted_by, vec![public_id.clone()]);

    // Their adverts say so: the public node names the address that works
    // (it listens on a wildcard, which tells nothing), the private one
    // names no address and says it is private.
    wait_until("both adverts to say what the checks found", || {
        let Some(nodes) = json::<Vec<GraphNode>>(&public.cli(&["nodes", "--json"])) else {
            return false;
        };
        let advert = |id: &str| nodes.iter().find(|node| node.node_id == id).cloned();
        advert(&public_id).is_some_and(|node| node.addresses == ["198.51.100.1:7100"])
            && advert(&private_id).is_some_and(|node| {
                node.addresses.is_empty() && node.services.iter().any(|s| s == "reach:private")
            })
    });
    let status = stdout(&private.cli(&["status"]));
    assert!(
        status.contains("reach     private: peers on public addresses cannot dial"),
        "{status}"
    );
    assert!(status.contains("198.51.100.254:7100  refuted"), "{status}");
}

#[test]
fn a_node_behind_a_nat_keeps_a_relay_is_reached_through_it_and_moves_when_it_dies() {
    let tag = format!("y{}", std::process::id());
    if !namespaces_available(&format!("r{tag}"))
        || !tools_available(&[("nft", "nft (apt-get install nftables)")])
    {
        return;
    }
    // On one public segment: two relays, a bootstrap node, another node and
    // the NAT's outside; behind a symmetric NAT, the private node, which
    // keeps one relay.
    let name = |what: &str| format!("fw{what}{tag}");
    let switch = NsNode::new(&name("s"));
    let mut relays = [NsNode::new(&name("r")), NsNode::new(&name("t"))];
    let mut bootstrap = NsNode::new(&name("b"));
    let mut other = NsNode::new(&name("o"));
    let gateway = NsNode::new(&name("g"));
    let mut private = NsNode::new(&name("n"));
    let outside = format!("fwq{tag}");
    let segment = [
        (&bootstrap, "198.51.100.2/24"),
        (&other, "198.51.100.3/24"),
        (&gateway, "198.51.100.254/24"),
        (&relays[0], "198.51.100.10/24"),
        (&relays[1], "198.51.100.11/24"),
    ];
    bridge(&switch, &segment, &outside).unwrap();
    let inside = format!("fwi{tag}");
    behind_nat(
        &private,
        &gateway,
        &inside,
        &format!("{outside}2a"),
        Nat::Symmetric,
    )
    .unwrap();
    for relay in &relays {
        relay.edit_config(|text| text.replacen("[relay]\n", "[relay]\nserve = true\n", 1));
    }
    private.edit_config(|text| text.replacen("[relay]\n", "[relay]\nkeep = 1\n", 1));
    for node in relays
        .iter_mut()
        .chain([&mut bootstrap, &mut other, &mut private])
    {
        node.start();
    }
    let relay_ids = [relays[0].id(), relays[1].id()];
    let (bootstrap_id, private_id) = (bootstrap.id(), private.id());
    for node in [&relays[0], &relays[1], &other, &private] {
        let connect = node.cli(&["connect", &format!("{bootstrap_id}@198.51.100.2:7100")]);
        assert!(connect.status.success(), "{}", stderr(&connect));
    }
    let reserved_at = |wanted: Option<&String>| {
        wait_for("the private node to hold a reservation at a relay", || {
            let reach = reach(&private)?;
            let used = reach.relays.iter().find(|used| used.state == "reserved")?;
            (reach.reachability == "private" && wanted.is_none_or(|id| *id == used.node_id))
                .then(|| used.node_id.clone())
        })
    };
    let reached_through = |relay: &str| {
        wait_until(
            "a path from the other node to the private one through its relay",
            || {
                let output = other.cli(&["ping", &private_id, "--count", "1", "--json"]);
                json::<fogwire_api::PingReport>(&output).is_some_and(|report| {
                    report.path.iter().any(|hop| hop == relay)
                        && report.rtts_ms.iter().all(Option::is_some)
                })
            },
        );
    };

    // The private node finds it cannot be dialed, finds the relays in the
    // adverts, links to one and is accepted as its client.
    let first = reserved_at(None);
    let used = relay_ids.iter().position(|id| *id == first).unwrap();
    let serving = reach(&relays[used]).unwrap().relay.unwrap();
    assert_eq!(serving.clients, vec![private_id.clone()]);
    let status = stdout(&private.cli(&["status"]));
    assert!(
        status.lines().any(|line| line.starts_with("relay     ")
            && line.contains(&first[..12])
            && line.contains("reserved")),
        "{status}"
    );

    // It has heard where the other relay can be dialed (that relay's
    // checked address reaches it in a later advert) before it gives up its
    // bootstrap link: without it, it would have no way to learn it.
    let other_relay = &relay_ids[1 - used];
    wait_until("the private node to know the other relay's address", || {
        json::<Vec<GraphNode>>(&private.cli(&["nodes", "--json"])).is_some_and(|nodes| {
            nodes
                .iter()
                .any(|node| node.node_id == *other_relay && !node.addresses.is_empty())
        })
    });

    // Without its bootstrap link, it is reached through the relay alone.
    let dropped = private.cli(&["disconnect", &bootstrap_id]);
    assert!(dropped.status.success(), "{}", stderr(&dropped));
    reached_through(&first);

    // The relay dies: the private node takes the other one, and is
    // reached through it.
    let mut dead = relays[used].child.take().unwrap();
    dead.kill().unwrap();
    dead.wait().unwrap();
    reserved_at(Some(other_relay));
    reached_through(other_relay);
}
