//! The exits the network advertises, and choosing one.

use fogwire_identity::NodeId;
use fogwire_route::{Constraints, RouteError, Routing};

use crate::service::{SERVICE, VPN_SERVICE};

/// Exits looked at, at most (each costs a path search).
const EXITS_LISTED_MAX: usize = 256;

/// An exit as its advert and this node's graph describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    pub node: NodeId,
    /// Its price per GiB, in the ledger's smallest unit.
    pub price_per_gib: u64,
    /// Its policy summary.
    pub policy: String,
    /// The best path's advertised one-way latency, if there is a path.
    pub latency_us: Option<u64>,
    /// Links on that path.
    pub hops: Option<usize>,
    /// Whether it forwards VPN packets too (`fogwire vpn up --exit`).
    pub vpn: bool,
}

/// Every exit this node knows of other than itself, cheapest first, then
/// nearest.
pub async fn exits(routing: &Routing) -> Result<Vec<ExitInfo>, RouteError> {
    let mut found = Vec::new();
    for node in routing.nodes().await? {
        if node.this_node {
            continue;
        }
        let Some(offer) = node.advert.offer(SERVICE) else {
            continue;
        };
        found.push(ExitInfo {
            node: node.advert.origin,
            price_per_gib: offer.price_per_gib,
            policy: offer.terms.clone(),
            latency_us: None,
            hops: None,
            vpn: node.advert.offer(VPN_SERVICE).is_some(),
        });
        if found.len() == EXITS_LISTED_MAX {
            break;
        }
    }
    for exit in &mut found {
        if let Ok(paths) = routing.find(exit.node, Constraints::default(), 1).await
            && let Some(path) = paths.first()
        {
            exit.latency_us = Some(path.latency_us);
            exit.hops = Some(path.hops());
        }
    }
    sort(&mut found);
    Ok(found)
}

/// Cheapest first; among equal prices the nearest; unreachable last.
fn sort(exits: &mut [ExitInfo]) {
    exits.sort_by_key(|exit| {
        (
            exit.latency_us.is_none(),
            exit.price_per_gib,
            exit.latency_us.unwrap_or(u64::MAX),
            *exit.node.as_bytes(),
        )
    });
}

/// The exit to use: `wanted` if it is one this node can reach, else the
/// cheapest, nearest reachable one.
pub fn pick(exits: &[ExitInfo], wanted: Option<NodeId>) -> Option<&ExitInfo> {
    let reachable = |exit: &&ExitInfo| exit.latency_us.is_some();
    match wanted {
        Some(node) => exits
            .iter()
            .filter(reachable)
            .find(|exit| exit.node == node),
        None => exits.iter().find(reachable),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use fogwire_identity::Keypair;

    fn exit(seed: u8, price: u64, latency_us: Option<u64>) -> ExitInfo {
        ExitInfo {
            node: Keypair::from_seed(&[seed; 32]).node_id(),
            price_per_gib: price,
            policy: "public internet".into(),
            latency_us,
            hops: latency_us.map(|_| 2),
            vpn: false,
        }
    }

    #[test]
    fn the_cheapest_reachable_exit_wins_then_the_nearest() {
        let mut exits = vec![
            exit(1, 50, Some(100)),
            exit(2, 10, None),
            exit(3, 10, Some(900)),
            exit(4, 10, Some(300)),
        ];
        sort(&mut exits);
        let order: Vec<u64> = exits.iter().map(|e| e.latency_us.unwrap_or(0)).collect();
        assert_eq!(order, [300, 900, 100, 0]);
        assert_eq!(pick(&exits, None).unwrap().latency_us, Some(300));
        // Asked for by id: that one, if reachable.
        let wanted = exits[2].node;
        assert_eq!(pick(&exits, Some(wanted)).unwrap().node, wanted);
        let unreachable = exits[3].node;
        assert!(pick(&exits, Some(unreachable)).is_none());
    }
}
