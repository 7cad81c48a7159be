//! Real nodes on loopback: each on a free port with a fresh key, linked
//! over real sockets with real handshakes.

use std::sync::Arc;

use fogwire_identity::Keypair;
use fogwire_node::{Node, NodeOptions};
use fogwire_route::Constraints;

use crate::wait;

/// A fresh key, shared as nodes take it.
pub fn keypair() -> Arc<Keypair> {
    Arc::new(Keypair::generate().unwrap())
}

/// Defaults on a free loopback port, with a fresh key.
pub fn options() -> NodeOptions {
    NodeOptions::local(keypair())
}

/// Logs to the test's output when `TEST_LOG` is set (`TEST_LOG=1 cargo
/// test … -- --nocapture`), at debug level.
pub fn log() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing_subscriber::filter::LevelFilter::DEBUG)
            .with_test_writer()
            .try_init();
    }
}

/// A node with the defaults.
pub async fn node() -> Node {
    start(options()).await
}

/// A node with `options`.
pub async fn start(options: NodeOptions) -> Node {
    log();
    Node::start(options).await.unwrap()
}

/// Links `a` to `b` and waits until each has the other's link up.
pub async fn link(a: &Node, b: &Node) {
    a.connect(b.peer_addr()).await.unwrap();
    let (a_id, b_id) = (a.node_id(), b.node_id());
    wait::until("the link up at both ends", || {
        a.link(&b_id).is_some() && b.link(&a_id).is_some()
    })
    .await;
}

/// `count` nodes with the defaults, each linked to the one before it: a
/// line, so the ends are `count - 1` hops apart.
pub async fn line(count: usize) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::with_capacity(count);
    for _ in 0..count {
        let node = node().await;
        if let Some(previous) = nodes.last() {
            link(&node, previous).await;
        }
        nodes.push(node);
    }
    nodes
}

/// Waits until `node` has a path to `to` from the adverts it has heard;
/// returns the path's hop count.
pub async fn until_routable(node: &Node, to: &Node) -> usize {
    let target = to.node_id();
    wait::until_async("a path to the node from the adverts", || async {
        let paths = node
            .routing()
            .find(target, Constraints::default(), 1)
            .await
            .ok()?;
        paths.first().map(|path| path.hops())
    })
    .await
}

/// Waits until the locator at `node` names at least `count` nodes offering
/// `service`; returns them.
pub async fn until_located(
    node: &Node,
    service: &str,
    count: usize,
) -> Vec<fogwire_identity::NodeId> {
    wait::until_async(&format!("{count} nodes offering {service}"), || async {
        let (found, _) = node.rpc().locate(service).await;
        (found.len() >= count).then_some(found)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_line_of_three_is_linked_end_to_end_by_its_middle() {
        let nodes = line(3).await;
        let ids: Vec<_> = nodes.iter().map(Node::node_id).collect();
        assert!(nodes[1].link(&ids[0]).is_some());
        assert!(nodes[1].link(&ids[2]).is_some());
        assert!(nodes[0].link(&ids[2]).is_none());
        assert_eq!(until_routable(&nodes[0], &nodes[2]).await, 2);
        for node in &nodes {
            node.shutdown().await;
        }
    }
}
