//! What the messenger needs of a board's cluster to hold its boards'
//! mail and to peer with other clusters (`fogwire_msg::ClusterView`):
//! the cluster's id and key, its live boards with their addresses, and
//! links to the boards of the clusters it peers with.

use std::net::SocketAddr;
use std::sync::Arc;

use fogwire_identity::{Keypair, NodeId};
use fogwire_msg::ClusterView;
use fogwire_msg_proto::peering::{ADDRS_MAX, Board};

use crate::{Cluster, lock};

/// Links dialed at most at once for peered clusters' boards.
const PEER_DIALS_AT_ONCE: usize = 8;

impl ClusterView for Cluster {
    fn cluster(&self) -> Option<(NodeId, Option<Arc<Keypair>>)> {
        let cluster = self.cluster()?;
        let key = self
            .owner_key()
            .filter(|key| key.node_id() == cluster.key());
        Some((cluster.key(), key))
    }

    fn boards(&self) -> Vec<Board> {
        self.live()
            .borrow()
            .iter()
            .map(|member| member.id)
            .map(|node| Board {
                node,
                addrs: self.addrs_of(&node),
            })
            .collect()
    }

    fn link(&self, boards: &[Board]) {
        let me = self.shared.options.key.node_id();
        let wanted: Vec<(NodeId, Vec<SocketAddr>)> = boards
            .iter()
            .filter(|board| board.node != me && !lock(&self.shared.links).contains_key(&board.node))
            .map(|board| {
                let addrs = board
                    .addrs
                    .iter()
                    .filter_map(|addr| addr.parse().ok())
                    .collect();
                (board.node, addrs)
            })
            .take(PEER_DIALS_AT_ONCE)
            .collect();
        let Some(dialer) = self.shared.dialer.upgrade() else {
            return;
        };
        for (node, addrs) in wanted {
            let dialer = dialer.clone();
            self.shared.tasks.spawn(async move {
                for addr in addrs {
                    match dialer.dial(node, addr).await {
                        Ok(()) => return,
                        Err(error) => {
                            tracing::debug!(peer = %node.short(), %addr, "peered cluster: dial failed: {error}")
                        }
                    }
                }
            });
        }
    }
}

impl Cluster {
    /// The addresses a member takes links on, as its status shows them.
    fn addrs_of(&self, node: &NodeId) -> Vec<String> {
        let text = node.to_string();
        lock(&self.shared.status)
            .members
            .iter()
            .find(|member| member.node_id == text)
            .map(|member| member.addrs.iter().take(ADDRS_MAX).cloned().collect())
            .unwrap_or_default()
    }
}
