//! Deterministic tests of routers joined by in-memory links, with virtual
//! time and a per-link delay.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fogwire_identity::{Keypair, NodeId};
use fogwire_link_proto::LinkIdentity;

use super::message::{Control, FailReason, TeardownReason};
use super::*;

const LINK_DELAY: Duration = Duration::from_millis(5);

/// The origin of virtual time: read once, everything after is computed.
#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    Instant::now()
}

/// Decides whether a message (from, to, what) is lost.
type DropFilter = Box<dyn FnMut(usize, usize, &Transmit) -> bool>;

struct Net {
    now: Instant,
    unix_ms: u64,
    identities: Vec<Arc<LinkIdentity>>,
    routers: Vec<Router>,
    links: BTreeSet<(usize, usize)>,
    /// (deliver at, sequence) → (from, to, what)
    in_flight: BTreeMap<(Instant, u64), (usize, usize, Transmit)>,
    sequence: u64,
    events: Vec<Vec<Event>>,
    /// Drop the next message matching this, once.
    drop_next: Option<DropFilter>,
}

impl Net {
    fn new(count: usize) -> Self {
        let identities: Vec<Arc<LinkIdentity>> = (0..count)
            .map(|i| {
                Arc::new(
                    LinkIdentity::generate(Arc::new(Keypair::from_seed(&[i as u8 + 1; 32])))
                        .unwrap(),
                )
            })
            .collect();
        let routers = identities
            .iter()
            .map(|identity| Router::new(identity.clone(), Config::default()))
            .collect();
        Self {
            now: epoch(),
            unix_ms: 1_800_000_000_000,
            identities,
            routers,
            links: BTreeSet::new(),
            in_flight: BTreeMap::new(),
            sequence: 0,
            events: vec![Vec::new(); count],
            drop_next: None,
        }
    }

    fn line(count: usize) -> Self {
        let mut net = Self::new(count);
        for i in 0..count - 1 {
            net.link(i, i + 1);
        }
        net
    }

    fn now(&self) -> Now {
        Now {
            instant: self.now,
            unix_ms: self.unix_ms,
        }
    }

    fn id(&self, index: usize) -> NodeId {
        self.identities[index].node_id()
    }

    fn index(&self, id: NodeId) -> usize {
        self.identities
            .iter()
            .position(|i| i.node_id() == id)
            .unwrap()
    }

    fn hop(&self, index: usize) -> Hop {
        Hop {
            node: self.id(index),
            link_key: self.identities[index]
                .noise_static_key()
                .try_into()
                .unwrap(),
        }
    }

    fn hops(&self, path: &[usize]) -> Vec<Hop> {
        path.iter().map(|&i| self.hop(i)).collect()
    }

    fn link(&mut self, a: usize, b: usize) {
        self.links.insert((a.min(b), a.max(b)));
        let (ida, idb) = (self.id(a), self.id(b));
        self.routers[a].link_up(idb);
        self.routers[b].link_up(ida);
    }

    fn cut(&mut self, a: usize, b: usize) {
        self.links.remove(&(a.min(b), a.max(b)));
        // Messages on the wire are lost with the link.
        self.in_flight
            .retain(|_, (from, to, _)| !((*from == a && *to == b) || (*from == b && *to == a)));
        let (ida, idb) = (self.id(a), self.id(b));
        self.routers[a].link_down(idb);
        self.routers[b].link_down(ida);
    }

    fn collect(&mut self) {
        for from in 0..self.routers.len() {
            while let Some(transmit) = self.routers[from].poll_transmit() {
                let to_id = match &transmit {
                    Transmit::Control { to, .. } | Transmit::Data { to, .. } => *to,
                };
                let to = self.index(to_id);
                if !self.links.contains(&(from.min(to), from.max(to))) {
                    continue;
                }
                if let Some(filter) = &mut self.drop_next
                    && filter(from, to, &transmit)
                {
                    self.drop_next = None;
                    continue;
                }
                self.sequence += 1;
                self.in_flight
                    .insert((self.now + LINK_DELAY, self.sequence), (from, to, transmit));
            }
            while let Some(event) = self.routers[from].poll_event() {
                self.events[from].push(event);
            }
        }
    }

    /// Runs the network for `duration` of virtual time.
    fn run(&mut self, duration: Duration) {
        let end = self.now + duration;
        self.collect();
        loop {
            let next_message = self.in_flight.keys().next().map(|(at, _)| *at);
            let next_timer = self.routers.iter().filter_map(Router::poll_timeout).min();
            let Some(next) = [next_message, next_timer].into_iter().flatten().min() else {
                break;
            };
            if next > end {
                break;
            }
            let elapsed = next.saturating_duration_since(self.now);
            self.now = self.now.max(next);
            self.unix_ms += elapsed.as_millis() as u64;
            while let Some(entry) = self.in_flight.first_entry() {
                if entry.key().0 > self.now {
                    break;
                }
                let (from, to, transmit) = entry.remove();
                let from_id = self.id(from);
                let now = self.now();
                match transmit {
                    Transmit::Control { message, .. } => {
                        self.routers[to].handle_control(from_id, message, now)
                    }
                    Transmit::Data { header, body, .. } => {
                        let mut packet = header.to_vec();
                        packet.extend_from_slice(&body);
                        self.routers[to].handle_data(from_id, Bytes::from(packet), now)
                    }
                }
            }
            let now = self.now();
            for router in &mut self.routers {
                if router.poll_timeout().is_some_and(|t| t <= now.instant) {
                    router.handle_timeout(now);
                }
            }
            self.collect();
        }
        let elapsed = end.saturating_duration_since(self.now);
        self.now = end;
        self.unix_ms += elapsed.as_millis() as u64;
    }

    fn take_events(&mut self, node: usize) -> Vec<Event> {
        std::mem::take(&mut self.events[node])
    }

    fn open(&mut self, from: usize, path: &[usize]) -> RouteId {
        let hops = self.hops(path);
        let now = self.now();
        let route = self.routers[from].open_route(&hops, now).unwrap();
        self.collect();
        route
    }

    /// Opens a route and runs until it is up; returns route and session.
    fn open_up(&mut self, from: usize, path: &[usize]) -> (RouteId, SessionId) {
        let route = self.open(from, path);
        self.run(Duration::from_millis(200));
        let events = self.take_events(from);
        match events.as_slice() {
            [
                Event::RouteUp {
                    route: r, session, ..
                },
            ] if *r == route => (route, *session),
            other => panic!("route not up: {other:?}"),
        }
    }
}

#[test]
fn a_route_is_set_up_in_one_round_trip_and_carries_datagrams_both_ways() {
    let mut net = Net::line(4);
    let route = net.open(0, &[1, 2, 3]);
    net.run(Duration::from_millis(200));
    let events = net.take_events(0);
    let [
        Event::RouteUp {
            route: r,
            session,
            setup_time,
        },
    ] = events.as_slice()
    else {
        panic!("{events:?}");
    };
    assert_eq!(*r, route);
    // One round trip over three links of 5 ms each.
    assert_eq!(*setup_time, 6 * LINK_DELAY);
    let session = *session;
    let destination_events = net.take_events(3);
    let [
        Event::SessionOpened {
            session: far_session,
            peer,
        },
    ] = destination_events.as_slice()
    else {
        panic!("{destination_events:?}");
    };
    assert_eq!(*peer, net.id(0));
    let far_session = *far_session;

    net.routers[0]
        .send_datagram(session, b"hello far end")
        .unwrap();
    net.routers[3]
        .send_datagram(far_session, b"hello source")
        .unwrap();
    net.run(Duration::from_millis(50));
    assert!(net.take_events(3).contains(&Event::Datagram {
        session: far_session,
        data: Bytes::from_static(b"hello far end")
    }));
    assert!(net.take_events(0).contains(&Event::Datagram {
        session,
        data: Bytes::from_static(b"hello source")
    }));
    // Relays counted the packets each way.
    for relay in [1, 2] {
        let rules: Vec<RuleInfo> = net.routers[relay].rules().collect();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].counters.packets_forward, 1);
        assert_eq!(rules[0].counters.packets_backward, 1);
        assert_eq!(rules[0].prev, Some(net.id(relay - 1)));
        assert_eq!(rules[0].next, Some(net.id(relay + 1)));
    }
}

#[test]
fn ping_measures_the_round_trip_through_the_route() {
    let mut net = Net::line(3);
    let (_, session) = net.open_up(0, &[1, 2]);
    let now = net.now();
    net.routers[0].ping(session, 42, now).unwrap();
    net.run(Duration::from_millis(50));
    let events = net.take_events(0);
    assert!(
        events.contains(&Event::Pong {
            session,
            id: 42,
            rtt: 4 * LINK_DELAY
        }),
        "{events:?}"
    );
}

#[test]
fn keepalives_hold_routes_and_closing_removes_every_rule() {
    let mut net = Net::line(4);
    let (route, _) = net.open_up(0, &[1, 2, 3]);
    net.take_events(3);
    // Far longer than the rule timeout: keepalives hold the route.
    net.run(Duration::from_secs(30));
    assert!(net.take_events(0).is_empty());
    assert!(net.routers.iter().all(|r| r.rule_count() == 1));
    assert!(net.routers[0].close_route(route));
    net.run(Duration::from_millis(100));
    assert!(net.routers.iter().all(|r| r.rule_count() == 0));
    assert!(matches!(
        net.take_events(3).as_slice(),
        [Event::SessionClosed {
            reason: TeardownReason::Closed,
            ..
        }]
    ));
}

#[test]
fn a_cut_link_tears_the_route_down_both_ways_at_once() {
    let mut net = Net::line(5);
    let (route, _) = net.open_up(0, &[1, 2, 3, 4]);
    net.take_events(4);
    net.cut(2, 3);
    net.run(Duration::from_millis(50));
    assert_eq!(
        net.take_events(0),
        vec![Event::RouteDown {
            route,
            reason: TeardownReason::LinkDown
        }]
    );
    assert!(matches!(
        net.take_events(4).as_slice(),
        [Event::SessionClosed {
            reason: TeardownReason::LinkDown,
            ..
        }]
    ));
    assert!(net.routers.iter().all(|r| r.rule_count() == 0));
}

#[test]
fn a_vanished_source_leaves_no_rule_behind() {
    let mut net = Net::line(4);
    net.open_up(0, &[1, 2, 3]);
    // The source stops without a word: its node is simply gone.
    net.links.retain(|&(a, b)| a != 0 && b != 0);
    net.routers[0] = Router::new(net.identities[0].clone(), Config::default());
    net.run(Duration::from_secs(7));
    assert!(net.routers[1..].iter().all(|r| r.rule_count() == 0));
}

#[test]
fn the_source_notices_a_silently_dead_relay_within_two_seconds() {
    let mut net = Net::line(4);
    let (route, _) = net.open_up(0, &[1, 2, 3]);
    // Relay 2 freezes: links stay "up" but nothing crosses it.
    net.links.remove(&(1, 2));
    net.links.remove(&(2, 3));
    let frozen_at = net.now;
    let mut noticed = None;
    for _ in 0..40 {
        net.run(Duration::from_millis(50));
        if net.take_events(0).contains(&Event::RouteDown {
            route,
            reason: TeardownReason::Expired,
        }) {
            noticed = Some(net.now - frozen_at);
            break;
        }
    }
    let noticed = noticed.expect("the source never noticed");
    assert!(noticed <= Duration::from_secs(2), "{noticed:?}");
}

#[test]
fn failures_name_the_hop_and_the_reason() {
    // Hop 2 has no link to hop 3.
    let mut net = Net::new(4);
    net.link(0, 1);
    net.link(1, 2);
    let route = net.open(0, &[1, 2, 3]);
    net.run(Duration::from_millis(200));
    assert_eq!(
        net.take_events(0),
        vec![Event::RouteFailed {
            route,
            error: SetupError::Hop {
                index: 1,
                node: net.id(2),
                reason: FailReason::NoLink
            }
        }]
    );
    assert!(net.routers.iter().all(|r| r.rule_count() == 0));

    // Hop 2 advertises a key it no longer has: it cannot read its layer.
    let mut net = Net::line(4);
    let mut hops = net.hops(&[1, 2, 3]);
    hops[1].link_key = net.hop(0).link_key;
    let now = net.now();
    let route = net.routers[0].open_route(&hops, now).unwrap();
    net.run(Duration::from_millis(200));
    assert_eq!(
        net.take_events(0),
        vec![Event::RouteFailed {
            route,
            error: SetupError::Hop {
                index: 1,
                node: net.id(2),
                reason: FailReason::Undecryptable
            }
        }]
    );
    assert!(net.routers.iter().all(|r| r.rule_count() == 0));
}

#[test]
fn a_lost_setup_is_retransmitted_without_allocating_twice() {
    let mut net = Net::line(4);
    // The first SETUP crossing 1→2 is lost.
    net.drop_next = Some(Box::new(|from, to, transmit| {
        from == 1
            && to == 2
            && matches!(transmit, Transmit::Control { message, .. }
                if matches!(Control::decode(message.clone()), Ok(Control::Setup { .. })))
    }));
    let route = net.open(0, &[1, 2, 3]);
    net.run(Duration::from_secs(1));
    let events = net.take_events(0);
    assert!(
        matches!(events.as_slice(), [Event::RouteUp { route: r, .. }] if *r == route),
        "{events:?}"
    );
    assert!(net.routers.iter().all(|r| r.rule_count() == 1));
}

#[test]
fn an_unanswered_setup_times_out() {
    let mut net = Net::line(3);
    // Everything from 1 to 2 is lost: 2 never hears, nothing comes back.
    net.links.remove(&(1, 2));
    let route = net.open(0, &[1, 2]);
    net.run(Duration::from_secs(6));
    assert_eq!(
        net.take_events(0),
        vec![Event::RouteFailed {
            route,
            error: SetupError::Timeout {
                timeout: Config::default().setup_timeout
            }
        }]
    );
    net.run(Duration::from_secs(6));
    assert!(net.routers.iter().all(|r| r.rule_count() == 0));
}

#[test]
fn a_replayed_setup_is_refused() {
    let mut net = Net::line(3);
    let mut captured = None;
    let route = net.open(0, &[1, 2]);
    // Capture the SETUP as relay 1 forwards it.
    net.collect();
    for (_, (from, to, transmit)) in net.in_flight.iter() {
        if *from == 0 && *to == 1 {
            captured = Some(transmit.clone());
        }
    }
    net.run(Duration::from_millis(100));
    assert!(
        matches!(net.take_events(0).as_slice(), [Event::RouteUp { route: r, .. }] if *r == route)
    );
    // An attacker replays the same bytes under another label on the link.
    let Some(Transmit::Control { message, .. }) = captured else {
        panic!()
    };
    let Ok(Control::Setup { onion, .. }) = Control::decode(message) else {
        panic!()
    };
    let replay = Control::Setup {
        prev_label: 12345,
        onion,
    }
    .encode();
    let now = net.now();
    let from = net.id(0);
    net.routers[1].handle_control(from, replay, now);
    let answer = net.routers[1].poll_transmit();
    assert!(matches!(answer, Some(Transmit::Control { message, .. })
            if matches!(Control::decode(message.clone()), Ok(Control::Fail { to_label: 12345, .. }))),);
    assert_eq!(net.routers[1].rule_count(), 1);
}
