//! The routes a node opened, and how they are repaired.
//!
//! [`Sources`] opens a route on the lowest-latency path the topology
//! allows, and when the router reports it broken ([`Broken`], as precisely
//! as it knows), turns that into nodes and links to avoid ([`Avoid`]) and
//! moves the route to the best path that stays away from them. Avoidance
//! accumulates over the attempts of one repair, so a route never goes back
//! to a path that just failed; after [`ATTEMPTS_MAX`] failed paths, or when
//! the destination itself refuses, the route is abandoned. A repair that
//! succeeds starts the count again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fogwire_identity::NodeId;

use crate::path::{self, Path, PathError, Query};
use crate::router::message::FailReason;
use crate::router::{Broken, Hop, Now, OpenError, RouteId, Router, SessionId, SetupError};
use crate::topology::Topology;

/// Most paths tried for one repair before the route is abandoned.
pub const ATTEMPTS_MAX: u32 = 4;
/// How long a route is up before its destination is worth a direct link.
pub const DIRECT_AFTER: Duration = Duration::from_secs(3);

/// Nodes and links a repair keeps away from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Avoid {
    pub nodes: Vec<NodeId>,
    pub links: Vec<(NodeId, NodeId)>,
}

impl Avoid {
    fn node(&mut self, node: NodeId) {
        if !self.nodes.contains(&node) {
            self.nodes.push(node);
        }
    }

    fn link(&mut self, a: NodeId, b: NodeId) {
        if !self.links.contains(&(a, b)) && !self.links.contains(&(b, a)) {
            self.links.push((a, b));
        }
    }

    /// Adds what `cause` says to avoid on the path `source → hops`.
    /// Returns `false` if the cause leaves nothing to repair (the
    /// destination itself refuses).
    pub fn learn(&mut self, source: NodeId, hops: &[NodeId], cause: &Broken) -> bool {
        let Some((&destination, relays)) = hops.split_last() else {
            return false;
        };
        let all_relays = |avoid: &mut Avoid| {
            for relay in relays {
                avoid.node(*relay);
            }
            if relays.is_empty() {
                avoid.link(source, destination);
            }
        };
        match cause {
            // A dead relay takes all its links with it, so avoid the node;
            // a link into the destination can only be avoided as a link.
            Broken::LinkDown { from, to } => {
                if *to == destination {
                    self.link(*from, *to);
                } else {
                    self.node(*to);
                }
            }
            Broken::Silent => all_relays(self),
            Broken::Setup(SetupError::Hop {
                index,
                node,
                reason,
            }) => match reason {
                FailReason::Refused | FailReason::UnknownSession => return false,
                FailReason::NoLink | FailReason::NextLinkDown => {
                    let next = hops.get(index + 1).copied().unwrap_or(destination);
                    self.link(*node, next);
                }
                _ if *node == destination => all_relays(self),
                _ => self.node(*node),
            },
            Broken::Setup(SetupError::BadAnswer) => return false,
            Broken::Setup(_) => all_relays(self),
        }
        true
    }

    /// `query` with this avoidance added.
    pub fn apply(&self, mut query: Query) -> Query {
        query.avoid.extend(self.nodes.iter().copied());
        query.avoid_links.extend(self.links.iter().copied());
        query
    }
}

/// Why a route could not be opened or moved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteOpenError {
    #[error("{0}")]
    NoPath(#[from] PathError),
    #[error("{0} has not advertised itself (see `fogwire nodes`)")]
    Unknown(NodeId),
    #[error("cannot open the route: {0}")]
    Open(#[from] OpenError),
}

/// Why a route whose setup failed is not tried again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RetryError {
    #[error("not a route this node tracks")]
    NotTracked,
    #[error("{0}")]
    Final(SetupError),
    #[error("{ATTEMPTS_MAX} paths failed; the last: {0}")]
    Exhausted(SetupError),
    #[error("no other path: {0}")]
    NoOtherPath(#[from] RouteOpenError),
}

/// A route this node opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub destination: NodeId,
    /// What its paths must respect (before avoidance).
    pub query: Query,
    /// Its session, once it is up.
    pub session: Option<SessionId>,
    /// The advertised one-way latency of its current path.
    pub latency_us: u64,
    /// Hops of its current path.
    pub hops: usize,
    /// The nodes of its current path after this one.
    path: Vec<NodeId>,
    /// Since when its session has been up (first came up).
    up_since: Option<Instant>,
    avoid: Avoid,
    attempts: u32,
}

/// What became of a broken route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    /// It is being set up along this path.
    Moving(Path),
    /// It was abandoned (the router reports it down), and why.
    Abandoned(String),
}

/// The routes this node opened.
#[derive(Debug, Default)]
pub struct Sources {
    routes: BTreeMap<RouteId, Source>,
}

impl Sources {
    /// Opens a route on the best path for `query`; the router reports it
    /// up (or failed) later.
    pub fn open(
        &mut self,
        router: &mut Router,
        topology: &mut Topology,
        query: Query,
        now: Now,
    ) -> Result<(RouteId, Path), RouteOpenError> {
        let best = best_path(topology, query.clone())?;
        let hops = hops(topology, &best.nodes[1..])?;
        let route = router.open_route(&hops, now)?;
        self.routes.insert(
            route,
            Source {
                destination: query.destination,
                query,
                session: None,
                latency_us: best.latency_us,
                hops: best.hops(),
                path: best.nodes[1..].to_vec(),
                up_since: None,
                avoid: Avoid::default(),
                attempts: 0,
            },
        );
        Ok((route, best))
    }

    pub fn get(&self, route: RouteId) -> Option<&Source> {
        self.routes.get(&route)
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The route came up (or back up) with `session` at `now`.
    pub fn up(&mut self, route: RouteId, session: SessionId, now: Instant) {
        if let Some(source) = self.routes.get_mut(&route) {
            source.session = Some(session);
            source.up_since.get_or_insert(now);
        }
    }

    /// The route moved to its new path: the next break starts afresh.
    pub fn repaired(&mut self, route: RouteId) {
        if let Some(source) = self.routes.get_mut(&route) {
            source.attempts = 0;
            source.avoid = Avoid::default();
        }
    }

    /// The route is gone (down, failed or closed).
    pub fn remove(&mut self, route: RouteId) -> Option<Source> {
        self.routes.remove(&route)
    }

    /// The router reports that `route` could not be set up (`error`): opens
    /// it again on a path that avoids what failed — a hop whose link to
    /// the next one is gone though the graph still shows it, say — as a
    /// repair would, up to [`ATTEMPTS_MAX`] paths. The new route and its
    /// path, or why it is given up (it is no longer tracked then).
    pub fn setup_failed(
        &mut self,
        router: &mut Router,
        topology: &mut Topology,
        route: RouteId,
        error: &SetupError,
        now: Now,
    ) -> Result<(RouteId, Path), RetryError> {
        let mut source = self.routes.remove(&route).ok_or(RetryError::NotTracked)?;
        source.attempts += 1;
        let cause = Broken::Setup(error.clone());
        if !source.avoid.learn(topology.local(), &source.path, &cause) {
            return Err(RetryError::Final(error.clone()));
        }
        if source.attempts > ATTEMPTS_MAX {
            return Err(RetryError::Exhausted(error.clone()));
        }
        let query = source.avoid.apply(source.query.clone());
        let best = best_path(topology, query)?;
        let hops = hops(topology, &best.nodes[1..])?;
        let new_route = router
            .open_route(&hops, now)
            .map_err(RouteOpenError::from)?;
        source.latency_us = best.latency_us;
        source.hops = best.hops();
        source.path = best.nodes[1..].to_vec();
        self.routes.insert(new_route, source);
        Ok((new_route, best))
    }

    /// The router reports `route` broken on `path` (the hops after this
    /// node) because of `cause`: moves it to a new path that avoids what
    /// broke, or abandons it.
    pub fn broken(
        &mut self,
        router: &mut Router,
        topology: &mut Topology,
        route: RouteId,
        path: &[NodeId],
        cause: &Broken,
        now: Now,
    ) -> Repair {
        let local = topology.local();
        let Some(source) = self.routes.get_mut(&route) else {
            let detail = "not a route this node tracks";
            router.abandon_route(route, detail, now);
            return Repair::Abandoned(detail.into());
        };
        source.attempts += 1;
        let repairable = source.avoid.learn(local, path, cause);
        if !repairable || source.attempts > ATTEMPTS_MAX {
            let detail = if repairable {
                format!("{ATTEMPTS_MAX} new paths failed")
            } else {
                format!("the destination cannot take the session back ({cause:?})")
            };
            router.abandon_route(route, detail.clone(), now);
            return Repair::Abandoned(detail);
        }
        let query = source.avoid.apply(source.query.clone());
        let moved = best_path(topology, query).and_then(|best| {
            let hops = hops(topology, &best.nodes[1..])?;
            router.repair_route(route, &hops, now)?;
            Ok(best)
        });
        match moved {
            Ok(best) => {
                if let Some(source) = self.routes.get_mut(&route) {
                    source.latency_us = best.latency_us;
                    source.hops = best.hops();
                    source.path = best.nodes[1..].to_vec();
                }
                Repair::Moving(best)
            }
            Err(error) => {
                let detail = format!("no path remains: {error}");
                router.abandon_route(route, detail.clone(), now);
                Repair::Abandoned(detail)
            }
        }
    }
}

impl Sources {
    /// The destinations a direct link would serve: those of routes that
    /// have been up over relays for [`DIRECT_AFTER`] and were opened for
    /// the lowest latency alone (a route asked to take several hops, or
    /// to end at a given node, wants no direct link; a route that lives a
    /// moment, a ping's, is not worth one). Sorted, without repeats.
    pub fn direct_wanted(&self, now: Instant) -> Vec<NodeId> {
        let mut wanted: Vec<NodeId> = self
            .routes
            .values()
            .filter(|source| {
                source
                    .up_since
                    .is_some_and(|since| now.saturating_duration_since(since) >= DIRECT_AFTER)
                    && source.session.is_some()
                    && source.hops > 1
                    && source.query.min_hops <= 1
                    && source.query.last_hop.is_none()
            })
            .map(|source| source.destination)
            .collect();
        wanted.sort();
        wanted.dedup();
        wanted
    }

    /// Moves each route that is up onto a path with fewer hops and no
    /// more latency than its own (but for a new link's unmeasured
    /// latency), if the topology now has one — a direct link punched to
    /// its destination, say (relay.md §3) — respecting what it was opened
    /// with. The routes moved, with their new paths.
    pub fn upgrade(
        &mut self,
        router: &mut Router,
        topology: &mut Topology,
        now: Now,
    ) -> Vec<(RouteId, Path)> {
        let mut moved = Vec::new();
        for (route, source) in &mut self.routes {
            if source.session.is_none() || source.hops <= 1 {
                continue;
            }
            let shorter = Query {
                max_hops: source.hops - 1,
                ..source.query.clone()
            };
            let Some(best) =
                direct_path(topology, &shorter).or_else(|| best_path(topology, shorter).ok())
            else {
                continue;
            };
            // A link just made shows the placeholder latency until its
            // ends have measured and advertised it (seconds, under the
            // advert budget): a shorter path is taken unless it is
            // slower by more than that placeholder.
            let slack = u64::from(crate::control_plane::LATENCY_UNKNOWN_US);
            if best.latency_us > source.latency_us.saturating_add(slack) {
                continue;
            }
            let Ok(hops) = hops(topology, &best.nodes[1..]) else {
                continue;
            };
            if router.move_route(*route, &hops, now).is_ok() {
                source.latency_us = best.latency_us;
                source.hops = best.hops();
                source.path = best.nodes[1..].to_vec();
                moved.push((*route, best));
            }
        }
        moved
    }
}

/// The one-hop path to `query`'s destination, if this node has a link to
/// it and `query` allows it. The link is known first-hand, so it is
/// taken before the destination's advert names it back (which the graph
/// waits for), at the latency this node's own advert gives it.
fn direct_path(topology: &Topology, query: &Query) -> Option<Path> {
    let (local, destination) = (topology.local(), query.destination);
    let allowed = query.min_hops <= 1
        && query.max_hops >= 1
        && query.last_hop.is_none_or(|last| last == local)
        && !query.avoid.contains(&destination)
        && !query
            .avoid_links
            .iter()
            .any(|&(a, b)| (a, b) == (local, destination) || (b, a) == (local, destination));
    if !allowed {
        return None;
    }
    let link = topology
        .get(&local)?
        .links
        .iter()
        .find(|link| link.neighbour == destination)?;
    Some(Path {
        nodes: vec![local, destination],
        latency_us: u64::from(link.latency_us),
    })
}

/// The lowest-latency path for `query`.
fn best_path(topology: &mut Topology, query: Query) -> Result<Path, RouteOpenError> {
    let query = Query {
        alternatives: 1,
        ..query
    };
    path::find(topology.graph(), &query)?
        .into_iter()
        .next()
        .ok_or(RouteOpenError::NoPath(PathError::NoPath))
}

/// The hops of a path: each node with the key its adverts name.
pub fn hops(topology: &Topology, nodes: &[NodeId]) -> Result<Vec<Hop>, RouteOpenError> {
    nodes
        .iter()
        .map(|node| {
            topology
                .get(node)
                .map(|advert| Hop {
                    node: *node,
                    link_key: advert.link_key,
                })
                .ok_or(RouteOpenError::Unknown(*node))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::message::TeardownReason;
    use fogwire_identity::Keypair;

    fn ids(count: u8) -> Vec<NodeId> {
        (1..=count)
            .map(|i| Keypair::from_seed(&[i; 32]).node_id())
            .collect()
    }

    #[test]
    fn a_dead_relay_is_avoided_and_a_dead_last_link_only_as_a_link() {
        let n = ids(4);
        let mut avoid = Avoid::default();
        assert!(avoid.learn(
            n[0],
            &n[1..],
            &Broken::LinkDown {
                from: n[1],
                to: n[2]
            }
        ));
        assert_eq!(avoid.nodes, vec![n[2]]);
        assert!(avoid.learn(
            n[0],
            &n[1..],
            &Broken::LinkDown {
                from: n[2],
                to: n[3]
            }
        ));
        assert_eq!(avoid.links, vec![(n[2], n[3])]);
    }

    #[test]
    fn silence_avoids_every_relay_or_the_direct_link() {
        let n = ids(3);
        let mut avoid = Avoid::default();
        avoid.learn(n[0], &n[1..], &Broken::Silent);
        assert_eq!(avoid.nodes, vec![n[1]]);
        let mut direct = Avoid::default();
        direct.learn(
            n[0],
            &n[2..],
            &Broken::Setup(SetupError::TornDown(TeardownReason::Expired)),
        );
        assert_eq!(direct.links, vec![(n[0], n[2])]);
    }

    #[test]
    fn a_refusing_destination_cannot_be_repaired_around() {
        let n = ids(3);
        let cause = Broken::Setup(SetupError::Hop {
            index: 1,
            node: n[2],
            reason: FailReason::UnknownSession,
        });
        assert!(!Avoid::default().learn(n[0], &n[1..], &cause));
    }
}
