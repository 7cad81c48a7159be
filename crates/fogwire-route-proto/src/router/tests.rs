//! Deterministic tests of routers joined by in-memory links, with virtual
//! time and a per-link delay.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fogwire_identity::{Keypair, NodeId};
use fogwire_link_proto::LinkIdentity;

use super::message::{Control, FailReason, TeardownReason};
use super::receipt::Receipt;
use super::*;

const LINK_DELAY: Duration = Duration::from_millis(5);

use fogwire_testkit::time::epoch;

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
    /// Stream bytes each node received, consumed as they arrive.
    received: BTreeMap<(usize, SessionId, StreamId), Vec<u8>>,
    /// Data still to write: (node, session, stream) → rest, then finish.
    writers: BTreeMap<(usize, SessionId, StreamId), Bytes>,
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
            received: BTreeMap::new(),
            writers: BTreeMap::new(),
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
        let now = self.now();
        self.routers[a].link_down(idb, now);
        self.routers[b].link_down(ida, now);
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
                if let Event::StreamData {
                    session,
                    stream,
                    data,
                } = &event
                {
                    self.received
                        .entry((from, *session, *stream))
                        .or_default()
                        .extend_from_slice(data);
                    self.routers[from].stream_consumed(*session, *stream, data.len() as u64);
                    continue;
                }
                self.events[from].push(event);
            }
        }
        self.feed();
    }

    /// Writes what the writers still have, finishing streams whose data
    /// is all taken.
    fn feed(&mut self) {
        let now = self.now();
        let keys: Vec<(usize, SessionId, StreamId)> = self.writers.keys().copied().collect();
        for key @ (node, session, stream) in keys {
            let Some(rest) = self.writers.get(&key).cloned() else {
                continue;
            };
            let Ok(taken) = self.routers[node].stream_write(session, stream, &rest, now) else {
                self.writers.remove(&key);
                continue;
            };
            if taken == rest.len() {
                self.writers.remove(&key);
                self.routers[node]
                    .stream_finish(session, stream, now)
                    .unwrap();
            } else {
                self.writers.insert(key, rest.slice(taken..));
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
        .send_datagram(session, 7, b"hello far end")
        .unwrap();
    net.routers[3]
        .send_datagram(far_session, 9, b"hello source")
        .unwrap();
    net.run(Duration::from_millis(50));
    assert!(net.take_events(3).contains(&Event::Datagram {
        session: far_session,
        port: 7,
        data: Bytes::from_static(b"hello far end")
    }));
    assert!(net.take_events(0).contains(&Event::Datagram {
        session,
        port: 9,
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
    let now = net.now();
    assert!(net.routers[0].close_route(route, now));
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
fn a_cut_link_tears_the_route_down_both_ways_and_tells_the_source_where() {
    let mut net = Net::line(5);
    let (route, _) = net.open_up(0, &[1, 2, 3, 4]);
    net.take_events(4);
    net.cut(2, 3);
    net.run(Duration::from_millis(50));
    assert_eq!(
        net.take_events(0),
        vec![Event::RouteBroken {
            route,
            path: vec![net.id(1), net.id(2), net.id(3), net.id(4)],
            cause: Broken::LinkDown {
                from: net.id(2),
                to: net.id(3)
            }
        }]
    );
    assert!(net.routers.iter().all(|r| r.rule_count() == 0));
    // The destination waits for the source to resume the session…
    assert!(net.take_events(4).is_empty());
    let now = net.now();
    assert!(net.routers[0].abandon_route(route, "no other path", now));
    net.collect();
    assert_eq!(
        net.take_events(0),
        vec![Event::RouteDown {
            route,
            reason: RouteEnd::Abandoned("no other path".into())
        }]
    );
    // …and gives up after the grace period.
    net.run(Config::default().resume_grace + Duration::from_secs(2));
    assert!(matches!(
        net.take_events(4).as_slice(),
        [Event::SessionClosed {
            reason: TeardownReason::LinkDown,
            ..
        }]
    ));
    assert!(net.routers.iter().all(|r| r.session_count() == 0));
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
        if net.take_events(0).iter().any(|event| {
            matches!(event, Event::RouteBroken { route: r, cause: Broken::Silent, .. } if *r == route)
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

/// Runs until `done` holds or `limit` passes; returns whether it held.
fn run_until(net: &mut Net, limit: Duration, mut done: impl FnMut(&Net) -> bool) -> bool {
    let step = Duration::from_millis(20);
    let mut waited = Duration::ZERO;
    while waited < limit {
        if done(net) {
            return true;
        }
        net.run(step);
        waited += step;
    }
    done(net)
}

fn pattern(len: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<u8>>(),
    )
}

fn far_session(events: &[Event]) -> SessionId {
    events
        .iter()
        .find_map(|event| match event {
            Event::SessionOpened { session, .. } => Some(*session),
            _ => None,
        })
        .expect("no session opened")
}

#[test]
fn a_stream_carries_bytes_both_ways_intact_and_closes_cleanly() {
    let mut net = Net::line(4);
    let (_, session) = net.open_up(0, &[1, 2, 3]);
    let far = far_session(&net.take_events(3));
    let now = net.now();
    let stream = net.routers[0].open_stream(session, now).unwrap();
    let upload = pattern(10 * 1024 * 1024 + 123, 1);
    net.writers.insert((0, session, stream), upload.clone());
    net.feed();
    assert!(run_until(&mut net, Duration::from_secs(30), |net| {
        net.received.get(&(3, far, stream)).map_or(0, Vec::len) == upload.len()
    }));
    assert!(net.take_events(3).contains(&Event::StreamOpened {
        session: far,
        stream
    }));
    // The far end answers on the same stream and finishes it.
    let answer = pattern(300_000, 2);
    net.writers.insert((3, far, stream), answer.clone());
    net.feed();
    net.run(Duration::from_secs(2));
    assert_eq!(net.received[&(3, far, stream)], upload);
    assert_eq!(net.received[&(0, session, stream)], answer);
    for (node, session) in [(0, session), (3, far)] {
        assert!(
            net.take_events(node).contains(&Event::StreamClosed {
                session,
                stream,
                error: None
            }),
            "node {node}"
        );
    }
}

#[test]
fn flow_control_holds_a_sender_to_the_readers_pace() {
    let mut net = Net::line(3);
    let (_, session) = net.open_up(0, &[1, 2]);
    let far = far_session(&net.take_events(2));
    let now = net.now();
    let stream = net.routers[0].open_stream(session, now).unwrap();
    // A reader that never consumes: the sender may have at most one
    // window in flight, whatever it offers.
    let window = Config::default().stream.window as usize;
    let offered = pattern(4 * window, 3);
    let taken = net.routers[0]
        .stream_write(session, stream, &offered, now)
        .unwrap();
    assert!(taken <= Config::default().stream.send_buffer);
    // Deliver by hand, without consuming.
    net.collect();
    let mut delivered = 0;
    for _ in 0..200 {
        let end = net.now + Duration::from_millis(10);
        while let Some(entry) = net.in_flight.first_entry() {
            if entry.key().0 > end {
                break;
            }
            let (from, to, transmit) = entry.remove();
            let from_id = net.id(from);
            let now = net.now();
            match transmit {
                Transmit::Control { message, .. } => {
                    net.routers[to].handle_control(from_id, message, now)
                }
                Transmit::Data { header, body, .. } => {
                    let mut packet = header.to_vec();
                    packet.extend_from_slice(&body);
                    net.routers[to].handle_data(from_id, Bytes::from(packet), now)
                }
            }
        }
        net.now = end;
        for node in 0..3 {
            while let Some(transmit) = net.routers[node].poll_transmit() {
                let to = net.index(match &transmit {
                    Transmit::Control { to, .. } | Transmit::Data { to, .. } => *to,
                });
                net.sequence += 1;
                net.in_flight
                    .insert((net.now + LINK_DELAY, net.sequence), (node, to, transmit));
            }
            while let Some(event) = net.routers[node].poll_event() {
                if let Event::StreamData { data, .. } = event {
                    assert_eq!(node, 2);
                    delivered += data.len();
                }
            }
        }
    }
    assert_eq!(delivered, window);
    let _ = far;
}

#[test]
fn a_stream_survives_a_relay_dying_mid_transfer_on_a_repaired_route() {
    // Two ways from 0 to 3: through 1, and through 2.
    let mut net = Net::new(4);
    for (a, b) in [(0, 1), (1, 3), (0, 2), (2, 3)] {
        net.link(a, b);
    }
    let (route, session) = net.open_up(0, &[1, 3]);
    let far = far_session(&net.take_events(3));
    let now = net.now();
    let stream = net.routers[0].open_stream(session, now).unwrap();
    let upload = pattern(40 * 1024 * 1024, 4);
    net.writers.insert((0, session, stream), upload.clone());
    net.feed();
    assert!(run_until(&mut net, Duration::from_secs(10), |net| {
        net.received.get(&(3, far, stream)).map_or(0, Vec::len) > 4 * 1024 * 1024
    }));
    // Relay 1 dies: both its links go.
    net.cut(0, 1);
    net.cut(1, 3);
    net.run(Duration::from_millis(20));
    let events = net.take_events(0);
    let Some(Event::RouteBroken { path, cause, .. }) = events
        .iter()
        .find(|e| matches!(e, Event::RouteBroken { .. }))
    else {
        panic!("{events:?}");
    };
    assert_eq!(path, &vec![net.id(1), net.id(3)]);
    assert_eq!(
        cause,
        &Broken::LinkDown {
            from: net.id(0),
            to: net.id(1)
        }
    );
    let hops = net.hops(&[2, 3]);
    let now = net.now();
    net.routers[0].repair_route(route, &hops, now).unwrap();
    net.collect();
    assert!(run_until(&mut net, Duration::from_secs(30), |net| {
        net.received.get(&(3, far, stream)).map_or(0, Vec::len) == upload.len()
    }));
    assert_eq!(
        net.received[&(3, far, stream)],
        upload,
        "bytes lost or duplicated"
    );
    let events = net.take_events(0);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::RouteRepaired { route: r, .. } if *r == route)),
        "{events:?}"
    );
    assert!(
        net.take_events(3)
            .contains(&Event::SessionResumed { session: far })
    );
    assert_eq!(
        net.routers[0].route_path(route),
        Some(&[net.id(2), net.id(3)][..])
    );
}

#[test]
fn lost_stream_packets_are_resent() {
    let mut net = Net::line(3);
    let (_, session) = net.open_up(0, &[1, 2]);
    let far = far_session(&net.take_events(2));
    let now = net.now();
    let stream = net.routers[0].open_stream(session, now).unwrap();
    let upload = pattern(3 * 1024 * 1024, 5);
    net.writers.insert((0, session, stream), upload.clone());
    // Every 7th data packet the relay forwards is lost.
    let mut count = 0u32;
    net.drop_next = None;
    net.feed();
    for _ in 0..2000 {
        net.collect();
        let mut kept = BTreeMap::new();
        for (key, (from, to, transmit)) in std::mem::take(&mut net.in_flight) {
            if from == 1 && matches!(transmit, Transmit::Data { .. }) {
                count += 1;
                if count.is_multiple_of(7) {
                    continue;
                }
            }
            kept.insert(key, (from, to, transmit));
        }
        net.in_flight = kept;
        net.run(Duration::from_millis(5));
        if net.received.get(&(2, far, stream)).map_or(0, Vec::len) == upload.len() {
            break;
        }
    }
    assert_eq!(net.received[&(2, far, stream)], upload);
}

#[test]
fn relays_get_receipts_signed_by_the_source_and_only_their_own() {
    let mut net = Net::line(4);
    let (route, session) = net.open_up(0, &[1, 2, 3]);
    net.take_events(3);
    net.routers[0]
        .send_datagram(session, 1, &[0u8; 1000])
        .unwrap();
    net.run(Config::default().receipt_interval + Duration::from_secs(1));
    let counters = net.routers[0].route_counters(route).unwrap();
    for relay in [1, 2] {
        let receipts: Vec<Receipt> = net
            .take_events(relay)
            .into_iter()
            .filter_map(|event| match event {
                Event::Receipt { receipt, encoded } => {
                    assert_eq!(Receipt::decode(&encoded).unwrap(), receipt);
                    Some(receipt)
                }
                _ => None,
            })
            .collect();
        assert_eq!(receipts.len(), 1, "relay {relay}");
        let receipt = &receipts[0];
        assert_eq!(receipt.source, net.id(0));
        assert_eq!(receipt.relay, net.id(relay));
        assert_eq!(receipt.counters.packets_forward, counters.packets_forward);
        let tag = net.routers[relay].rules().next().unwrap().route_tag;
        assert_eq!(receipt.route_tag, tag);
    }
    // The destination gets none.
    assert!(
        !net.take_events(3)
            .iter()
            .any(|e| matches!(e, Event::Receipt { .. }))
    );
    // No new traffic, no new receipts; closing sends the final ones.
    net.run(Config::default().receipt_interval * 2);
    assert!(net.take_events(1).is_empty());
    net.routers[0].send_datagram(session, 1, b"more").unwrap();
    let now = net.now();
    net.routers[0].close_route(route, now);
    net.run(Duration::from_millis(100));
    assert!(
        net.take_events(1)
            .iter()
            .any(|e| matches!(e, Event::Receipt { receipt, .. } if receipt.seq > 2))
    );
}

#[test]
fn resuming_a_session_needs_its_token_and_its_caller() {
    let mut net = Net::new(4);
    for (a, b) in [(0, 1), (1, 3), (0, 2), (2, 3)] {
        net.link(a, b);
    }
    let (route, _) = net.open_up(0, &[1, 3]);
    net.take_events(3);
    net.cut(1, 3);
    net.run(Duration::from_millis(50));
    net.take_events(0);
    // The destination forgets the session meanwhile (closed by its app).
    let far = net.routers[3].sessions.ids().next().unwrap();
    let now = net.now();
    net.routers[3].close_session(far, now);
    let hops = net.hops(&[2, 3]);
    net.routers[0].repair_route(route, &hops, now).unwrap();
    net.run(Duration::from_millis(100));
    let events = net.take_events(0);
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::RouteBroken {
                cause: Broken::Setup(SetupError::Hop {
                    reason: FailReason::UnknownSession,
                    ..
                }),
                ..
            }
        )),
        "{events:?}"
    );
}

/// The routes `node` saw come up, and the hop failures it was told of.
fn outcomes(net: &mut Net, node: usize) -> (usize, Vec<(usize, FailReason)>) {
    let mut up = 0;
    let mut failed = Vec::new();
    for event in net.take_events(node) {
        match event {
            Event::RouteUp { .. } => up += 1,
            Event::RouteFailed {
                error: SetupError::Hop { index, reason, .. },
                ..
            } => failed.push((index, reason)),
            _ => {}
        }
    }
    (up, failed)
}

fn with_config(net: &mut Net, node: usize, config: Config) {
    net.routers[node] = Router::new(net.identities[node].clone(), config);
}

#[test]
fn a_neighbour_flooding_setups_holds_at_most_its_share_of_rules() {
    // Bound proven: one neighbour holds at most `rules_per_neighbour_max`
    // rules of a hop; setups beyond are refused `Busy` before the layer is
    // opened; another neighbour's setup still succeeds.
    let mut net = Net::new(4);
    let share = 8;
    with_config(
        &mut net,
        1,
        Config {
            rules_per_neighbour_max: share,
            setups_per_neighbour_burst: 10_000,
            ..Config::default()
        },
    );
    net.link(0, 1);
    net.link(1, 2);
    net.link(3, 1);
    for _ in 0..20 {
        net.open(0, &[1, 2]);
    }
    net.run(Duration::from_millis(300));
    let (up, failed) = outcomes(&mut net, 0);
    assert_eq!(up, share);
    assert_eq!(failed, vec![(0, FailReason::Busy); 20 - share]);
    assert_eq!(net.routers[1].neighbour_share(net.id(0)).0, share);
    // Node 3, another neighbour of the relay, is not held back.
    net.open(3, &[1, 2]);
    net.run(Duration::from_millis(300));
    assert_eq!(outcomes(&mut net, 3), (1, Vec::new()));
}

#[test]
fn setups_beyond_a_neighbours_rate_are_refused_until_it_refills() {
    // Bound proven: a neighbour gets `setups_per_neighbour_burst` setups
    // opened at once, then one per interval.
    let mut net = Net::new(3);
    with_config(
        &mut net,
        1,
        Config {
            setups_per_neighbour_burst: 5,
            setups_per_neighbour_interval: Duration::from_secs(1),
            ..Config::default()
        },
    );
    net.link(0, 1);
    net.link(1, 2);
    for _ in 0..10 {
        net.open(0, &[1, 2]);
    }
    net.run(Duration::from_millis(300));
    let (up, failed) = outcomes(&mut net, 0);
    assert_eq!(up, 5);
    assert_eq!(failed, vec![(0, FailReason::Busy); 5]);
    net.run(Duration::from_secs(1));
    net.open(0, &[1, 2]);
    net.run(Duration::from_millis(300));
    assert_eq!(outcomes(&mut net, 0), (1, Vec::new()));
}

#[test]
fn a_busy_hop_further_on_is_named_to_the_source() {
    let mut net = Net::new(3);
    with_config(
        &mut net,
        2,
        Config {
            rules_per_neighbour_max: 2,
            ..Config::default()
        },
    );
    net.link(0, 1);
    net.link(1, 2);
    for _ in 0..3 {
        net.open(0, &[1, 2]);
    }
    net.run(Duration::from_millis(300));
    // The relay re-seals the destination's clear `Busy`: the source learns
    // it was hop 1, and the relay dropped its rule.
    assert_eq!(outcomes(&mut net, 0), (2, vec![(1, FailReason::Busy)]));
    assert_eq!(net.routers[1].rule_count(), 2);
}

#[test]
fn replay_memory_is_shared_out_per_neighbour_and_forgotten_after_the_clock_window() {
    // Bound proven: a neighbour's setups are remembered (against replay)
    // at most `remembered_per_neighbour_max` at a time, and each for no
    // longer than its layer could pass the clock check.
    let mut net = Net::new(3);
    let skew = Duration::from_secs(30);
    with_config(
        &mut net,
        1,
        Config {
            remembered_per_neighbour_max: 4,
            clock_skew_max: skew,
            ..Config::default()
        },
    );
    net.link(0, 1);
    net.link(1, 2);
    for _ in 0..4 {
        let route = net.open(0, &[1, 2]);
        net.run(Duration::from_millis(200));
        let now = net.now();
        net.routers[0].close_route(route, now);
        net.run(Duration::from_millis(200));
    }
    assert_eq!(net.routers[1].rule_count(), 0);
    assert_eq!(net.routers[1].neighbour_share(net.id(0)), (0, 4));
    assert_eq!(outcomes(&mut net, 0).0, 4);
    net.open(0, &[1, 2]);
    net.run(Duration::from_millis(300));
    assert_eq!(outcomes(&mut net, 0), (0, vec![(0, FailReason::Busy)]));
    // Layers issued now pass the clock check for `skew` more: then they
    // are forgotten, and the neighbour's share is free again.
    net.run(skew + Duration::from_secs(2));
    assert_eq!(net.routers[1].neighbour_share(net.id(0)), (0, 0));
    net.open(0, &[1, 2]);
    net.run(Duration::from_millis(300));
    assert_eq!(outcomes(&mut net, 0).0, 1);
}

#[test]
fn a_session_packet_altered_on_the_way_is_dropped_and_counted_at_its_end() {
    let mut net = Net::line(3);
    net.open(0, &[1, 2]);
    net.run(Duration::from_millis(200));
    let session = net
        .take_events(0)
        .into_iter()
        .find_map(|event| match event {
            Event::RouteUp { session, .. } => Some(session),
            _ => None,
        })
        .expect("route not up");
    net.take_events(2);
    net.routers[0]
        .send_datagram(session, 7, b"payload")
        .unwrap();
    let Some(Transmit::Data { to, header, body }) = net.routers[0].poll_transmit() else {
        panic!("no data packet");
    };
    // Links carry a session packet as a sealed body, which they do not
    // authenticate (link.md §4): an on-path attacker can flip its bits.
    let mut altered = body.to_vec();
    let last = altered.len() - 1;
    altered[last] ^= 1;
    net.sequence += 1;
    let altered = Transmit::Data {
        to,
        header,
        body: Bytes::from(altered),
    };
    net.in_flight
        .insert((net.now + LINK_DELAY, net.sequence), (0, 1, altered));
    net.run(Duration::from_millis(50));
    let datagrams = |events: Vec<Event>| {
        events
            .into_iter()
            .filter(|event| matches!(event, Event::Datagram { .. }))
            .count()
    };
    assert_eq!(datagrams(net.take_events(2)), 0);
    assert_eq!(net.routers[2].session_packets_rejected(), 1);
    // The relay forwarded it (it cannot tell); the session carries on.
    net.routers[0]
        .send_datagram(session, 7, b"payload")
        .unwrap();
    net.run(Duration::from_millis(50));
    assert_eq!(datagrams(net.take_events(2)), 1);
    assert_eq!(net.routers[2].session_packets_rejected(), 1);
}

#[test]
fn an_up_route_moved_to_a_shorter_path_keeps_its_stream_and_frees_the_old_relay() {
    // 0 reaches 2 through 1; then a direct link 0–2 appears.
    let mut net = Net::new(3);
    for (a, b) in [(0, 1), (1, 2)] {
        net.link(a, b);
    }
    let (route, session) = net.open_up(0, &[1, 2]);
    let far = far_session(&net.take_events(2));
    let now = net.now();
    let stream = net.routers[0].open_stream(session, now).unwrap();
    let upload = pattern(20 * 1024 * 1024, 5);
    net.writers.insert((0, session, stream), upload.clone());
    net.feed();
    assert!(run_until(&mut net, Duration::from_secs(10), |net| {
        net.received.get(&(2, far, stream)).map_or(0, Vec::len) > 2 * 1024 * 1024
    }));
    net.link(0, 2);
    let (hops, now) = (net.hops(&[2]), net.now());
    assert_eq!(
        net.routers[0].move_route(route, &hops, now),
        Ok(()),
        "an up route moves"
    );
    assert_eq!(
        net.routers[0].move_route(route, &hops, now),
        Err(OpenError::NotUp),
        "and only one move at a time"
    );
    net.collect();
    assert!(run_until(&mut net, Duration::from_secs(30), |net| {
        net.received.get(&(2, far, stream)).map_or(0, Vec::len) == upload.len()
    }));
    assert_eq!(
        net.received[&(2, far, stream)],
        upload,
        "bytes lost or duplicated"
    );
    assert!(
        net.take_events(0)
            .iter()
            .any(|e| matches!(e, Event::RouteRepaired { route: r, .. } if *r == route))
    );
    assert!(
        net.take_events(2)
            .contains(&Event::SessionResumed { session: far })
    );
    assert_eq!(net.routers[0].route_path(route), Some(&[net.id(2)][..]));
    net.run(Duration::from_millis(50));
    assert_eq!(
        net.routers[1].rule_count(),
        0,
        "the old relay holds nothing of the route"
    );
}
