//! Source routing: the best path by latency under the caller's
//! constraints, computed at the source from its own copy of the graph.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use fogwire_identity::NodeId;

use crate::graph::Graph;

/// Longest route the network carries, in links.
pub const HOPS_MAX: usize = 8;
/// Work bound of the last-resort exhaustive search, in node expansions.
pub const EXHAUSTIVE_EXPANSIONS_MAX: usize = 200_000;

/// What path to look for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub source: NodeId,
    pub destination: NodeId,
    /// Fewest links the path may have (1: a direct link is fine).
    pub min_hops: usize,
    /// Most links the path may have.
    pub max_hops: usize,
    /// Nodes the path must not pass through.
    pub avoid: Vec<NodeId>,
    /// Links the path must not use (either direction).
    pub avoid_links: Vec<(NodeId, NodeId)>,
    /// The node the path must reach the destination from (an exit).
    pub last_hop: Option<NodeId>,
    /// How many node-disjoint paths to return (the best first).
    pub alternatives: usize,
}

impl Query {
    pub fn new(source: NodeId, destination: NodeId) -> Self {
        Self {
            source,
            destination,
            min_hops: 1,
            max_hops: HOPS_MAX,
            avoid: Vec::new(),
            avoid_links: Vec::new(),
            last_hop: None,
            alternatives: 1,
        }
    }
}

/// A loop-free path, from source to destination inclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    pub nodes: Vec<NodeId>,
    /// Sum of the edges' one-way latencies.
    pub latency_us: u64,
}

impl Path {
    /// Links in the path.
    pub fn hops(&self) -> usize {
        self.nodes.len().saturating_sub(1)
    }
}

/// Why no path was returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    #[error("{node} is not in the known graph")]
    UnknownNode { node: NodeId },
    #[error("source and destination are the same node")]
    SameNode,
    #[error("hop bounds {min}..={max} are empty or outside 1..={HOPS_MAX}")]
    BadBounds { min: usize, max: usize },
    #[error("no path within the constraints")]
    NoPath,
}

/// Finds up to `query.alternatives` node-disjoint paths, best first.
///
/// Each path is the lowest-latency loop-free path within the hop bounds
/// that avoids `query.avoid` and the intermediate nodes of the paths before
/// it (so the alternatives share no relay). The search is exact for the
/// maximum-hop bound. A minimum-hop bound above the shortest path's length
/// is met by a search over (node, hops) states that never revisits a node:
/// fast and loop-free, though in rare graphs not the very best path; if it
/// finds nothing, a depth-first search bounded by latency and hop distances
/// (and by [`EXHAUSTIVE_EXPANSIONS_MAX`]) settles whether a path exists.
pub fn find(graph: &Graph, query: &Query) -> Result<Vec<Path>, PathError> {
    if !query.avoid_links.is_empty() {
        // Rare (route repair), so a filtered copy beats a check on every
        // edge of every search.
        let pruned = graph.without_links(&query.avoid_links);
        let query = Query {
            avoid_links: Vec::new(),
            ..query.clone()
        };
        return find(&pruned, &query);
    }
    let index = |node: &NodeId| {
        graph
            .index_of(node)
            .ok_or(PathError::UnknownNode { node: *node })
    };
    let source = index(&query.source)?;
    let destination = index(&query.destination)?;
    if source == destination {
        return Err(PathError::SameNode);
    }
    if query.min_hops == 0 || query.min_hops > query.max_hops || query.max_hops > HOPS_MAX {
        return Err(PathError::BadBounds {
            min: query.min_hops,
            max: query.max_hops,
        });
    }
    let last_hop = query.last_hop.as_ref().map(index).transpose()?;
    let mut blocked = vec![false; graph.node_count()];
    for node in &query.avoid {
        if let Some(avoided) = graph.index_of(node) {
            blocked[avoided as usize] = true;
        }
    }
    if blocked[source as usize] || blocked[destination as usize] {
        return Err(PathError::NoPath);
    }
    // Nodes that carry no routes for others: only as an end (or as the
    // last hop the caller named, which is then its destination's way in).
    for node in 0..graph.node_count() as u32 {
        if graph.is_endpoint_only(node)
            && node != source
            && node != destination
            && Some(node) != last_hop
        {
            blocked[node as usize] = true;
        }
    }
    let mut paths = Vec::new();
    for _ in 0..query.alternatives.max(1) {
        let found = match last_hop {
            Some(exit) => via_last_hop(graph, query, source, destination, exit, &blocked),
            None => shortest(
                graph,
                source,
                destination,
                query.min_hops,
                query.max_hops,
                &blocked,
            ),
        };
        let Some((nodes, latency_us)) = found else {
            break;
        };
        for &relay in &nodes[1..nodes.len() - 1] {
            blocked[relay as usize] = true;
        }
        paths.push(Path {
            nodes: nodes.into_iter().map(|node| graph.id_of(node)).collect(),
            latency_us,
        });
        if last_hop.is_some() {
            // Disjoint alternatives cannot share the required last hop.
            break;
        }
    }
    if paths.is_empty() {
        return Err(PathError::NoPath);
    }
    Ok(paths)
}

fn via_last_hop(
    graph: &Graph,
    query: &Query,
    source: u32,
    destination: u32,
    exit: u32,
    blocked: &[bool],
) -> Option<(Vec<u32>, u64)> {
    if blocked[exit as usize] || exit == destination {
        return None;
    }
    let final_link = u64::from(graph.latency(exit, destination)?);
    if exit == source {
        return (query.min_hops <= 1).then(|| (vec![source, destination], final_link));
    }
    // The destination may not appear before the end.
    let mut blocked = blocked.to_vec();
    blocked[destination as usize] = true;
    let (mut nodes, latency) = shortest(
        graph,
        source,
        exit,
        query.min_hops.saturating_sub(1).max(1),
        query.max_hops.checked_sub(1)?,
        &blocked,
    )?;
    nodes.push(destination);
    Some((nodes, latency + final_link))
}

/// The best loop-free path from `source` to `destination` with
/// `min..=max` links, avoiding `blocked` nodes.
fn shortest(
    graph: &Graph,
    source: u32,
    destination: u32,
    min: usize,
    max: usize,
    blocked: &[bool],
) -> Option<(Vec<u32>, u64)> {
    if max == 0 {
        return None;
    }
    // Plain Dijkstra first: its answer is optimal, and loop-free, whenever
    // its hop count fits the bounds, which is the common case.
    if let Some((nodes, latency)) = dijkstra(graph, source, destination, blocked)
        && (min..=max).contains(&(nodes.len() - 1))
    {
        return Some((nodes, latency));
    }
    if min == 1 {
        // Only the hop limit binds: the best walk within it is loop-free.
        return hop_limited(graph, source, destination, max, blocked);
    }
    layered(graph, source, destination, min, max, blocked)
        .or_else(|| exhaustive(graph, source, destination, min, max, blocked))
}

/// The lowest-latency path with at most `max` links: Bellman-Ford by
/// rounds, each round relaxing only the nodes the last one improved. With
/// positive latencies the best walk within a hop limit never loops.
fn hop_limited(
    graph: &Graph,
    source: u32,
    destination: u32,
    max: usize,
    blocked: &[bool],
) -> Option<(Vec<u32>, u64)> {
    let count = graph.node_count();
    let mut best = vec![u64::MAX; count];
    // previous[round * count + node]: the node it was reached from when
    // round `round` improved it.
    let mut previous = vec![u32::MAX; count * (max + 1)];
    best[source as usize] = 0;
    let mut frontier = vec![source];
    let mut improved = Vec::new();
    let mut round_best = best.clone();
    for round in 1..=max {
        improved.clear();
        for &node in &frontier {
            if node == destination {
                continue;
            }
            let cost = best[node as usize];
            for (next, latency) in graph.neighbours(node) {
                let candidate = cost + u64::from(latency);
                if !blocked[next as usize] && candidate < round_best[next as usize] {
                    if round_best[next as usize] == best[next as usize] {
                        improved.push(next);
                    }
                    round_best[next as usize] = candidate;
                    previous[round * count + next as usize] = node;
                }
            }
        }
        if improved.is_empty() {
            break;
        }
        for &node in &improved {
            best[node as usize] = round_best[node as usize];
        }
        std::mem::swap(&mut frontier, &mut improved);
    }
    let cost = best[destination as usize];
    if cost == u64::MAX {
        return None;
    }
    let mut nodes = vec![destination];
    let (mut at, mut round) = (destination, max);
    while at != source {
        while previous[round * count + at as usize] == u32::MAX {
            round -= 1;
        }
        at = previous[round * count + at as usize];
        round -= 1;
        nodes.push(at);
    }
    nodes.reverse();
    Some((nodes, cost))
}

/// Bidirectional Dijkstra: searches from both ends at once and stops when
/// the two frontiers prove no shorter meeting point can remain, which
/// settles far fewer nodes than a one-sided search on large graphs.
fn dijkstra(
    graph: &Graph,
    source: u32,
    destination: u32,
    blocked: &[bool],
) -> Option<(Vec<u32>, u64)> {
    let count = graph.node_count();
    // [forward, backward]
    let mut distance = [vec![u64::MAX; count], vec![u64::MAX; count]];
    let mut previous = [vec![u32::MAX; count], vec![u32::MAX; count]];
    let mut heaps = [BinaryHeap::new(), BinaryHeap::new()];
    for (side, start) in [(0, source), (1, destination)] {
        distance[side][start as usize] = 0;
        heaps[side].push(Reverse((0u64, start)));
    }
    let mut best = u64::MAX;
    let mut meeting = None;
    loop {
        let tops = [
            heaps[0].peek().map(|Reverse((cost, _))| *cost),
            heaps[1].peek().map(|Reverse((cost, _))| *cost),
        ];
        let side = match tops {
            [None, None] => break,
            [Some(forward), Some(backward)] => {
                if forward.saturating_add(backward) >= best {
                    break;
                }
                usize::from(backward < forward)
            }
            [Some(_), None] => 0,
            [None, Some(_)] => 1,
        };
        let Some(Reverse((cost, node))) = heaps[side].pop() else {
            break;
        };
        if cost > distance[side][node as usize] {
            continue;
        }
        let other = 1 - side;
        for (next, latency) in graph.neighbours(node) {
            if blocked[next as usize] {
                continue;
            }
            let candidate = cost + u64::from(latency);
            if candidate < distance[side][next as usize] {
                distance[side][next as usize] = candidate;
                previous[side][next as usize] = node;
                heaps[side].push(Reverse((candidate, next)));
            }
            let across = distance[other][next as usize];
            if across != u64::MAX
                && distance[side][next as usize] == candidate
                && candidate.saturating_add(across) < best
            {
                best = candidate + across;
                meeting = Some(next);
            }
        }
    }
    let meeting = meeting?;
    let mut nodes = vec![meeting];
    let mut at = meeting;
    while at != source {
        at = previous[0][at as usize];
        nodes.push(at);
    }
    nodes.reverse();
    let mut at = meeting;
    while at != destination {
        at = previous[1][at as usize];
        nodes.push(at);
    }
    Some((nodes, best))
}

/// Dijkstra over (node, links so far) states, which can honour a minimum
/// number of links; expansions that would revisit a node on the state's own
/// path are skipped, so every result is loop-free.
fn layered(
    graph: &Graph,
    source: u32,
    destination: u32,
    min: usize,
    max: usize,
    blocked: &[bool],
) -> Option<(Vec<u32>, u64)> {
    let count = graph.node_count();
    let state = |node: u32, hops: usize| hops * count + node as usize;
    let mut distance = vec![u64::MAX; count * (max + 1)];
    let mut previous = vec![u32::MAX; count * (max + 1)];
    let mut heap = BinaryHeap::new();
    distance[state(source, 0)] = 0;
    heap.push(Reverse((0u64, 0usize, source)));
    let on_path = |previous: &[u32], mut node: u32, mut hops: usize, wanted: u32| {
        loop {
            if node == wanted {
                return true;
            }
            if hops == 0 {
                return false;
            }
            node = previous[state(node, hops)];
            hops -= 1;
        }
    };
    while let Some(Reverse((cost, hops, node))) = heap.pop() {
        if cost > distance[state(node, hops)] {
            continue;
        }
        if node == destination {
            if hops >= min {
                let mut nodes = vec![destination];
                let (mut at, mut at_hops) = (destination, hops);
                while at_hops > 0 {
                    at = previous[state(at, at_hops)];
                    at_hops -= 1;
                    nodes.push(at);
                }
                nodes.reverse();
                return Some((nodes, cost));
            }
            // The destination is only ever the last node.
            continue;
        }
        if hops == max {
            continue;
        }
        for (next, latency) in graph.neighbours(node) {
            if blocked[next as usize] || (next == destination && hops + 1 < min) {
                continue;
            }
            let candidate = cost + u64::from(latency);
            let next_state = state(next, hops + 1);
            if candidate < distance[next_state] && !on_path(&previous, node, hops, next) {
                distance[next_state] = candidate;
                previous[next_state] = node;
                heap.push(Reverse((candidate, hops + 1, next)));
            }
        }
    }
    None
}

/// Depth-first search over loop-free paths, pruned by a lower bound on the
/// latency still needed (the plain distance to the destination) and on the
/// links still needed (the hop distance), within a work budget.
fn exhaustive(
    graph: &Graph,
    source: u32,
    destination: u32,
    min: usize,
    max: usize,
    blocked: &[bool],
) -> Option<(Vec<u32>, u64)> {
    let count = graph.node_count();
    // Lower bounds towards the destination, over unblocked nodes.
    let mut remaining = vec![u64::MAX; count];
    let mut heap = BinaryHeap::new();
    remaining[destination as usize] = 0;
    heap.push(Reverse((0u64, destination)));
    while let Some(Reverse((cost, node))) = heap.pop() {
        if cost > remaining[node as usize] {
            continue;
        }
        for (next, latency) in graph.neighbours(node) {
            let candidate = cost + u64::from(latency);
            if !blocked[next as usize] && candidate < remaining[next as usize] {
                remaining[next as usize] = candidate;
                heap.push(Reverse((candidate, next)));
            }
        }
    }
    let mut hops_left = vec![usize::MAX; count];
    let mut queue = std::collections::VecDeque::from([destination]);
    hops_left[destination as usize] = 0;
    while let Some(node) = queue.pop_front() {
        for (next, _) in graph.neighbours(node) {
            if !blocked[next as usize] && hops_left[next as usize] == usize::MAX {
                hops_left[next as usize] = hops_left[node as usize] + 1;
                queue.push_back(next);
            }
        }
    }
    if remaining[source as usize] == u64::MAX {
        return None;
    }

    struct Search<'a> {
        graph: &'a Graph,
        destination: u32,
        min: usize,
        max: usize,
        blocked: &'a [bool],
        remaining: Vec<u64>,
        hops_left: Vec<usize>,
        on_path: Vec<bool>,
        path: Vec<u32>,
        best: Option<(Vec<u32>, u64)>,
        budget: usize,
    }
    impl Search<'_> {
        fn visit(&mut self, node: u32, cost: u64) {
            if self.budget == 0 {
                return;
            }
            self.budget -= 1;
            let hops = self.path.len() - 1;
            if node == self.destination {
                if hops >= self.min && self.best.as_ref().is_none_or(|(_, best)| cost < *best) {
                    self.best = Some((self.path.clone(), cost));
                }
                return;
            }
            if hops >= self.max {
                return;
            }
            let neighbours: Vec<(u32, u32)> = self.graph.neighbours(node).collect();
            for (next, latency) in neighbours {
                let next_cost = cost + u64::from(latency);
                let bound = self.best.as_ref().map_or(u64::MAX, |(_, best)| *best);
                if self.blocked[next as usize]
                    || self.on_path[next as usize]
                    || (next == self.destination && hops + 1 < self.min)
                    || hops + 1 + self.hops_left[next as usize] > self.max
                    || next_cost.saturating_add(self.remaining[next as usize]) >= bound
                {
                    continue;
                }
                self.on_path[next as usize] = true;
                self.path.push(next);
                self.visit(next, next_cost);
                self.path.pop();
                self.on_path[next as usize] = false;
            }
        }
    }
    let mut search = Search {
        graph,
        destination,
        min,
        max,
        blocked,
        remaining,
        hops_left,
        on_path: vec![false; count],
        path: vec![source],
        best: None,
        budget: EXHAUSTIVE_EXPANSIONS_MAX,
    };
    search.on_path[source as usize] = true;
    search.visit(source, 0);
    search.best
}

#[cfg(test)]
mod tests {
    use super::*;
    use fogwire_identity::Keypair;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn ids(count: usize) -> Vec<NodeId> {
        (0..count)
            .map(|seed| Keypair::from_seed(&[seed as u8; 32]).node_id())
            .collect()
    }

    /// The 8-node ring with chords 0–4 and 2–6 that the demo builds, every
    /// edge 100 µs except the chords (250 µs).
    fn demo_graph() -> Graph {
        let mut edges: Vec<(u32, u32, u32)> = (0..8).map(|i| (i, (i + 1) % 8, 100)).collect();
        edges.push((0, 4, 250));
        edges.push((2, 6, 250));
        Graph::new(ids(8), edges)
    }

    fn query(graph: &Graph, from: u32, to: u32) -> Query {
        Query::new(graph.id_of(from), graph.id_of(to))
    }

    fn indices(graph: &Graph, path: &Path) -> Vec<u32> {
        path.nodes
            .iter()
            .map(|n| graph.index_of(n).unwrap())
            .collect()
    }

    #[test]
    fn finds_the_lowest_latency_path() {
        let graph = demo_graph();
        let paths = find(&graph, &query(&graph, 0, 4)).unwrap();
        // The chord (250 µs) beats four ring hops (400 µs).
        assert_eq!(indices(&graph, &paths[0]), vec![0, 4]);
        assert_eq!(paths[0].latency_us, 250);
        // 1→5: four ring hops (400 µs) beat either chord (450 µs).
        let paths = find(&graph, &query(&graph, 1, 5)).unwrap();
        assert_eq!(indices(&graph, &paths[0]), vec![1, 2, 3, 4, 5]);
        assert_eq!(paths[0].latency_us, 400);
    }

    #[test]
    fn a_node_that_carries_no_routes_for_others_only_ends_paths() {
        // Node 4 is no relay: 0→4 still reaches it (the chord), 1→5 no
        // longer passes it (four ring hops did), and with 4 and 6 both
        // endpoints only, 3→5 has no way around.
        let graph = demo_graph().with_endpoints_only([4]);
        assert_eq!(
            indices(&graph, &find(&graph, &query(&graph, 0, 4)).unwrap()[0]),
            vec![0, 4]
        );
        let path = indices(&graph, &find(&graph, &query(&graph, 1, 5)).unwrap()[0]);
        assert!(!path.contains(&4), "{path:?}");
        let graph = demo_graph().with_endpoints_only([4, 6]);
        assert_eq!(find(&graph, &query(&graph, 3, 5)), Err(PathError::NoPath));
        // Cutting links keeps the marks.
        let cut = graph.without_links(&[(graph.id_of(0), graph.id_of(1))]);
        assert!(cut.is_endpoint_only(4) && cut.is_endpoint_only(6) && !cut.is_endpoint_only(0));
    }

    #[test]
    fn honours_hop_bounds() {
        let graph = demo_graph();
        let mut q = query(&graph, 0, 1);
        q.min_hops = 3;
        let path = &find(&graph, &q).unwrap()[0];
        assert!(path.hops() >= 3, "{path:?}");
        let mut seen = HashSet::new();
        assert!(
            path.nodes.iter().all(|n| seen.insert(*n)),
            "a loop: {path:?}"
        );
        // 0→1 in at most 1 hop exists; 0→5 in at most 1 hop does not.
        let mut q = query(&graph, 0, 5);
        q.max_hops = 1;
        assert_eq!(find(&graph, &q), Err(PathError::NoPath));
        q.max_hops = 2;
        assert_eq!(
            indices(&graph, &find(&graph, &q).unwrap()[0]),
            vec![0, 4, 5]
        );
    }

    #[test]
    fn avoids_nodes_and_uses_the_required_last_hop() {
        let graph = demo_graph();
        let mut q = query(&graph, 0, 2);
        q.avoid = vec![graph.id_of(1)];
        let path = &find(&graph, &q).unwrap()[0];
        assert!(!indices(&graph, path).contains(&1));
        let mut q = query(&graph, 0, 2);
        q.last_hop = Some(graph.id_of(3));
        let path = &find(&graph, &q).unwrap()[0];
        let nodes = indices(&graph, path);
        assert_eq!(nodes[nodes.len() - 2], 3);
        assert_eq!(*nodes.last().unwrap(), 2);
    }

    #[test]
    fn alternatives_share_no_relay() {
        let graph = demo_graph();
        let mut q = query(&graph, 0, 4);
        q.min_hops = 2;
        q.alternatives = 3;
        let paths = find(&graph, &q).unwrap();
        assert!(paths.len() >= 2, "{paths:?}");
        let mut relays = HashSet::new();
        for path in &paths {
            for relay in &path.nodes[1..path.nodes.len() - 1] {
                assert!(relays.insert(*relay), "relay reused across alternatives");
            }
        }
    }

    #[test]
    fn refuses_bad_queries() {
        let graph = demo_graph();
        assert_eq!(find(&graph, &query(&graph, 3, 3)), Err(PathError::SameNode));
        let mut q = query(&graph, 0, 1);
        q.min_hops = 0;
        assert!(matches!(find(&graph, &q), Err(PathError::BadBounds { .. })));
        let stranger = Keypair::from_seed(&[99; 32]).node_id();
        let q = Query::new(graph.id_of(0), stranger);
        assert_eq!(
            find(&graph, &q),
            Err(PathError::UnknownNode { node: stranger })
        );
        let mut q = query(&graph, 0, 1);
        q.avoid = vec![graph.id_of(1)];
        assert_eq!(find(&graph, &q), Err(PathError::NoPath));
    }

    /// Every loop-free path by brute force, for checking small graphs.
    fn all_simple_paths(graph: &Graph, from: u32, to: u32, max: usize) -> Vec<(Vec<u32>, u64)> {
        fn walk(
            graph: &Graph,
            path: &mut Vec<u32>,
            cost: u64,
            to: u32,
            max: usize,
            out: &mut Vec<(Vec<u32>, u64)>,
        ) {
            let at = *path.last().unwrap();
            if at == to {
                out.push((path.clone(), cost));
                return;
            }
            if path.len() > max {
                return;
            }
            for (next, latency) in graph.neighbours(at) {
                if !path.contains(&next) {
                    path.push(next);
                    walk(graph, path, cost + u64::from(latency), to, max, out);
                    path.pop();
                }
            }
        }
        let mut out = Vec::new();
        walk(graph, &mut vec![from], 0, to, max, &mut out);
        out
    }

    proptest! {
        #[test]
        fn paths_are_valid_and_optimal_under_a_hop_limit(
            edges in proptest::collection::vec((0u32..12, 0u32..12, 1u32..1000), 0..40),
            from in 0u32..12,
            to_offset in 1u32..12,
            max in 1usize..6,
            min in 1usize..4,
        ) {
            let to = (from + to_offset) % 12;
            let graph = Graph::new(ids(12), edges);
            let mut q = query(&graph, from, to);
            q.max_hops = max;
            let brute = all_simple_paths(&graph, from, to, max);
            let best = brute.iter().map(|(_, cost)| *cost).min();
            match find(&graph, &q) {
                Ok(paths) => {
                    prop_assert_eq!(Some(paths[0].latency_us), best);
                }
                Err(PathError::NoPath) => prop_assert!(best.is_none()),
                Err(other) => prop_assert!(false, "{other}"),
            }
            // With a minimum too: whatever comes back is loop-free, within
            // bounds, made of real edges, and priced right.
            q.min_hops = min.min(max);
            if let Ok(paths) = find(&graph, &q) {
                let path = &paths[0];
                let nodes = indices(&graph, path);
                prop_assert!(path.hops() >= q.min_hops && path.hops() <= max);
                let mut seen = HashSet::new();
                prop_assert!(nodes.iter().all(|n| seen.insert(*n)));
                let cost: u64 = nodes.windows(2).map(|w| u64::from(graph.latency(w[0], w[1]).unwrap())).sum();
                prop_assert_eq!(cost, path.latency_us);
            } else {
                // Nothing found means nothing exists.
                prop_assert!(brute.iter().all(|(p, _)| p.len() - 1 < q.min_hops));
            }
        }
    }
}
