//! What a source avoids when it moves a broken route to a new path.
//!
//! The router reports where a route broke as precisely as it knows
//! ([`Broken`]); this turns that into nodes and links for the next path
//! query to stay away from. Avoidance accumulates over the attempts of one
//! repair, so a route never goes back to a path that just failed.

use fogwire_identity::NodeId;

use crate::path::Query;
use crate::router::message::FailReason;
use crate::router::{Broken, SetupError};

/// Most paths tried for one repair before the route is abandoned.
pub const ATTEMPTS_MAX: u32 = 4;

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
