//! Each node's copy of the network: the latest valid advert of every origin,
//! and the graph built from them.

use std::collections::{BTreeMap, HashMap};

use fogwire_identity::NodeId;

use crate::advert::{Advert, AdvertError};
use crate::graph::Graph;
use crate::rates::KeyedRate;

/// Limits of a topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Adverts an origin may have accepted in a burst…
    pub rate_burst: u32,
    /// …then one per this interval.
    pub rate_interval_ms: u64,
    /// Most origins kept.
    pub origins_max: usize,
    /// Most bytes of adverts kept.
    pub bytes_max: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            rate_burst: 4,
            rate_interval_ms: 15_000,
            origins_max: 200_000,
            bytes_max: 64 * 1024 * 1024,
        }
    }
}

/// An advert taken in: flood `bytes` on to every other link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub origin: NodeId,
    pub seq: u64,
}

/// Why an advert was not taken in. Only [`Refused::Invalid`] and
/// [`Refused::RateLimited`] say anything bad about the sender; duplicates
/// are what flooding produces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    #[error(transparent)]
    Invalid(#[from] AdvertError),
    #[error("already have this advert")]
    Duplicate,
    #[error("older than the advert held (seq {got} ≤ {have}): replayed or stale")]
    Old { have: u64, got: u64 },
    #[error("origin sends adverts faster than allowed")]
    RateLimited,
    #[error("topology is full")]
    Full,
    #[error("an advert of this node with seq {seq}, newer than its own: re-advertise above it")]
    OwnNewer { seq: u64 },
    #[error("the neighbour sends adverts faster than allowed")]
    NeighbourRateLimited,
    #[error("the neighbour introduced as many origins as one neighbour may")]
    NeighbourShareFull,
}

impl Refused {
    /// A short stable name, for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::Invalid(_) => "invalid",
            Refused::Duplicate => "duplicate",
            Refused::Old { .. } => "old",
            Refused::RateLimited => "rate_limited",
            Refused::Full => "full",
            Refused::OwnNewer { .. } => "own_newer",
            Refused::NeighbourRateLimited => "neighbour_rate_limited",
            Refused::NeighbourShareFull => "neighbour_share_full",
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    advert: Advert,
    bytes: Vec<u8>,
}

/// The adverts a node holds, and the graph they make.
#[derive(Debug)]
pub struct Topology {
    local: NodeId,
    config: Config,
    /// Ordered, so everything built from them (graphs, syncs) is the same
    /// on every run: the simulation replays from its seed.
    /// By the origin's key bytes, so a copy already held is recognised
    /// before any cryptography is spent on it.
    entries: BTreeMap<[u8; 32], Entry>,
    /// How fast each origin's adverts are taken in.
    rates: KeyedRate<NodeId>,
    bytes: usize,
    graph: Option<Graph>,
}

impl Topology {
    pub fn new(local: NodeId, config: Config) -> Self {
        Self {
            rates: KeyedRate::new(
                config.rate_burst,
                std::time::Duration::from_millis(config.rate_interval_ms),
            ),
            local,
            config,
            entries: BTreeMap::new(),
            bytes: 0,
            graph: None,
        }
    }

    pub fn local(&self) -> NodeId {
        self.local
    }

    /// Takes in an advert received from a peer (or loaded from disk).
    pub fn handle_advert(&mut self, bytes: &[u8], now_ms: u64) -> Result<Accepted, Refused> {
        // Floods bring each advert from every neighbour: a copy of one held
        // (or an older one) is refused before its signature is checked. A
        // forgery that claims a held sequence number is refused just the
        // same, and changes nothing.
        if let Some((origin, seq)) = Advert::peek(bytes)
            && origin != *self.local.as_bytes()
            && let Some(held) = self.entries.get(&origin)
        {
            if held.advert.seq == seq {
                return Err(Refused::Duplicate);
            }
            if held.advert.seq > seq {
                return Err(Refused::Old {
                    have: held.advert.seq,
                    got: seq,
                });
            }
        }
        let advert = Advert::decode(bytes)?;
        advert.check_time(now_ms)?;
        let origin = advert.origin;
        if origin == self.local {
            let own_seq = self
                .entries
                .get(origin.as_bytes())
                .map_or(0, |e| e.advert.seq);
            return Err(if advert.seq > own_seq {
                Refused::OwnNewer { seq: advert.seq }
            } else {
                Refused::Duplicate
            });
        }
        match self.entries.get(origin.as_bytes()) {
            Some(held) if held.advert.seq == advert.seq => return Err(Refused::Duplicate),
            Some(held) if held.advert.seq > advert.seq => {
                return Err(Refused::Old {
                    have: held.advert.seq,
                    got: advert.seq,
                });
            }
            Some(_) => {}
            None => {
                if self.entries.len() >= self.config.origins_max
                    || self.bytes + bytes.len() > self.config.bytes_max
                {
                    return Err(Refused::Full);
                }
            }
        }
        self.take_token(origin, now_ms)?;
        self.insert(advert, bytes.to_vec());
        Ok(Accepted {
            origin,
            seq: self
                .entries
                .get(origin.as_bytes())
                .map_or(0, |e| e.advert.seq),
        })
    }

    fn take_token(&mut self, origin: NodeId, now_ms: u64) -> Result<(), Refused> {
        if self.rates.check(&origin, now_ms) {
            Ok(())
        } else {
            Err(Refused::RateLimited)
        }
    }

    /// Sets this node's own advert (already signed by it).
    pub fn set_local(&mut self, advert: Advert, bytes: Vec<u8>) {
        if advert.origin == self.local {
            self.insert(advert, bytes);
        }
    }

    fn insert(&mut self, advert: Advert, bytes: Vec<u8>) {
        self.bytes += bytes.len();
        if let Some(old) = self
            .entries
            .insert(*advert.origin.as_bytes(), Entry { advert, bytes })
        {
            self.bytes -= old.bytes.len();
        }
        self.graph = None;
    }

    /// Drops expired adverts; returns the origins dropped.
    pub fn expire(&mut self, now_ms: u64) -> Vec<NodeId> {
        let expired: Vec<NodeId> = self
            .entries
            .values()
            .filter(|entry| entry.advert.expires_at_ms() <= now_ms)
            .map(|entry| entry.advert.origin)
            .collect();
        for origin in &expired {
            if let Some(entry) = self.entries.remove(origin.as_bytes()) {
                self.bytes -= entry.bytes.len();
            }
        }
        if !expired.is_empty() {
            self.graph = None;
        }
        self.rates.advance_to(now_ms);
        self.rates.forget_idle();
        expired
    }

    /// The sequence number held for an origin (by its key bytes), if any.
    pub fn held_seq(&self, origin: &[u8; 32]) -> Option<u64> {
        self.entries.get(origin).map(|entry| entry.advert.seq)
    }

    pub fn get(&self, origin: &NodeId) -> Option<&Advert> {
        self.entries
            .get(origin.as_bytes())
            .map(|entry| &entry.advert)
    }

    /// Every advert held with its wire form (to persist, or to send to a
    /// new neighbour).
    pub fn adverts(&self) -> impl Iterator<Item = (&Advert, &[u8])> {
        self.entries
            .values()
            .map(|entry| (&entry.advert, entry.bytes.as_slice()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The graph of nodes whose adverts are held. An edge exists where both
    /// ends advertise it; its latency is the mean of their two estimates.
    pub fn graph(&mut self) -> &Graph {
        if self.graph.is_none() {
            self.graph = Some(self.build_graph());
        }
        // Just set when it was missing.
        self.graph.get_or_insert_with(Graph::default)
    }

    fn build_graph(&self) -> Graph {
        let mut ids: Vec<NodeId> = self.entries.values().map(|e| e.advert.origin).collect();
        ids.sort();
        let position: HashMap<NodeId, u32> = ids
            .iter()
            .enumerate()
            .map(|(index, id)| (*id, index as u32))
            .collect();
        let mut edges = Vec::new();
        for entry in self.entries.values() {
            let from = entry.advert.origin;
            for link in &entry.advert.links {
                // Each edge once, from its smaller end, if the other end
                // advertises it back.
                if from >= link.neighbour {
                    continue;
                }
                let Some(back) = self
                    .entries
                    .get(link.neighbour.as_bytes())
                    .and_then(|other| other.advert.links.iter().find(|l| l.neighbour == from))
                else {
                    continue;
                };
                let latency =
                    ((u64::from(link.latency_us) + u64::from(back.latency_us)) / 2) as u32;
                edges.push((position[&from], position[&link.neighbour], latency));
            }
        }
        // Nodes that carry no routes for others may end a path, never
        // lie on one.
        let endpoints_only: Vec<u32> = self
            .entries
            .values()
            .filter(|entry| {
                entry
                    .advert
                    .services
                    .iter()
                    .any(|service| service == crate::advert::NO_TRANSIT)
            })
            .map(|entry| position[&entry.advert.origin])
            .collect();
        Graph::new(ids, edges).with_endpoints_only(endpoints_only)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advert::AdvertLink;
    use fogwire_identity::Keypair;

    const NOW: u64 = 10_000_000;

    fn keypair(seed: u8) -> Keypair {
        Keypair::from_seed(&[seed; 32])
    }

    fn advert(seed: u8, seq: u64, neighbours: &[u8]) -> Vec<u8> {
        let advert = Advert {
            origin: keypair(seed).node_id(),
            seq,
            issued_at_ms: NOW,
            lifetime_secs: 600,
            link_key: [seed; 32],
            addresses: vec![],
            links: neighbours
                .iter()
                .map(|&n| AdvertLink {
                    neighbour: keypair(n).node_id(),
                    latency_us: 100 * u32::from(n),
                    capacity_kbps: 1000,
                })
                .collect(),
            services: vec![],
            offers: vec![],
        };
        advert.sign(&keypair(seed)).1
    }

    fn topology() -> Topology {
        Topology::new(keypair(0).node_id(), Config::default())
    }

    #[test]
    fn a_node_advertising_no_transit_only_ends_paths_in_the_graph() {
        let mut topology = topology();
        topology.handle_advert(&advert(1, 5, &[2]), NOW).unwrap();
        let mut quiet = Advert::decode(&advert(2, 5, &[1])).unwrap();
        quiet.services = vec![crate::advert::NO_TRANSIT.to_owned()];
        topology
            .handle_advert(&quiet.sign(&keypair(2)).1, NOW)
            .unwrap();
        let graph = topology.graph();
        let index = |seed: u8| graph.index_of(&keypair(seed).node_id()).unwrap();
        assert!(graph.is_endpoint_only(index(2)));
        assert!(!graph.is_endpoint_only(index(1)));
    }

    #[test]
    fn newer_adverts_replace_older_and_replays_are_refused() {
        let mut topology = topology();
        assert!(topology.handle_advert(&advert(1, 5, &[2]), NOW).is_ok());
        assert_eq!(
            topology.handle_advert(&advert(1, 5, &[2]), NOW),
            Err(Refused::Duplicate)
        );
        assert_eq!(
            topology.handle_advert(&advert(1, 4, &[]), NOW),
            Err(Refused::Old { have: 5, got: 4 })
        );
        assert!(topology.handle_advert(&advert(1, 6, &[3]), NOW).is_ok());
        assert_eq!(topology.get(&keypair(1).node_id()).unwrap().seq, 6);
    }

    #[test]
    fn stale_future_and_forged_adverts_are_refused() {
        let mut topology = topology();
        let bytes = advert(1, 1, &[]);
        assert!(matches!(
            topology.handle_advert(&bytes, NOW + 600_001),
            Err(Refused::Invalid(AdvertError::Expired { .. }))
        ));
        assert!(matches!(
            topology.handle_advert(&bytes, NOW - 10 * 60 * 1000),
            Err(Refused::Invalid(AdvertError::FromFuture { .. }))
        ));
        let mut forged = bytes;
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert!(matches!(
            topology.handle_advert(&forged, NOW),
            Err(Refused::Invalid(_))
        ));
        assert!(topology.is_empty());
    }

    #[test]
    fn an_origin_flooding_adverts_is_rate_limited() {
        let mut topology = topology();
        let burst = Config::default().rate_burst as u64;
        for seq in 1..=burst {
            assert!(topology.handle_advert(&advert(1, seq, &[]), NOW).is_ok());
        }
        assert_eq!(
            topology.handle_advert(&advert(1, burst + 1, &[]), NOW),
            Err(Refused::RateLimited)
        );
        let later = NOW + Config::default().rate_interval_ms;
        assert!(
            topology
                .handle_advert(&advert(1, burst + 1, &[]), later)
                .is_ok()
        );
    }

    #[test]
    fn adverts_age_out() {
        let mut topology = topology();
        topology.handle_advert(&advert(1, 1, &[]), NOW).unwrap();
        assert!(topology.expire(NOW + 599_999).is_empty());
        assert_eq!(topology.expire(NOW + 600_000), vec![keypair(1).node_id()]);
        assert!(topology.is_empty());
    }

    #[test]
    fn edges_need_both_ends_and_average_their_latencies() {
        let mut topology = topology();
        topology.handle_advert(&advert(1, 1, &[2, 3]), NOW).unwrap();
        topology.handle_advert(&advert(2, 1, &[1]), NOW).unwrap();
        // 3 does not advertise 1 back: no edge.
        topology.handle_advert(&advert(3, 1, &[]), NOW).unwrap();
        let graph = topology.graph();
        assert_eq!(graph.node_count(), 3);
        assert_eq!(graph.edge_count(), 1);
        let (one, two) = (
            graph.index_of(&keypair(1).node_id()).unwrap(),
            graph.index_of(&keypair(2).node_id()).unwrap(),
        );
        // 1 measured 200 µs to 2, and 2 measured 100 µs to 1.
        assert_eq!(graph.latency(one, two), Some(150));
    }

    #[test]
    fn an_own_advert_flooded_back_with_a_higher_seq_is_reported() {
        let mut topology = topology();
        assert_eq!(
            topology.handle_advert(&advert(0, 99, &[]), NOW),
            Err(Refused::OwnNewer { seq: 99 })
        );
    }
}
