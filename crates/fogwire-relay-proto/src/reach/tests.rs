use super::*;
use fogwire_identity::Keypair;
use fogwire_testkit::time::epoch;

const PORT: u16 = 7100;

fn id(n: u8) -> NodeId {
    Keypair::from_seed(&[n; 32]).node_id()
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn reach() -> Reach {
    Reach::new(Settings::new(PORT), 42)
}

/// Every message waiting, decoded.
fn sent(reach: &mut Reach) -> Vec<(NodeId, Message)> {
    std::iter::from_fn(|| reach.poll_transmit())
        .map(|(peer, bytes)| (peer, Message::decode(&bytes).unwrap()))
        .collect()
}

/// The nonce of the DIAL_BACK waiting for `peer`.
fn asked(reach: &mut Reach, peer: NodeId) -> u64 {
    let messages = sent(reach);
    messages
        .iter()
        .find_map(|(to, message)| match message {
            Message::DialBack { nonce, port } if *to == peer => {
                assert_eq!(*port, PORT);
                Some(*nonce)
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no check asked of the peer: {messages:?}"))
}

fn tell(reach: &mut Reach, peer: NodeId, message: Message, now: Instant) {
    reach.handle_message(peer, message, now);
}

fn result(nonce: u64, outcome: DialOutcome) -> Message {
    Message::DialBackResult { nonce, outcome }
}

/// `peer` links from `remote` and says it sees this node at `seen_at`.
fn sees(reach: &mut Reach, peer: NodeId, remote: &str, seen_at: &str, now: Instant) {
    reach.link_up(peer, addr(remote), now);
    tell(reach, peer, Message::Observed(addr(seen_at)), now);
}

/// The check asked of `peer` ends with `outcome`; with `evidence`, after
/// a connection from that address reached the listener.
fn answer(
    reach: &mut Reach,
    peer: NodeId,
    outcome: DialOutcome,
    evidence: Option<&str>,
    now: Instant,
) {
    let nonce = asked(reach, peer);
    if let Some(from) = evidence {
        reach.accepted(addr(from));
    }
    tell(reach, peer, result(nonce, outcome), now);
}

#[test]
fn a_link_tells_the_peer_where_it_is_seen() {
    let mut reach = reach();
    reach.link_up(id(1), addr("[::ffff:198.51.100.9]:40000"), epoch());
    // A dual-stack socket's mapped address goes out as the IPv4 one.
    assert_eq!(
        sent(&mut reach),
        vec![(id(1), Message::Observed(addr("198.51.100.9:40000")))]
    );
}

#[test]
fn a_check_passes_when_the_peers_connection_arrives() {
    let now = epoch();
    let mut reach = reach();
    let peer = id(1);
    reach.link_up(peer, addr("198.51.100.9:7100"), now);
    sent(&mut reach);
    assert!(!reach.take_changed());
    tell(
        &mut reach,
        peer,
        Message::Observed(addr("203.0.113.5:41234")),
        now,
    );
    let nonce = asked(&mut reach, peer);
    assert_eq!(reach.reachability(), Reachability::Unknown);
    // Its dial reaches the listener (from another port of the same host).
    reach.accepted(addr("198.51.100.9:50000"));
    tell(&mut reach, peer, result(nonce, DialOutcome::Reached), now);
    assert_eq!(reach.reachability(), Reachability::Public);
    assert_eq!(reach.advertised(), vec![addr("203.0.113.5:7100")]);
    assert!(reach.take_changed());
    assert!(!reach.take_changed());
    let report = reach.report();
    assert_eq!(report.addresses[0].state, AddressState::Confirmed);
    assert_eq!(report.addresses[0].confirmed_by, vec![peer]);
}

#[test]
fn a_peer_that_says_reached_without_dialing_proves_nothing() {
    let now = epoch();
    let mut reach = reach();
    let liar = id(1);
    sees(
        &mut reach,
        liar,
        "198.51.100.9:7100",
        "203.0.113.5:41234",
        now,
    );
    let nonce = asked(&mut reach, liar);
    // A connection from elsewhere is no evidence for this check.
    reach.accepted(addr("192.0.2.1:50000"));
    tell(&mut reach, liar, result(nonce, DialOutcome::Reached), now);
    assert_eq!(reach.reachability(), Reachability::Unknown);
    assert!(reach.advertised().is_empty());
    // It is not asked again this round.
    assert!(sent(&mut reach).is_empty());
}

#[test]
fn one_peer_that_cannot_dial_makes_a_lone_observation_private() {
    let now = epoch();
    let mut reach = reach();
    let relay = id(1);
    sees(
        &mut reach,
        relay,
        "198.51.100.9:7100",
        "203.0.113.5:41234",
        now,
    );
    answer(&mut reach, relay, DialOutcome::Unreachable, None, now);
    assert_eq!(reach.reachability(), Reachability::Private);
    assert!(reach.advertised().is_empty());
}

#[test]
fn two_witnesses_are_needed_to_refute_and_one_to_confirm() {
    let now = epoch();
    let mut reach = reach();
    let (first, second) = (id(1), id(2));
    reach.link_up(first, addr("198.51.100.1:7100"), now);
    reach.link_up(second, addr("198.51.100.2:7100"), now);
    tell(
        &mut reach,
        first,
        Message::Observed(addr("203.0.113.5:1000")),
        now,
    );
    tell(
        &mut reach,
        second,
        Message::Observed(addr("203.0.113.5:1001")),
        now,
    );
    answer(&mut reach, first, DialOutcome::Unreachable, None, now);
    assert_eq!(reach.reachability(), Reachability::Unknown);
    // The second is asked next, dials, and its connection arrives.
    answer(
        &mut reach,
        second,
        DialOutcome::Reached,
        Some("198.51.100.2:2000"),
        now,
    );
    assert_eq!(reach.reachability(), Reachability::Public);

    let mut reach = Reach::new(Settings::new(PORT), 1);
    reach.link_up(first, addr("198.51.100.1:7100"), now);
    reach.link_up(second, addr("198.51.100.2:7100"), now);
    tell(
        &mut reach,
        first,
        Message::Observed(addr("203.0.113.5:1000")),
        now,
    );
    tell(
        &mut reach,
        second,
        Message::Observed(addr("203.0.113.5:1001")),
        now,
    );
    answer(&mut reach, first, DialOutcome::WrongNode, None, now);
    answer(&mut reach, second, DialOutcome::Unreachable, None, now);
    assert_eq!(reach.reachability(), Reachability::Private);
}

#[test]
fn a_silent_peer_is_passed_over_after_the_timeout() {
    let now = epoch();
    let mut reach = reach();
    let (silent, helpful) = (id(1), id(2));
    sees(
        &mut reach,
        silent,
        "198.51.100.1:7100",
        "203.0.113.5:1000",
        now,
    );
    asked(&mut reach, silent);
    sees(
        &mut reach,
        helpful,
        "198.51.100.2:7100",
        "203.0.113.5:1001",
        now,
    );
    // One check per address at a time.
    assert!(
        !sent(&mut reach)
            .iter()
            .any(|(_, message)| matches!(message, Message::DialBack { .. }))
    );
    let deadline = reach.poll_timeout().unwrap();
    assert_eq!(deadline, now + Duration::from_secs(20));
    reach.handle_timeout(deadline);
    answer(
        &mut reach,
        helpful,
        DialOutcome::Reached,
        Some("198.51.100.2:2000"),
        deadline,
    );
    assert_eq!(reach.reachability(), Reachability::Public);
    // A late answer from the silent one changes nothing.
    tell(
        &mut reach,
        silent,
        result(1, DialOutcome::Unreachable),
        deadline,
    );
    assert_eq!(reach.reachability(), Reachability::Public);
}

#[test]
fn verdicts_are_checked_again_and_shown_meanwhile() {
    let now = epoch();
    let mut reach = reach();
    let peer = id(1);
    sees(&mut reach, peer, "198.51.100.9:7100", "203.0.113.5:1", now);
    answer(
        &mut reach,
        peer,
        DialOutcome::Reached,
        Some("198.51.100.9:2"),
        now,
    );
    let recheck = reach.poll_timeout().unwrap();
    assert_eq!(recheck, now + Duration::from_secs(30 * 60));
    reach.handle_timeout(recheck);
    let nonce = asked(&mut reach, peer);
    assert_eq!(
        reach.reachability(),
        Reachability::Public,
        "the old verdict holds"
    );
    // The port forward went away.
    tell(
        &mut reach,
        peer,
        result(nonce, DialOutcome::Unreachable),
        recheck,
    );
    assert_eq!(reach.reachability(), Reachability::Private);
    assert!(reach.advertised().is_empty());
}

#[test]
fn private_networks_only_make_a_local_node() {
    let now = epoch();
    let mut reach = reach();
    let peer = id(1);
    sees(&mut reach, peer, "127.0.0.1:7101", "127.0.0.1:50000", now);
    answer(
        &mut reach,
        peer,
        DialOutcome::Reached,
        Some("127.0.0.1:50001"),
        now,
    );
    assert_eq!(reach.reachability(), Reachability::Local);
    assert_eq!(reach.advertised(), vec![addr("127.0.0.1:7100")]);
}

#[test]
fn a_lan_address_does_not_hide_the_nat_in_front_of_it() {
    let now = epoch();
    let mut reach = reach();
    let (neighbour, far) = (id(1), id(2));
    sees(
        &mut reach,
        neighbour,
        "192.168.1.7:7100",
        "192.168.1.5:3000",
        now,
    );
    answer(
        &mut reach,
        neighbour,
        DialOutcome::Reached,
        Some("192.168.1.7:3001"),
        now,
    );
    sees(
        &mut reach,
        far,
        "198.51.100.2:7100",
        "203.0.113.5:3002",
        now,
    );
    answer(&mut reach, far, DialOutcome::Unreachable, None, now);
    assert_eq!(reach.reachability(), Reachability::Private);
    assert_eq!(reach.advertised(), vec![addr("192.168.1.5:7100")]);
}

#[test]
fn checks_for_others_dial_only_the_address_they_come_from_within_limits() {
    let now = epoch();
    let mut reach = reach();
    let asker = id(1);
    reach.link_up(asker, addr("203.0.113.5:41234"), now);
    sent(&mut reach);
    let dial = |nonce| Message::DialBack { nonce, port: 7200 };
    tell(&mut reach, asker, dial(1), now);
    assert_eq!(
        reach.poll_action(),
        Some(Action::Probe {
            peer: asker,
            nonce: 1,
            address: addr("203.0.113.5:7200")
        })
    );
    // One at a time per peer.
    tell(&mut reach, asker, dial(2), now);
    assert_eq!(reach.poll_action(), None);
    assert_eq!(
        sent(&mut reach),
        vec![(asker, result(2, DialOutcome::Refused))]
    );
    assert_eq!(reach.report().serving, 1);
    reach.probe_done(asker, 1, DialOutcome::Reached);
    assert_eq!(
        sent(&mut reach),
        vec![(asker, result(1, DialOutcome::Reached))]
    );
    // A stale completion is not reported twice.
    reach.probe_done(asker, 1, DialOutcome::Reached);
    assert!(sent(&mut reach).is_empty());
    // Four per ten minutes.
    for nonce in 3..6 {
        tell(&mut reach, asker, dial(nonce), now);
        assert!(reach.poll_action().is_some());
        reach.probe_done(asker, nonce, DialOutcome::Unreachable);
    }
    tell(&mut reach, asker, dial(6), now);
    assert_eq!(reach.poll_action(), None);
    let later = now + Duration::from_secs(10 * 60);
    tell(&mut reach, asker, dial(7), later);
    assert!(reach.poll_action().is_some());
}

#[test]
fn checks_for_others_are_bounded_in_all() {
    let now = epoch();
    let mut reach = reach();
    for n in 0..20 {
        let peer = id(n);
        reach.link_up(
            peer,
            SocketAddr::new(IpAddr::from([198, 51, 100, n]), 7100),
            now,
        );
        tell(
            &mut reach,
            peer,
            Message::DialBack {
                nonce: 1,
                port: 7100,
            },
            now,
        );
    }
    let probes = std::iter::from_fn(|| reach.poll_action()).count();
    assert_eq!(probes, Settings::new(PORT).serve_in_flight_max);
    let refused = sent(&mut reach)
        .into_iter()
        .filter(|(_, message)| *message == result(1, DialOutcome::Refused))
        .count();
    assert_eq!(refused, 20 - probes);
}

#[test]
fn peers_cannot_grow_the_candidates_without_bound() {
    let now = epoch();
    let mut reach = reach();
    for n in 0..40u8 {
        let peer = id(n);
        reach.link_up(
            peer,
            SocketAddr::new(IpAddr::from([198, 51, 100, n]), 7100),
            now,
        );
        // Each claims another address; a peer holds only its latest claim.
        for last in 0..3 {
            let claim = SocketAddr::new(IpAddr::from([203, 0, n, last]), 1);
            tell(&mut reach, peer, Message::Observed(claim), now);
        }
    }
    assert!(reach.report().addresses.len() <= CANDIDATES_MAX);
    // No lie confirms anything.
    assert_eq!(reach.reachability(), Reachability::Unknown);
    assert!(reach.advertised().is_empty());
}

#[test]
fn messages_from_strangers_change_nothing() {
    let now = epoch();
    let mut reach = reach();
    tell(
        &mut reach,
        id(1),
        Message::DialBack { nonce: 1, port: 1 },
        now,
    );
    tell(
        &mut reach,
        id(1),
        Message::Observed(addr("203.0.113.5:1")),
        now,
    );
    assert_eq!(reach.poll_action(), None);
    assert!(reach.report().addresses.is_empty());
    sees(&mut reach, id(1), "198.51.100.1:7100", "0.0.0.0:1", now);
    assert!(reach.report().addresses.is_empty());
}

#[test]
fn a_peer_that_leaves_mid_check_frees_the_address_for_another() {
    let now = epoch();
    let mut reach = reach();
    let (leaving, staying) = (id(1), id(2));
    sees(
        &mut reach,
        leaving,
        "198.51.100.1:7100",
        "203.0.113.5:1",
        now,
    );
    asked(&mut reach, leaving);
    sees(
        &mut reach,
        staying,
        "198.51.100.2:7100",
        "203.0.113.5:2",
        now,
    );
    reach.link_down(leaving, now);
    answer(&mut reach, staying, DialOutcome::Unreachable, None, now);
    assert_eq!(reach.reachability(), Reachability::Private);
}

#[test]
fn public_and_private_ranges() {
    for private in [
        "10.1.2.3",
        "172.16.0.1",
        "192.168.0.1",
        "100.64.0.1",
        "127.0.0.1",
        "169.254.1.1",
        "::1",
        "fd00::1",
        "fe80::1",
        "::ffff:10.0.0.1",
    ] {
        assert!(!is_public(private.parse().unwrap()), "{private}");
    }
    for public in [
        "203.0.113.5",
        "8.8.8.8",
        "100.128.0.1",
        "2001:db8::1",
        "::ffff:8.8.8.8",
    ] {
        assert!(is_public(public.parse().unwrap()), "{public}");
    }
}

#[test]
fn a_peer_that_starts_seeing_the_node_there_does_not_undo_the_verdict() {
    let now = epoch();
    let mut reach = reach();
    let (first, second) = (id(1), id(2));
    sees(
        &mut reach,
        first,
        "198.51.100.1:7100",
        "203.0.113.5:1000",
        now,
    );
    answer(&mut reach, first, DialOutcome::Unreachable, None, now);
    assert_eq!(reach.reachability(), Reachability::Private);
    assert!(reach.take_changed());
    // A relay links and sees the node at the same address: it is asked
    // too, and meanwhile the node stays private.
    sees(
        &mut reach,
        second,
        "198.51.100.2:7100",
        "203.0.113.5:1001",
        now,
    );
    assert_eq!(reach.reachability(), Reachability::Private);
    assert!(!reach.take_changed());
    answer(&mut reach, second, DialOutcome::Unreachable, None, now);
    assert_eq!(reach.reachability(), Reachability::Private);
    assert_eq!(reach.report().addresses[0].refuted_by.len(), 2);
}
