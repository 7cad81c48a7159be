//! The network as a compact graph, for path computation.
//!
//! Nodes are numbered densely; edges live in one array (compressed sparse
//! rows), so a search over 100 000 nodes touches a few megabytes, not a
//! hash map per node.

use std::collections::HashMap;

use fogwire_identity::NodeId;

/// An undirected graph with a latency on every edge.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    ids: Vec<NodeId>,
    index: HashMap<NodeId, u32>,
    /// Edges of node `n` are `targets[offsets[n]..offsets[n + 1]]`.
    offsets: Vec<u32>,
    targets: Vec<u32>,
    latencies_us: Vec<u32>,
    /// Nodes that carry no routes for others (their adverts name
    /// [`crate::advert::NO_TRANSIT`]): a path may end there, never pass.
    endpoint_only: Vec<bool>,
}

impl Graph {
    /// Builds a graph of `ids` with the given undirected edges (pairs of
    /// indices into `ids`, with a latency). Self-loops and out-of-range
    /// indices are ignored; a repeated edge keeps its lowest latency.
    pub fn new(ids: Vec<NodeId>, edges: impl IntoIterator<Item = (u32, u32, u32)>) -> Self {
        let node_count = ids.len();
        let mut directed: Vec<(u32, u32, u32)> = Vec::new();
        for (a, b, latency_us) in edges {
            if a == b || a as usize >= node_count || b as usize >= node_count {
                continue;
            }
            let latency_us = latency_us.max(1);
            directed.push((a, b, latency_us));
            directed.push((b, a, latency_us));
        }
        directed.sort_unstable();
        directed.dedup_by(|later, earlier| later.0 == earlier.0 && later.1 == earlier.1);
        let mut offsets = vec![0u32; node_count + 1];
        for &(from, _, _) in &directed {
            offsets[from as usize + 1] += 1;
        }
        for index in 0..node_count {
            offsets[index + 1] += offsets[index];
        }
        let targets = directed.iter().map(|&(_, to, _)| to).collect();
        let latencies_us = directed.iter().map(|&(_, _, latency)| latency).collect();
        let index = ids
            .iter()
            .enumerate()
            .map(|(position, id)| (*id, position as u32))
            .collect();
        Self {
            endpoint_only: vec![false; ids.len()],
            ids,
            index,
            offsets,
            targets,
            latencies_us,
        }
    }

    /// This graph with the nodes at `indices` marked as carrying no routes
    /// for others.
    pub fn with_endpoints_only(mut self, indices: impl IntoIterator<Item = u32>) -> Self {
        for index in indices {
            if let Some(flag) = self.endpoint_only.get_mut(index as usize) {
                *flag = true;
            }
        }
        self
    }

    /// Whether node `index` carries no routes for others.
    pub fn is_endpoint_only(&self, index: u32) -> bool {
        self.endpoint_only
            .get(index as usize)
            .copied()
            .unwrap_or(false)
    }

    pub fn node_count(&self) -> usize {
        self.ids.len()
    }

    /// Undirected edges.
    pub fn edge_count(&self) -> usize {
        self.targets.len() / 2
    }

    pub fn index_of(&self, id: &NodeId) -> Option<u32> {
        self.index.get(id).copied()
    }

    pub fn id_of(&self, index: u32) -> NodeId {
        self.ids[index as usize]
    }

    pub fn ids(&self) -> &[NodeId] {
        &self.ids
    }

    /// Neighbours of `node` with the latency to each.
    pub fn neighbours(&self, node: u32) -> impl Iterator<Item = (u32, u32)> + '_ {
        let start = self.offsets[node as usize] as usize;
        let end = self.offsets[node as usize + 1] as usize;
        self.targets[start..end]
            .iter()
            .copied()
            .zip(self.latencies_us[start..end].iter().copied())
    }

    /// This graph without the edges between the given pairs of nodes.
    pub fn without_links(&self, links: &[(NodeId, NodeId)]) -> Graph {
        let cut: Vec<(u32, u32)> = links
            .iter()
            .filter_map(|(a, b)| Some((self.index_of(a)?, self.index_of(b)?)))
            .flat_map(|(a, b)| [(a, b), (b, a)])
            .collect();
        let edges = (0..self.node_count() as u32).flat_map(|from| {
            let cut = &cut;
            self.neighbours(from)
                .filter(move |&(to, _)| from < to && !cut.contains(&(from, to)))
                .map(move |(to, latency)| (from, to, latency))
        });
        let endpoints_only = (0..self.node_count() as u32).filter(|n| self.is_endpoint_only(*n));
        Graph::new(self.ids.clone(), edges).with_endpoints_only(endpoints_only)
    }

    /// The latency of the edge between `a` and `b`, if there is one.
    pub fn latency(&self, a: u32, b: u32) -> Option<u32> {
        self.neighbours(a)
            .find(|&(target, _)| target == b)
            .map(|(_, latency)| latency)
    }
}
