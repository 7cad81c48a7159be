use super::*;
use fogwire_identity::Keypair;
use fogwire_testkit::time::epoch;

fn id(n: u16) -> NodeId {
    let mut seed = [0u8; 32];
    seed[..2].copy_from_slice(&n.to_be_bytes());
    seed[31] = 1;
    Keypair::from_seed(&seed).node_id()
}

fn candidates(ids: impl IntoIterator<Item = u16>, price: u64) -> Vec<Candidate> {
    ids.into_iter()
        .map(|n| Candidate {
            id: id(n),
            price_per_gib: price,
        })
        .collect()
}

fn actions(relays: &mut Relays) -> Vec<RelayAction> {
    std::iter::from_fn(|| relays.poll_action()).collect()
}

fn links(relays: &mut Relays) -> Vec<NodeId> {
    actions(relays)
        .into_iter()
        .filter_map(|action| match action {
            RelayAction::Link(id) => Some(id),
            RelayAction::Unlink(_) => None,
        })
        .collect()
}

/// The two relays with the best scores for `me` among `ids`.
fn best_two(me: NodeId, ids: impl IntoIterator<Item = u16>) -> Vec<NodeId> {
    let mut ranked: Vec<NodeId> = ids.into_iter().map(id).collect();
    ranked.sort_by_key(|relay| (std::cmp::Reverse(score(&me, relay)), *relay));
    ranked.truncate(2);
    ranked
}

#[test]
fn a_private_node_links_the_best_relays_and_asks_each_for_a_reservation() {
    let now = epoch();
    let me = id(0);
    let mut relays = Relays::new(
        me,
        ClientSettings {
            keep: 2,
            price_max: 50,
        },
    );
    relays.set_candidates(candidates(1..=5, 10), now);
    assert!(actions(&mut relays).is_empty(), "a public node needs none");
    relays.set_needed(true, now);
    let mut linked = links(&mut relays);
    linked.sort_by_key(|relay| (std::cmp::Reverse(score(&me, relay)), *relay));
    assert_eq!(linked, best_two(me, 1..=5));
    relays.linked(linked[0]);
    let (to, bytes) = relays.poll_transmit().unwrap();
    assert_eq!(to, linked[0]);
    assert_eq!(
        Message::decode(&bytes),
        Ok(Message::Reserve { price_max: 50 })
    );
    relays.reservation(linked[0], ReserveOutcome::Accepted, now);
    let states: BTreeMap<NodeId, RelayState> =
        relays.chosen().map(|(id, state, _)| (id, state)).collect();
    assert_eq!(states[&linked[0]], RelayState::Reserved);
    assert_eq!(states[&linked[1]], RelayState::Linking);
}

#[test]
fn a_refusing_or_lost_relay_is_replaced_and_retried_later() {
    let now = epoch();
    let me = id(0);
    let mut relays = Relays::new(
        me,
        ClientSettings {
            keep: 1,
            price_max: 50,
        },
    );
    relays.set_candidates(candidates(1..=3, 10), now);
    relays.set_needed(true, now);
    let first = links(&mut relays)[0];
    relays.linked(first);
    relays.reservation(first, ReserveOutcome::Full, now);
    let after_refusal = actions(&mut relays);
    assert_eq!(after_refusal[0], RelayAction::Unlink(first));
    let RelayAction::Link(second) = after_refusal[1] else {
        panic!("{after_refusal:?}");
    };
    assert_ne!(second, first);
    // The second cannot be linked: the third is tried.
    relays.link_failed(second, now);
    let third = links(&mut relays)[0];
    assert!(third != first && third != second);
    relays.link_failed(third, now);
    assert!(links(&mut relays).is_empty(), "every relay failed lately");
    // A minute later the first failures may be tried again.
    let retry = relays.poll_timeout().unwrap();
    assert_eq!(retry, now + Duration::from_secs(60));
    relays.handle_timeout(retry);
    assert_eq!(links(&mut relays).len(), 1);
}

#[test]
fn failures_in_a_row_wait_longer_up_to_half_an_hour() {
    let mut now = epoch();
    let mut relays = Relays::new(
        id(0),
        ClientSettings {
            keep: 1,
            price_max: 50,
        },
    );
    relays.set_candidates(candidates([1], 10), now);
    relays.set_needed(true, now);
    let mut waits = Vec::new();
    for _ in 0..8 {
        let relay = links(&mut relays)[0];
        relays.link_failed(relay, now);
        let retry = relays.poll_timeout().unwrap();
        waits.push((retry - now).as_secs());
        now = retry;
        relays.handle_timeout(now);
    }
    assert_eq!(waits, [60, 120, 240, 480, 960, 1800, 1800, 1800]);
}

#[test]
fn a_node_that_becomes_public_lets_its_relays_go() {
    let now = epoch();
    let mut relays = Relays::new(id(0), ClientSettings::default());
    relays.set_candidates(candidates(1..=3, 0), now);
    relays.set_needed(true, now);
    let linked = links(&mut relays);
    relays.set_needed(false, now);
    let mut unlinked: Vec<NodeId> = actions(&mut relays)
        .into_iter()
        .map(|action| match action {
            RelayAction::Unlink(id) => id,
            RelayAction::Link(_) => panic!("links nothing"),
        })
        .collect();
    unlinked.sort();
    let mut expected = linked;
    expected.sort();
    assert_eq!(unlinked, expected);
    assert_eq!(relays.chosen().count(), 0);
}

#[test]
fn relays_above_the_price_are_never_chosen() {
    let now = epoch();
    let mut relays = Relays::new(
        id(0),
        ClientSettings {
            keep: 2,
            price_max: 5,
        },
    );
    let mut offered = candidates(1..=4, 10);
    offered.extend(candidates([9], 5));
    relays.set_candidates(offered, now);
    relays.set_needed(true, now);
    assert_eq!(links(&mut relays), vec![id(9)]);
}

#[test]
fn new_relays_never_make_a_client_leave_one_that_works() {
    let now = epoch();
    let me = id(0);
    let mut relays = Relays::new(
        me,
        ClientSettings {
            keep: 1,
            price_max: 50,
        },
    );
    relays.set_candidates(candidates([1], 10), now);
    relays.set_needed(true, now);
    assert_eq!(links(&mut relays), vec![id(1)]);
    relays.set_candidates(candidates(1..=50, 10), now);
    assert!(actions(&mut relays).is_empty());
}

#[test]
fn clients_spread_evenly_over_relays() {
    let now = epoch();
    let relay_ids = 1..=20u16;
    let mut load: BTreeMap<NodeId, usize> = BTreeMap::new();
    let clients = 1000u16;
    for client in 0..clients {
        let mut relays = Relays::new(id(1000 + client), ClientSettings::default());
        relays.set_candidates(candidates(relay_ids.clone(), 1), now);
        relays.set_needed(true, now);
        for relay in links(&mut relays) {
            *load.entry(relay).or_default() += 1;
        }
    }
    let mean = 2 * usize::from(clients) / 20;
    let busiest = load.values().copied().max().unwrap();
    assert!(
        busiest * 2 <= mean * 3,
        "{busiest} clients on one relay, mean {mean}"
    );
}

#[test]
fn a_relay_carries_clients_up_to_its_limit_at_its_price() {
    let mut clients = Clients::new(Some(ServeSettings {
        clients_max: 2,
        price_per_gib: 10,
    }));
    assert_eq!(clients.reserve(id(1), 9), ReserveOutcome::TooExpensive);
    assert_eq!(clients.reserve(id(1), 10), ReserveOutcome::Accepted);
    assert_eq!(
        clients.reserve(id(1), 10),
        ReserveOutcome::Accepted,
        "again"
    );
    assert_eq!(clients.reserve(id(2), 99), ReserveOutcome::Accepted);
    assert_eq!(clients.reserve(id(3), 99), ReserveOutcome::Full);
    clients.link_down(&id(1));
    assert_eq!(clients.reserve(id(3), 99), ReserveOutcome::Accepted);
    assert!(clients.is_client(&id(3)) && !clients.is_client(&id(1)));
    let mut not_a_relay = Clients::new(None);
    assert_eq!(not_a_relay.reserve(id(1), 99), ReserveOutcome::NotServing);
}
