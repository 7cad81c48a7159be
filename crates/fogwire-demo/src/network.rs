use std::path::PathBuf;
use std::sync::Arc;

use fogwire_identity::{KeyFileError, Keypair, NodeId};
use fogwire_link::LinkHandle;
use fogwire_link::proto::{ChannelConfig, ChannelId, CloseCode, CloseSide};
use fogwire_node::{Node, NodeError, NodeOptions};

/// One node of the demo network.
#[derive(Debug)]
pub struct DemoNode {
    pub name: String,
    pub node: Node,
    pub data_dir: PathBuf,
}

impl DemoNode {
    pub fn id(&self) -> NodeId {
        self.node.node_id()
    }
}

/// Real nodes on loopback, each with its own data directory and key file.
#[derive(Debug)]
pub struct Network {
    // Held so the directories live as long as the nodes; removed on drop.
    _root: tempfile::TempDir,
    nodes: Vec<DemoNode>,
    topology: Vec<(usize, usize)>,
    /// Nodes killed during the demo, and the links they had.
    killed: Vec<usize>,
    killed_links: Vec<LinkHandle>,
}

/// Why the demo network could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetworkError {
    #[error("cannot make the demo's temporary directory: {0}")]
    TempDir(#[source] std::io::Error),
    #[error("node {name}: {source}")]
    Key {
        name: String,
        #[source]
        source: KeyFileError,
    },
    #[error("node {name}: {source}")]
    Node {
        name: String,
        #[source]
        source: NodeError,
    },
}

/// A ring, plus chords across it: every node has two or three links and
/// some pairs are two or three hops apart, as routes will need.
pub fn topology(nodes: usize) -> Vec<(usize, usize)> {
    let mut edges: Vec<(usize, usize)> = (0..nodes)
        .map(|index| (index, (index + 1) % nodes))
        .filter(|(a, b)| a != b)
        .collect();
    if nodes == 2 {
        edges.truncate(1);
    }
    if nodes >= 6 {
        let half = nodes / 2;
        let quarter = nodes / 4;
        edges.push((0, half));
        edges.push((quarter, quarter + half));
    }
    edges
}

impl Network {
    /// Starts `count` nodes, each with a fresh identity created in its own
    /// data directory, listening on a free loopback port.
    pub async fn start(count: usize) -> Result<Self, NetworkError> {
        let root = tempfile::Builder::new()
            .prefix("fogwire-demo-")
            .tempdir()
            .map_err(NetworkError::TempDir)?;
        let mut nodes = Vec::with_capacity(count);
        for index in 0..count {
            let name = format!("n{index}");
            let data_dir = root.path().join(&name);
            std::fs::create_dir_all(&data_dir).map_err(NetworkError::TempDir)?;
            let (keypair, _) =
                Keypair::load_or_create(&data_dir.join("node.key")).map_err(|source| {
                    NetworkError::Key {
                        name: name.clone(),
                        source,
                    }
                })?;
            let mut options = NodeOptions::local(Arc::new(keypair));
            options.routing_store = Some(data_dir.join("routes.redb"));
            options.store_dir = Some(data_dir.join("store"));
            options.link = options
                .link
                .with_channel(ChannelConfig::new(ChannelId::TRAFFIC));
            // No roles: the cluster's manifest gives them (the ledger, the
            // hub, the workers, the exit). Every node finds the ledger by
            // its advert.
            options.compute_dir = Some(data_dir.join("compute"));
            options.ledger_path = Some(data_dir.join("ledger.redb"));
            crate::exit::client_proxy(count, &mut options);
            // The demo's boards are on loopback: they find each other by
            // their links, and announce nothing on this machine's network.
            options.cluster.mdns = false;
            let node = Node::start(options)
                .await
                .map_err(|source| NetworkError::Node {
                    name: name.clone(),
                    source,
                })?;
            nodes.push(DemoNode {
                name,
                node,
                data_dir,
            });
        }
        Ok(Self {
            _root: root,
            topology: topology(count),
            nodes,
            killed: Vec::new(),
            killed_links: Vec::new(),
        })
    }

    /// The demo name (`n3`) of a node, or its short id if it is not one of
    /// the demo's.
    pub fn name_of(&self, id: &NodeId) -> String {
        self.index_of(id)
            .map_or_else(|| id.short(), |index| self.nodes[index].name.clone())
    }

    pub fn index_of(&self, id: &NodeId) -> Option<usize> {
        self.nodes.iter().position(|node| node.id() == *id)
    }

    /// Stops node `index` as a machine being switched off would: its links
    /// close and its neighbours find out.
    pub async fn kill(&mut self, index: usize) {
        // Only the ring's links count; links made on demand (a hub's to
        // its workers) are not the demo's topology.
        let neighbours: Vec<NodeId> = self
            .topology
            .iter()
            .filter_map(|&(a, b)| match (a == index, b == index) {
                (true, _) => Some(self.nodes[b].id()),
                (_, true) => Some(self.nodes[a].id()),
                _ => None,
            })
            .collect();
        self.killed_links.extend(
            self.nodes[index]
                .node
                .links()
                .into_iter()
                .filter(|link| neighbours.contains(&link.peer())),
        );
        self.nodes[index].node.shutdown().await;
        self.killed.push(index);
    }

    pub fn is_killed(&self, index: usize) -> bool {
        self.killed.contains(&index)
    }

    pub fn nodes(&self) -> &[DemoNode] {
        &self.nodes
    }

    pub fn topology(&self) -> &[(usize, usize)] {
        &self.topology
    }

    /// Dials every link of the topology, as an operator's `fogwire connect`
    /// would: each is kept up and redialed if it drops.
    pub async fn link_all(&self) -> Result<(), NetworkError> {
        for &(a, b) in &self.topology {
            let target = self.nodes[b].node.peer_addr();
            self.nodes[a]
                .node
                .connect(target)
                .await
                .map_err(|source| NetworkError::Node {
                    name: self.nodes[a].name.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// The link from node `a` to node `b`, as `a` sees it.
    pub fn link(&self, a: usize, b: usize) -> Option<LinkHandle> {
        self.nodes[a].node.link(&self.nodes[b].id())
    }

    /// Shuts every node down and returns how many topology links closed
    /// with a CLOSE frame saying why (rather than just vanishing).
    pub async fn shutdown(self) -> usize {
        let mut links: Vec<LinkHandle> = self
            .topology
            .iter()
            .filter_map(|&(a, b)| self.link(a, b))
            .collect();
        links.extend(self.killed_links.iter().cloned());
        let shutdowns = self.nodes.iter().map(|n| n.node.shutdown());
        for shutdown in shutdowns {
            shutdown.await;
        }
        links
            .iter()
            .filter(|link| {
                link.close_reason().is_some_and(|reason| {
                    reason.code == CloseCode::SHUTDOWN && reason.side != CloseSide::Transport
                })
            })
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eight_nodes_make_a_ring_with_two_chords() {
        let edges = topology(8);
        assert_eq!(edges.len(), 10);
        assert!(edges.contains(&(0, 4)) && edges.contains(&(2, 6)));
        let mut degree = [0; 8];
        for (a, b) in &edges {
            degree[*a] += 1;
            degree[*b] += 1;
        }
        assert!(degree.iter().all(|d| (2..=3).contains(d)));
    }

    #[test]
    fn small_networks_are_connected_without_self_links() {
        assert_eq!(topology(2), vec![(0, 1)]);
        assert_eq!(topology(3).len(), 3);
        for n in 2..20 {
            assert!(topology(n).iter().all(|(a, b)| a != b));
        }
    }
}
