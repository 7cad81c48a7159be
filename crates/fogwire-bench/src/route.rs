//! Path computation on generated graphs of 1 000 to 100 000 nodes, beside a
//! breadth-first traversal of the same graph (the least any search must do)
//! measured in the same run.

use std::time::{Duration, Instant};

use fogwire_identity::{Keypair, NodeId};
use fogwire_route_proto::{Graph, Query, path};
use serde::Serialize;

/// Timings on one graph size.
#[derive(Debug, Clone, Serialize)]
pub struct SizeResult {
    pub nodes: usize,
    pub edges: usize,
    /// One breadth-first traversal of the whole graph: the baseline.
    pub bfs_us: f64,
    /// Median time of a best-path query between random nodes.
    pub shortest_us: f64,
    /// … with at least 3 and at most 6 hops.
    pub min_hops_3_us: f64,
    /// … asking for 3 node-disjoint alternatives.
    pub disjoint_3_us: f64,
}

/// Generates a connected graph with mean degree about 8: each node links to
/// four random earlier ones, with one-way latencies of 1–50 ms.
pub fn generate(nodes: usize, seed: u64) -> Graph {
    let mut random = XorShift(seed | 1);
    let ids: Vec<NodeId> = (0..nodes)
        .map(|index| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(index as u64).to_le_bytes());
            Keypair::from_seed(&seed).node_id()
        })
        .collect();
    let mut edges = Vec::with_capacity(nodes * 4);
    for node in 1..nodes as u32 {
        for _ in 0..4.min(node) {
            let other = (random.next() % u64::from(node)) as u32;
            let latency = 1_000 + (random.next() % 49_000) as u32;
            edges.push((node, other, latency));
        }
    }
    Graph::new(ids, edges)
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn bfs(graph: &Graph, from: u32) -> usize {
    let mut seen = vec![false; graph.node_count()];
    let mut queue = std::collections::VecDeque::from([from]);
    seen[from as usize] = true;
    let mut visited = 0;
    while let Some(node) = queue.pop_front() {
        visited += 1;
        for (next, _) in graph.neighbours(node) {
            if !seen[next as usize] {
                seen[next as usize] = true;
                queue.push_back(next);
            }
        }
    }
    visited
}

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples
        .get(samples.len() / 2)
        .map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

/// Runs `queries` random queries of each kind on a graph of each size.
pub fn run(sizes: &[usize], queries: usize, mut progress: impl FnMut(usize)) -> Vec<SizeResult> {
    let mut results = Vec::new();
    for &nodes in sizes {
        progress(nodes);
        let graph = generate(nodes.max(2), 0x5eed ^ nodes as u64);
        let mut random = XorShift(0xfeed ^ nodes as u64);
        let mut pick = || (random.next() % graph.node_count() as u64) as u32;
        let pairs: Vec<(u32, u32)> = (0..queries.max(1))
            .map(|_| {
                let from = pick();
                let mut to = pick();
                while to == from {
                    to = pick();
                }
                (from, to)
            })
            .collect();
        let time = |make: &dyn Fn(u32, u32) -> Query| {
            median(
                pairs
                    .iter()
                    .map(|&(from, to)| {
                        let query = make(from, to);
                        let started = Instant::now();
                        let _ = std::hint::black_box(path::find(&graph, &query));
                        started.elapsed()
                    })
                    .collect(),
            )
        };
        let bfs_us = median(
            pairs
                .iter()
                .map(|&(from, _)| {
                    let started = Instant::now();
                    std::hint::black_box(bfs(&graph, from));
                    started.elapsed()
                })
                .collect(),
        );
        let shortest_us = time(&|from, to| Query::new(graph.id_of(from), graph.id_of(to)));
        let min_hops_3_us = time(&|from, to| Query {
            min_hops: 3,
            max_hops: 6,
            ..Query::new(graph.id_of(from), graph.id_of(to))
        });
        let disjoint_3_us = time(&|from, to| Query {
            alternatives: 3,
            ..Query::new(graph.id_of(from), graph.id_of(to))
        });
        results.push(SizeResult {
            nodes: graph.node_count(),
            edges: graph.edge_count(),
            bfs_us,
            shortest_us,
            min_hops_3_us,
            disjoint_3_us,
        });
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_graphs_are_connected_with_mean_degree_near_eight() {
        let graph = generate(500, 1);
        assert_eq!(bfs(&graph, 0), 500);
        let mean_degree = 2.0 * graph.edge_count() as f64 / 500.0;
        assert!((7.0..=8.0).contains(&mean_degree), "{mean_degree}");
    }
}
