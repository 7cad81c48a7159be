//! Membership in a deterministic simulation: boards, links between them
//! with a millisecond of latency, and virtual time. Each test drives a
//! cluster through one of the situations (start, a board killed,
//! a board paused, a restart, a stranger, a partition) and checks every
//! board's view.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fogwire_cluster_proto::JoinCode;
use fogwire_cluster_proto::placement::Resources;
use fogwire_cluster_proto::swim::{Board as Identity, Config, Event, Membership, Output, State};
use fogwire_identity::{Keypair, NodeId};

const STEP: Duration = Duration::from_millis(5);
const LATENCY: Duration = Duration::from_millis(1);

struct Board {
    key: Arc<Keypair>,
    membership: Option<Membership>,
    boot: u64,
    paused: bool,
}

/// A message on its way: (deliver at, order sent, from, to, bytes).
type InFlight = (Instant, u64, usize, usize, Vec<u8>);

struct Sim {
    join: JoinCode,
    boards: Vec<Board>,
    now: Instant,
    start: Instant,
    wire: BinaryHeap<Reverse<InFlight>>,
    order: u64,
    links: BTreeSet<(usize, usize)>,
    /// Boards in different groups cannot reach each other.
    group: Vec<u8>,
    events: Vec<(Duration, usize, Event)>,
}

fn resources() -> Resources {
    Resources {
        cores: 4,
        memory_mib: 4096,
        disk_mib: 10_000,
    }
}

impl Sim {
    fn new(count: usize, seed: u8) -> Self {
        let join = JoinCode::of(&Keypair::from_seed(&[seed; 32]));
        let now = Instant::now();
        let boards = (0..count)
            .map(|index| Board {
                key: Arc::new(Keypair::from_seed(
                    &[seed.wrapping_add(1 + index as u8); 32],
                )),
                membership: None,
                boot: 1,
                paused: false,
            })
            .collect();
        let mut sim = Self {
            join,
            boards,
            now,
            start: now,
            wire: BinaryHeap::new(),
            order: 0,
            links: BTreeSet::new(),
            group: vec![0; count],
            events: Vec::new(),
        };
        for index in 0..count {
            sim.boot(index);
        }
        sim
    }

    fn boot(&mut self, index: usize) {
        let board = &mut self.boards[index];
        let addr = format!("10.0.0.{}:4040", index + 1).parse().unwrap();
        let identity = Identity {
            key: board.key.clone(),
            join: self.join.clone(),
            boot: board.boot,
            addrs: vec![addr],
            resources: resources(),
        };
        board.membership = Some(Membership::new(
            Config::default(),
            identity,
            index as u64,
            self.now,
        ));
        board.paused = false;
    }

    fn id(&self, index: usize) -> NodeId {
        self.boards[index].key.node_id()
    }

    fn index_of(&self, id: &NodeId) -> Option<usize> {
        self.boards
            .iter()
            .position(|board| board.key.node_id() == *id)
    }

    fn reachable(&self, a: usize, b: usize) -> bool {
        self.boards[a].membership.is_some()
            && self.boards[b].membership.is_some()
            && self.group[a] == self.group[b]
    }

    /// Links `a` and `b` (as mDNS discovery would).
    fn link(&mut self, a: usize, b: usize) {
        let key = (a.min(b), a.max(b));
        if a == b || self.links.contains(&key) || !self.reachable(a, b) {
            return;
        }
        self.links.insert(key);
        let (ida, idb) = (self.id(a), self.id(b));
        self.boards[a].membership.as_mut().unwrap().link_up(idb);
        self.boards[b].membership.as_mut().unwrap().link_up(ida);
    }

    fn unlink(&mut self, a: usize, b: usize) {
        let key = (a.min(b), a.max(b));
        if !self.links.remove(&key) {
            return;
        }
        let now = self.now;
        let (ida, idb) = (self.id(a), self.id(b));
        if let Some(membership) = self.boards[a].membership.as_mut() {
            membership.link_down(idb, now);
        }
        if let Some(membership) = self.boards[b].membership.as_mut() {
            membership.link_down(ida, now);
        }
    }

    fn link_all(&mut self) {
        for a in 0..self.boards.len() {
            for b in a + 1..self.boards.len() {
                self.link(a, b);
            }
        }
    }

    /// `kill -9`: the process is gone, its links close.
    fn kill(&mut self, index: usize) {
        for other in 0..self.boards.len() {
            self.unlink(index, other);
        }
        self.boards[index].membership = None;
    }

    fn restart(&mut self, index: usize) {
        self.kill(index);
        self.boards[index].boot += 1;
        self.boot(index);
        self.link_all();
    }

    fn drain(&mut self, index: usize) {
        let Some(membership) = self.boards[index].membership.as_mut() else {
            return;
        };
        let mut outputs = Vec::new();
        while let Some(output) = membership.poll_output() {
            outputs.push(output);
        }
        for output in outputs {
            match output {
                Output::Send { to, bytes } => {
                    let Some(to) = self.index_of(&to) else {
                        continue;
                    };
                    let key = (index.min(to), index.max(to));
                    // A link carries what is sent while both ends can reach
                    // each other; across a partition the bytes are lost.
                    if self.links.contains(&key) && self.reachable(index, to) {
                        self.order += 1;
                        self.wire
                            .push(Reverse((self.now + LATENCY, self.order, index, to, bytes)));
                    }
                }
                Output::Dial { node, .. } => {
                    if let Some(to) = self.index_of(&node) {
                        self.link(index, to);
                    }
                }
                Output::Event(event) => {
                    self.events
                        .push((self.now.duration_since(self.start), index, event));
                }
                Output::Refused { .. } => {}
            }
        }
    }

    fn step(&mut self) {
        self.now += STEP;
        let mut held = Vec::new();
        while let Some(Reverse((at, ..))) = self.wire.peek() {
            if *at > self.now {
                break;
            }
            let Reverse((at, order, from, to, bytes)) = self.wire.pop().unwrap();
            let board = &mut self.boards[to];
            if board.paused {
                // Held in the socket until the process runs again.
                held.push(Reverse((at + STEP, order, from, to, bytes)));
                continue;
            }
            let from_id = self.boards[from].key.node_id();
            let now = self.now;
            if let Some(membership) = self.boards[to].membership.as_mut() {
                membership.receive(from_id, &bytes, now);
            }
            self.drain(to);
        }
        self.wire.extend(held);
        for index in 0..self.boards.len() {
            let now = self.now;
            let board = &mut self.boards[index];
            if board.paused {
                continue;
            }
            if let Some(membership) = board.membership.as_mut()
                && membership.next_deadline() <= now
            {
                membership.tick(now);
            }
            self.drain(index);
        }
    }

    fn run(&mut self, duration: Duration) {
        let until = self.now + duration;
        while self.now < until {
            self.step();
        }
    }

    /// Runs until `condition` holds; how long it took.
    fn run_until(&mut self, limit: Duration, condition: impl Fn(&Sim) -> bool) -> Duration {
        let started = self.now;
        while !condition(self) {
            if self.now - started >= limit {
                for (at, index, event) in &self.events {
                    eprintln!("{at:?} {index} {event:?}");
                }
                panic!("not within {limit:?}");
            }
            self.step();
        }
        self.now - started
    }

    /// What `index` sees of `other`.
    fn state(&self, index: usize, other: usize) -> Option<State> {
        let id = self.id(other);
        self.boards[index]
            .membership
            .as_ref()?
            .members()
            .find(|member| member.record.node == id)
            .map(|member| member.state)
    }

    /// Whether every running board sees exactly `expected` as its live
    /// members (itself included).
    fn converged(&self, expected: &BTreeSet<usize>) -> bool {
        let want: BTreeSet<NodeId> = expected.iter().map(|index| self.id(*index)).collect();
        expected.iter().all(|index| {
            self.boards[*index]
                .membership
                .as_ref()
                .is_some_and(|membership| {
                    let live: BTreeSet<NodeId> = membership
                        .live()
                        .into_iter()
                        .map(|(id, _)| id)
                        .filter(|id| {
                            membership
                                .members()
                                .find(|member| member.record.node == *id)
                                .is_none_or(|member| member.state == State::Alive)
                        })
                        .collect();
                    live == want
                })
        })
    }

    fn failures_of(&self, index: usize) -> usize {
        let id = self.id(index);
        self.events
            .iter()
            .filter(|(_, _, event)| *event == Event::Failed(id))
            .count()
    }
}

fn all(count: usize) -> BTreeSet<usize> {
    (0..count).collect()
}

#[test]
fn eight_boards_linked_to_one_learn_of_each_other_and_converge() {
    let mut sim = Sim::new(8, 10);
    // Each board heard only of board 0: the rest comes from Hello and
    // gossip, and links follow.
    for index in 1..8 {
        sim.link(0, index);
    }
    let took = sim.run_until(Duration::from_secs(2), |sim| sim.converged(&all(8)));
    assert!(took <= Duration::from_secs(2), "{took:?}");
    // Full mesh once every record is known.
    sim.run(Duration::from_secs(1));
    assert_eq!(sim.links.len(), 8 * 7 / 2);
    // Quiet cluster: nobody suspects anybody for a minute.
    sim.run(Duration::from_secs(60));
    assert!(sim.converged(&all(8)));
    assert!(
        !sim.events
            .iter()
            .any(|(_, _, event)| matches!(event, Event::Suspected(_) | Event::Failed(_))),
        "{:?}",
        sim.events
    );
}

#[test]
fn boards_that_join_with_their_links_already_up_converge_at_once() {
    // `fogwire cluster join` on running nodes: a ring is cabled first,
    // then the boards join one by one, each with its links already up —
    // the Hellos its neighbours sent when those links came up found no
    // membership to take them.
    let mut sim = Sim::new(8, 40);
    for board in &mut sim.boards[1..] {
        board.membership = None;
    }
    for index in 0..8 {
        let next = (index + 1) % 8;
        sim.links.insert((index.min(next), index.max(next)));
    }
    for index in 0..8 {
        if index > 0 {
            sim.boot(index);
        }
        let peers: Vec<NodeId> = sim
            .links
            .iter()
            .filter_map(|&(a, b)| match (a == index, b == index) {
                (true, _) => Some(sim.id(b)),
                (_, true) => Some(sim.id(a)),
                _ => None,
            })
            .collect();
        let membership = sim.boards[index].membership.as_mut().unwrap();
        for peer in peers {
            membership.link_up(peer);
        }
        sim.run(Duration::from_millis(100));
    }
    let took = sim.run_until(Duration::from_secs(2), |sim| sim.converged(&all(8)));
    assert!(took <= Duration::from_secs(2), "{took:?}");
}

#[test]
fn a_killed_board_is_declared_failed_everywhere_within_five_seconds() {
    for seed in [20, 21, 22, 23] {
        let mut sim = Sim::new(8, seed);
        sim.link_all();
        sim.run(Duration::from_secs(3));
        assert!(sim.converged(&all(8)));
        let killed = usize::from(seed) % 8;
        let killed_at = sim.now;
        sim.kill(killed);
        let rest: BTreeSet<usize> = all(8)
            .into_iter()
            .filter(|index| *index != killed)
            .collect();
        let took = sim.run_until(Duration::from_secs(10), |sim| {
            rest.iter()
                .all(|index| sim.state(*index, killed) == Some(State::Dead))
        });
        assert!(
            took <= Duration::from_secs(5),
            "declared dead after {took:?}"
        );
        assert!(
            sim.now - killed_at >= Duration::from_secs(2),
            "suspicion too short"
        );
        assert!(sim.converged(&rest));
        // Nobody else was suspected on the way.
        let killed_id = sim.id(killed);
        let others_suspected = sim.events.iter().any(|(_, _, event)| {
            matches!(event, Event::Suspected(id) | Event::Failed(id) if *id != killed_id)
        });
        assert!(!others_suspected, "{:?}", sim.events);
    }
}

#[test]
fn a_board_that_vanishes_without_closing_its_links_is_found_by_probes() {
    // Power cut: the links stay up but nothing answers.
    let mut sim = Sim::new(8, 30);
    sim.link_all();
    sim.run(Duration::from_secs(3));
    sim.boards[2].paused = true;
    let rest: BTreeSet<usize> = all(8).into_iter().filter(|index| *index != 2).collect();
    let took = sim.run_until(Duration::from_secs(20), |sim| {
        rest.iter()
            .all(|index| sim.state(*index, 2) == Some(State::Dead))
    });
    assert!(
        took <= Duration::from_secs(8),
        "{took:?}: {:?}",
        sim.events
            .iter()
            .filter(|e| !matches!(e.2, Event::Up(_)))
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_board_paused_for_two_seconds_is_never_declared_failed() {
    for seed in [40, 50, 60, 70] {
        let mut sim = Sim::new(8, seed);
        sim.link_all();
        sim.run(Duration::from_secs(3));
        for round in 0..3 {
            let paused = (round * 3 + usize::from(seed)) % 8;
            sim.boards[paused].paused = true;
            sim.run(Duration::from_secs(2));
            sim.boards[paused].paused = false;
            sim.run(Duration::from_secs(10));
            assert_eq!(sim.failures_of(paused), 0, "seed {seed}: {:?}", sim.events);
            assert!(sim.converged(&all(8)));
        }
    }
}

#[test]
fn a_restarted_board_rejoins_under_its_identity_without_a_stale_entry() {
    let mut sim = Sim::new(8, 80);
    sim.link_all();
    sim.run(Duration::from_secs(3));
    // Killed, declared dead, then back with a new boot.
    sim.kill(3);
    sim.run(Duration::from_secs(8));
    assert_eq!(sim.state(0, 3), Some(State::Dead));
    sim.restart(3);
    sim.run_until(Duration::from_secs(3), |sim| sim.converged(&all(8)));
    for index in 0..8 {
        let membership = sim.boards[index].membership.as_ref().unwrap();
        assert_eq!(membership.members().count(), 7, "board {index}");
    }
    // Restarted at once, before anyone declared it dead: the same.
    sim.restart(6);
    sim.run_until(Duration::from_secs(3), |sim| sim.converged(&all(8)));
    sim.run(Duration::from_secs(10));
    assert!(sim.converged(&all(8)));
}

#[test]
fn a_board_of_another_cluster_is_never_admitted() {
    let mut sim = Sim::new(4, 90);
    // Board 3 holds another cluster's join code (or only our id).
    let other = JoinCode::of(&Keypair::from_seed(&[200; 32]));
    let guessed = JoinCode {
        cluster: sim.join.cluster,
        secret: other.secret.clone(),
    };
    let key = sim.boards[3].key.clone();
    for join in [other, guessed] {
        let identity = Identity {
            key: key.clone(),
            join,
            boot: 1,
            addrs: vec![],
            resources: resources(),
        };
        sim.boards[3].membership = Some(Membership::new(Config::default(), identity, 3, sim.now));
        sim.links.clear();
        sim.link_all();
        sim.run(Duration::from_secs(5));
        for index in 0..3 {
            assert_eq!(sim.state(index, 3), None, "board {index} took the stranger");
            let membership = sim.boards[index].membership.as_ref().unwrap();
            assert!(membership.counters().refused > 0);
        }
        assert!(sim.converged(&all(3)));
    }
}

#[test]
fn both_halves_of_a_partition_go_on_and_converge_when_healed() {
    let mut sim = Sim::new(8, 100);
    sim.link_all();
    sim.run(Duration::from_secs(3));
    for index in 4..8 {
        sim.group[index] = 1;
    }
    let left: BTreeSet<usize> = (0..4).collect();
    let right: BTreeSet<usize> = (4..8).collect();
    sim.run_until(Duration::from_secs(30), |sim| {
        sim.converged(&left) && sim.converged(&right)
    });
    sim.run(Duration::from_secs(5));
    for index in 0..8 {
        sim.group[index] = 0;
    }
    let took = sim.run_until(Duration::from_secs(30), |sim| sim.converged(&all(8)));
    assert!(took <= Duration::from_secs(15), "healed after {took:?}");
}

#[test]
fn the_member_list_is_bounded() {
    let mut sim = Sim::new(12, 110);
    let config = Config {
        members_max: 6,
        ..Config::default()
    };
    for index in 0..12 {
        let board = &sim.boards[index];
        let identity = Identity {
            key: board.key.clone(),
            join: sim.join.clone(),
            boot: 1,
            addrs: vec![],
            resources: resources(),
        };
        let membership = Membership::new(config.clone(), identity, index as u64, sim.now);
        sim.boards[index].membership = Some(membership);
    }
    sim.link_all();
    sim.run(Duration::from_secs(10));
    for board in &sim.boards {
        let membership = board.membership.as_ref().unwrap();
        assert!(membership.members().count() < 6);
    }
}

#[test]
fn suspicion_shrinks_as_confirmations_come() {
    let mut sim = Sim::new(8, 120);
    sim.link_all();
    sim.run(Duration::from_secs(2));
    let membership = sim.boards[0].membership.as_ref().unwrap();
    let one = membership.suspicion_timeout(1);
    let four = membership.suspicion_timeout(4);
    assert!(one > four, "{one:?} {four:?}");
    assert_eq!(four, membership.suspicion_timeout(9));
    // Three boards: nobody else could confirm, so the minimum at once.
    let mut small = Sim::new(3, 130);
    small.link_all();
    small.run(Duration::from_secs(2));
    let membership = small.boards[0].membership.as_ref().unwrap();
    assert_eq!(membership.suspicion_timeout(1), four);
}
