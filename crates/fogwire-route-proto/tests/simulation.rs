//! A deterministic simulation of a 100-node network on in-memory links.
//!
//! Every node runs a real [`Router`]; links delay messages by a per-link
//! latency and lose some at random; a seeded schedule cuts links (some
//! cleanly, some by silently swallowing everything for a while) and
//! brings them back. Sources compute paths from signed adverts, open
//! routes, stream data over them, and repair them when they break, as the
//! node's router task does. At the end every byte that arrived must be
//! exactly what was sent, in order, most transfers must have completed
//! despite the failures, and once every route is closed no node may hold
//! a rule or a session.
//!
//! Everything random comes from one seed, the routers' labels and keys
//! included, so a failure replays: it prints its seed, and
//! `FOGWIRE_SIM_SEED=<seed> cargo test -p fogwire-route-proto --test
//! simulation` runs that seed alone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fogwire_identity::{Keypair, NodeId};
use fogwire_link_proto::LinkIdentity;
use fogwire_route_proto::Topology;
use fogwire_route_proto::advert::{Advert, AdvertLink};
use fogwire_route_proto::path::{self, Query};
use fogwire_route_proto::repair::{ATTEMPTS_MAX, Avoid};
use fogwire_route_proto::router::{
    Config, Event, Hop, Now, RouteId, Router, SessionId, StreamId, Transmit, stream,
};

const NODES: usize = 100;
const TRANSFERS: usize = 24;
const RUN: Duration = Duration::from_secs(90);

/// splitmix64: small, fast and plenty for a test schedule.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, per_million: u64) -> bool {
        self.below(1_000_000) < per_million
    }

    fn fill(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            let value = self.next().to_le_bytes();
            chunk.copy_from_slice(&value[..chunk.len()]);
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum LinkState {
    Up,
    /// Swallows everything, and neither end has noticed yet.
    Silent,
    Down,
}

struct Link {
    delay: Duration,
    state: LinkState,
}

/// One transfer: a route from `source` to `destination` carrying `data`.
struct Transfer {
    source: usize,
    destination: usize,
    data: Bytes,
    route: Option<RouteId>,
    session: Option<SessionId>,
    stream: Option<StreamId>,
    written: usize,
    finished_writing: bool,
    avoid: Avoid,
    attempts: u32,
    opens: u32,
    next_open: Duration,
    received: Vec<u8>,
    far: Option<(SessionId, StreamId)>,
    done: bool,
    abandoned: bool,
}

impl Transfer {
    /// Has never had a route up, and may still try.
    fn wants_route(&self) -> bool {
        self.route.is_none() && self.session.is_none() && !self.abandoned && self.opens < 10
    }
}

struct Sim {
    rng: Rng,
    start: Instant,
    now: Duration,
    ids: Vec<NodeId>,
    keypairs: Vec<Arc<Keypair>>,
    link_keys: Vec<[u8; 32]>,
    routers: Vec<Router>,
    links: BTreeMap<(usize, usize), Link>,
    in_flight: BTreeMap<(Duration, u64), (usize, usize, Transmit)>,
    sequence: u64,
    topology: Topology,
    topology_due: Option<Duration>,
    transfers: Vec<Transfer>,
    /// (node, session, stream) → transfer receiving on it.
    receivers: BTreeMap<(usize, SessionId, StreamId), usize>,
    failures: u32,
    repairs: u32,
    advert_seq: u64,
}

fn key(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut rng = Rng(seed);
        let config = Config {
            stream: stream::Config {
                // Small segments and windows: many packets, so loss and
                // repair happen in the middle of things.
                segment_len_max: 4096,
                window: 128 * 1024,
                send_buffer: 128 * 1024,
                ..stream::Config::default()
            },
            ..Config::default()
        };
        let mut keypairs = Vec::new();
        let mut routers = Vec::new();
        let mut link_keys = Vec::new();
        for _ in 0..NODES {
            let mut seed_bytes = [0u8; 32];
            rng.fill(&mut seed_bytes);
            let keypair = Arc::new(Keypair::from_seed(&seed_bytes));
            let identity = Arc::new(LinkIdentity::generate(keypair.clone()).unwrap());
            link_keys.push(identity.noise_static_key().try_into().unwrap());
            let mut router_rng = Rng(rng.next());
            routers.push(
                Router::new(identity, config.clone())
                    .with_random_source(Box::new(move |bytes| router_rng.fill(bytes))),
            );
            keypairs.push(keypair);
        }
        let ids: Vec<NodeId> = keypairs.iter().map(|k| k.node_id()).collect();
        // A ring, so the network stays connected when a chord fails, and
        // random chords, so there are other paths.
        let mut links = BTreeMap::new();
        let mut add = |a: usize, b: usize, rng: &mut Rng| {
            if a != b {
                links.entry(key(a, b)).or_insert(Link {
                    delay: Duration::from_millis(1 + rng.below(20)),
                    state: LinkState::Up,
                });
            }
        };
        for a in 0..NODES {
            add(a, (a + 1) % NODES, &mut rng);
        }
        for _ in 0..NODES * 2 {
            let (a, b) = (
                rng.below(NODES as u64) as usize,
                rng.below(NODES as u64) as usize,
            );
            add(a, b, &mut rng);
        }
        let mut sim = Sim {
            rng,
            start: epoch(),
            now: Duration::ZERO,
            topology: Topology::new(ids[0], Default::default()),
            ids,
            keypairs,
            link_keys,
            routers,
            links,
            in_flight: BTreeMap::new(),
            sequence: 0,
            topology_due: None,
            transfers: Vec::new(),
            receivers: BTreeMap::new(),
            failures: 0,
            repairs: 0,
            advert_seq: 0,
        };
        let up: Vec<(usize, usize)> = sim.links.keys().copied().collect();
        for (a, b) in up {
            let (ida, idb) = (sim.ids[a], sim.ids[b]);
            sim.routers[a].link_up(idb);
            sim.routers[b].link_up(ida);
        }
        sim.refresh_topology();
        for _ in 0..TRANSFERS {
            let source = sim.rng.below(NODES as u64) as usize;
            let mut destination = sim.rng.below(NODES as u64) as usize;
            if destination == source {
                destination = (source + 1 + NODES / 2) % NODES;
            }
            let len = 512 * 1024 + sim.rng.below(2 * 1024 * 1024) as usize;
            let mut data = vec![0u8; len];
            sim.rng.fill(&mut data);
            let next_open = Duration::from_millis(sim.rng.below(3_000));
            sim.transfers.push(Transfer {
                source,
                destination,
                data: Bytes::from(data),
                route: None,
                session: None,
                stream: None,
                written: 0,
                finished_writing: false,
                avoid: Avoid::default(),
                attempts: 0,
                opens: 0,
                next_open,
                received: Vec::new(),
                far: None,
                done: false,
                abandoned: false,
            });
        }
        sim
    }

    fn time(&self) -> Now {
        Now {
            instant: self.start + self.now,
            unix_ms: 1_800_000_000_000 + self.now.as_millis() as u64,
        }
    }

    /// Every node's advert as the links are now, as flooding would have
    /// spread them (one shared view: a converged control plane).
    fn refresh_topology(&mut self) {
        self.advert_seq += 1;
        let now = self.time();
        let mut topology = Topology::new(self.ids[0], Default::default());
        for node in 0..NODES {
            let links = self
                .links
                .iter()
                .filter(|(k, link)| (k.0 == node || k.1 == node) && link.state != LinkState::Down)
                .map(|(&(a, b), link)| AdvertLink {
                    neighbour: self.ids[if a == node { b } else { a }],
                    latency_us: link.delay.as_micros() as u32,
                    capacity_kbps: 1_000_000,
                })
                .collect();
            let advert = Advert {
                origin: self.ids[node],
                seq: self.advert_seq,
                issued_at_ms: now.unix_ms,
                lifetime_secs: 600,
                link_key: self.link_keys[node],
                addresses: Vec::new(),
                links,
                services: Vec::new(),
            };
            let (advert, bytes) = advert.sign(&self.keypairs[node]);
            if node == 0 {
                topology.set_local(advert, bytes);
            } else {
                topology.handle_advert(&bytes, now.unix_ms).unwrap();
            }
        }
        self.topology = topology;
    }

    fn hops(&self, nodes: &[NodeId]) -> Vec<Hop> {
        nodes
            .iter()
            .map(|id| {
                let index = self.ids.iter().position(|n| n == id).unwrap();
                Hop {
                    node: *id,
                    link_key: self.link_keys[index],
                }
            })
            .collect()
    }

    fn query(&self, transfer: usize) -> Query {
        let t = &self.transfers[transfer];
        let query = Query {
            max_hops: 8,
            ..Query::new(self.ids[t.source], self.ids[t.destination])
        };
        t.avoid.apply(query)
    }

    fn open(&mut self, index: usize) {
        let query = self.query(index);
        let now = self.time();
        let t = &mut self.transfers[index];
        t.opens += 1;
        t.next_open = self.now + Duration::from_secs(2);
        let Ok(paths) = path::find(self.topology.graph(), &query) else {
            return;
        };
        let hops = self.hops(&paths[0].nodes[1..]);
        let source = self.transfers[index].source;
        if let Ok(route) = self.routers[source].open_route(&hops, now) {
            self.transfers[index].route = Some(route);
        }
    }

    fn transfer_of_route(&self, node: usize, route: RouteId) -> Option<usize> {
        self.transfers
            .iter()
            .position(|t| t.source == node && t.route == Some(route))
    }

    fn on_event(&mut self, node: usize, event: Event) {
        let now = self.time();
        match event {
            Event::RouteUp { route, session, .. } => {
                let Some(index) = self.transfer_of_route(node, route) else {
                    return;
                };
                let stream = self.routers[node].open_stream(session, now).unwrap();
                let t = &mut self.transfers[index];
                t.session = Some(session);
                t.stream = Some(stream);
            }
            Event::RouteFailed { route, .. } => {
                if let Some(index) = self.transfer_of_route(node, route) {
                    self.transfers[index].route = None;
                }
            }
            Event::RouteBroken { route, path, cause } => {
                self.failures += 1;
                let Some(index) = self.transfer_of_route(node, route) else {
                    self.routers[node].abandon_route(route, "unknown", now);
                    return;
                };
                let source = self.ids[node];
                let t = &mut self.transfers[index];
                t.attempts += 1;
                if !t.avoid.learn(source, &path, &cause) || t.attempts > ATTEMPTS_MAX {
                    self.routers[node].abandon_route(route, "gave up", now);
                    return;
                }
                let query = self.query(index);
                match path::find(self.topology.graph(), &query) {
                    Ok(paths) => {
                        let hops = self.hops(&paths[0].nodes[1..]);
                        if self.routers[node].repair_route(route, &hops, now).is_err() {
                            self.routers[node].abandon_route(route, "repair refused", now);
                        }
                    }
                    Err(_) => {
                        self.routers[node].abandon_route(route, "no path", now);
                    }
                }
            }
            Event::RouteRepaired { route, .. } => {
                self.repairs += 1;
                if let Some(index) = self.transfer_of_route(node, route) {
                    self.transfers[index].attempts = 0;
                    self.transfers[index].avoid = Avoid::default();
                }
            }
            Event::RouteDown { route, .. } => {
                if let Some(index) = self.transfer_of_route(node, route) {
                    let t = &mut self.transfers[index];
                    if !t.done {
                        t.abandoned = true;
                    }
                    t.route = None;
                }
            }
            Event::StreamOpened { session, stream } => {
                if let Some(index) = self.transfers.iter().position(|t| {
                    t.destination == node
                        && t.far.is_none()
                        && t.session.is_some()
                        && !t.done
                        && self.routers[node].session_peer(session) == Some(self.ids[t.source])
                }) {
                    self.transfers[index].far = Some((session, stream));
                    self.receivers.insert((node, session, stream), index);
                }
            }
            Event::StreamData {
                session,
                stream,
                data,
            } => {
                if let Some(&index) = self.receivers.get(&(node, session, stream)) {
                    self.transfers[index].received.extend_from_slice(&data);
                }
                self.routers[node].stream_consumed(session, stream, data.len() as u64);
            }
            Event::StreamFinished { session, stream } => {
                // The receiver is done: finish its side too.
                let _ = self.routers[node].stream_finish(session, stream, now);
                if let Some(&index) = self.receivers.get(&(node, session, stream)) {
                    self.transfers[index].done = true;
                }
            }
            Event::StreamWritable { .. } => {}
            _ => {}
        }
    }

    fn feed(&mut self) {
        let now = self.time();
        for index in 0..self.transfers.len() {
            let t = &self.transfers[index];
            let (Some(session), Some(stream)) = (t.session, t.stream) else {
                continue;
            };
            if t.finished_writing || t.route.is_none() {
                continue;
            }
            let rest = t.data.slice(t.written..);
            let source = t.source;
            match self.routers[source].stream_write(session, stream, &rest, now) {
                Ok(taken) => {
                    let t = &mut self.transfers[index];
                    t.written += taken;
                    if t.written == t.data.len() {
                        t.finished_writing = true;
                        let _ = self.routers[source].stream_finish(session, stream, now);
                    }
                }
                Err(_) => self.transfers[index].finished_writing = true,
            }
        }
    }

    fn collect(&mut self) {
        loop {
            let mut idle = true;
            for from in 0..NODES {
                while let Some(transmit) = self.routers[from].poll_transmit() {
                    idle = false;
                    let to_id = match &transmit {
                        Transmit::Control { to, .. } | Transmit::Data { to, .. } => *to,
                    };
                    let to = self.ids.iter().position(|id| *id == to_id).unwrap();
                    let Some(link) = self.links.get(&key(from, to)) else {
                        continue;
                    };
                    if link.state != LinkState::Up || self.rng.chance(2_000) {
                        continue;
                    }
                    let jitter = Duration::from_micros(self.rng.below(500));
                    let at = self.now + link.delay + jitter;
                    self.sequence += 1;
                    self.in_flight
                        .insert((at, self.sequence), (from, to, transmit));
                }
                while let Some(event) = self.routers[from].poll_event() {
                    idle = false;
                    self.on_event(from, event);
                }
            }
            self.feed();
            if idle {
                return;
            }
        }
    }

    /// Cuts a link: cleanly (both ends notice at once) or silently for a
    /// few seconds before they notice. It comes back later.
    fn fail_link(&mut self, schedule: &mut BTreeMap<Duration, Vec<(usize, usize, LinkState)>>) {
        let up: Vec<(usize, usize)> = self
            .links
            .iter()
            .filter(|(_, link)| link.state == LinkState::Up)
            .map(|(k, _)| *k)
            .collect();
        let (a, b) = up[self.rng.below(up.len() as u64) as usize];
        let silent = self.rng.chance(500_000);
        let back = self.now + Duration::from_millis(3_000 + self.rng.below(7_000));
        if silent {
            self.links.get_mut(&(a, b)).unwrap().state = LinkState::Silent;
            let noticed = self.now + Duration::from_millis(2_000 + self.rng.below(2_000));
            schedule
                .entry(noticed)
                .or_default()
                .push((a, b, LinkState::Down));
        } else {
            self.set_link(a, b, LinkState::Down);
        }
        schedule
            .entry(back.max(self.now + Duration::from_secs(5)))
            .or_default()
            .push((a, b, LinkState::Up));
    }

    fn set_link(&mut self, a: usize, b: usize, state: LinkState) {
        let now = self.time();
        let (ida, idb) = (self.ids[a], self.ids[b]);
        let link = self.links.get_mut(&(a, b)).unwrap();
        let was = link.state;
        link.state = state;
        match state {
            LinkState::Down if was != LinkState::Down => {
                self.in_flight
                    .retain(|_, (from, to, _)| key(*from, *to) != (a, b));
                self.routers[a].link_down(idb, now);
                self.routers[b].link_down(ida, now);
            }
            LinkState::Up if was == LinkState::Down => {
                self.routers[a].link_up(idb);
                self.routers[b].link_up(ida);
            }
            _ => {}
        }
        // Adverts reach everyone a little later.
        self.topology_due = Some(self.now + Duration::from_millis(300));
    }

    fn run(&mut self) {
        let mut schedule: BTreeMap<Duration, Vec<(usize, usize, LinkState)>> = BTreeMap::new();
        let mut next_failure = Duration::from_millis(200 + self.rng.below(500));
        let mut closed_all = false;
        let mut closed_at = RUN;
        // After the routes close, long enough for every timer to run out.
        let quiet = Config::default().resume_grace + Duration::from_secs(10);
        self.collect();
        while !closed_all || self.now < closed_at + quiet {
            // Next thing to happen.
            let message = self.in_flight.keys().next().map(|(at, _)| *at);
            let timers = self
                .routers
                .iter()
                .filter_map(Router::poll_timeout)
                .min()
                .map(|at| at.saturating_duration_since(self.start));
            let scheduled = schedule.keys().next().copied();
            let opens = self
                .transfers
                .iter()
                .filter(|t| t.wants_route())
                .map(|t| t.next_open)
                .min();
            let failure = (!closed_all).then_some(next_failure);
            let next = [
                message,
                timers,
                scheduled,
                opens,
                self.topology_due,
                failure,
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(self.now + Duration::from_secs(1))
            .max(self.now);
            self.now = next;
            if self.now >= next_failure && !closed_all {
                self.fail_link(&mut schedule);
                next_failure = self.now + Duration::from_millis(200 + self.rng.below(600));
            }
            while let Some(entry) = schedule.first_entry() {
                if *entry.key() > self.now {
                    break;
                }
                for (a, b, state) in entry.remove() {
                    self.set_link(a, b, state);
                }
            }
            if self.topology_due.is_some_and(|due| due <= self.now) {
                self.topology_due = None;
                self.refresh_topology();
            }
            for index in 0..self.transfers.len() {
                let t = &self.transfers[index];
                if t.wants_route() && t.next_open <= self.now {
                    self.open(index);
                }
            }
            while let Some(entry) = self.in_flight.first_entry() {
                if entry.key().0 > self.now {
                    break;
                }
                let (from, to, transmit) = entry.remove();
                let now = self.time();
                let from_id = self.ids[from];
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
            let now = self.time();
            for router in &mut self.routers {
                if router.poll_timeout().is_some_and(|at| at <= now.instant) {
                    router.handle_timeout(now);
                }
            }
            self.collect();
            let settled = self
                .transfers
                .iter()
                .all(|t| t.done || t.abandoned || (t.session.is_none() && t.opens >= 10));
            if (settled || self.now >= RUN) && !closed_all {
                // Close every route and let the network quieten.
                closed_all = true;
                closed_at = self.now;
                for schedule_entry in std::mem::take(&mut schedule).into_values() {
                    for (a, b, _) in schedule_entry {
                        self.set_link(a, b, LinkState::Up);
                    }
                }
                let now = self.time();
                for t in &self.transfers {
                    if let Some(route) = t.route {
                        self.routers[t.source].close_route(route, now);
                    }
                }
                self.collect();
            }
        }
    }
}

#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    Instant::now()
}

/// What a run did, to compare two runs of one seed.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    failures: u32,
    repairs: u32,
    received: Vec<usize>,
    sent_packets: u64,
}

fn simulate(seed: u64) -> Outcome {
    eprintln!(
        "simulation seed {seed} (replay it alone with FOGWIRE_SIM_SEED={seed} cargo test -p \
         fogwire-route-proto --test simulation)"
    );
    let mut sim = Sim::new(seed);
    sim.run();
    let context = format!(
        "seed {seed}: {} route failures, {} repairs",
        sim.failures, sim.repairs
    );
    let mut completed = 0;
    for (index, t) in sim.transfers.iter().enumerate() {
        // Whatever arrived is exactly the start of what was sent: nothing
        // lost, duplicated, reordered or altered.
        assert!(
            t.received.len() <= t.data.len() && t.received[..] == t.data[..t.received.len()],
            "{context}: transfer {index} received bytes that were not sent in that order"
        );
        if t.done {
            assert_eq!(
                t.received.len(),
                t.data.len(),
                "{context}: transfer {index} finished short"
            );
            completed += 1;
        }
    }
    assert!(
        completed * 10 >= TRANSFERS * 8,
        "{context}: only {completed} of {TRANSFERS} transfers completed"
    );
    assert!(sim.failures > 0, "{context}: the schedule broke no route");
    assert!(sim.repairs > 0, "{context}: no route was repaired");
    // Nothing leaks: every rule and session is gone once routes are closed
    // and the timers have run.
    for (node, router) in sim.routers.iter().enumerate() {
        assert_eq!(
            router.rule_count(),
            0,
            "{context}: node {node} leaked rules"
        );
        assert_eq!(
            router.session_count(),
            0,
            "{context}: node {node} leaked sessions"
        );
    }
    eprintln!("{context}: {completed} of {TRANSFERS} transfers completed intact");
    Outcome {
        failures: sim.failures,
        repairs: sim.repairs,
        received: sim.transfers.iter().map(|t| t.received.len()).collect(),
        sent_packets: sim.sequence,
    }
}

#[test]
fn a_hundred_nodes_with_failing_links_deliver_every_byte_and_leak_nothing() {
    match std::env::var("FOGWIRE_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(seed) => {
            simulate(seed);
        }
        None => {
            let first = simulate(1);
            // The same seed, the same run: a failure can be replayed.
            assert_eq!(simulate(1), first, "seed 1 did not replay identically");
            simulate(2);
        }
    }
}
