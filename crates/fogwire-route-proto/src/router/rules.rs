//! The rule table: one rule per route through, from or to this node, by
//! the label this node gave it; which setups it has seen (so that a
//! retransmitted SETUP finds its rule, and a replayed layer is refused);
//! and the data plane's one step — relabel and pass on, or hand to the
//! route's end.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use fogwire_identity::NodeId;

use super::message::{DATA_HEADER_LEN, DATA_KIND_SESSION, DataHeader};
use super::session::SessionCipher;
use super::{Counters, RouteId, RuleInfo, SendError, SessionId, Transmit};

/// What a rule is to this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Relay,
    Source(RouteId),
    Destination(SessionId),
}

#[derive(Debug)]
pub(super) struct Rule {
    pub(super) role: Role,
    /// Towards the source: neighbour and its label for this route.
    pub(super) prev: Option<(NodeId, u32)>,
    /// Towards the destination: neighbour, and its label once confirmed.
    pub(super) next: Option<(NodeId, Option<u32>)>,
    pub(super) expires_at: Instant,
    pub(super) reply_key: [u8; 32],
    pub(super) route_tag: [u8; 16],
    pub(super) counters: Counters,
    /// What this hop last sent for the setup (the forwarded SETUP, or the
    /// CONFIRM), to resend if the source retransmits.
    pub(super) last_setup_message: Option<(NodeId, Bytes)>,
    /// Highest receipt seq accepted (relays).
    pub(super) receipt_seq: u64,
}

impl Rule {
    pub(super) fn next_label(&self) -> Option<(NodeId, u32)> {
        self.next.and_then(|(node, label)| label.map(|l| (node, l)))
    }

    /// Whether `node` is one of this rule's two neighbours.
    pub(super) fn touches(&self, node: NodeId) -> bool {
        self.prev.is_some_and(|(prev, _)| prev == node)
            || self.next.is_some_and(|(next, _)| next == node)
    }
}

/// Where a data packet goes after its rule.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Forward {
    /// Relayed: already queued to the next neighbour.
    Relayed,
    /// For this node's end of a route.
    Source(RouteId),
    Destination(SessionId),
    /// Dropped: unknown label, wrong neighbour, or the wrong direction.
    Dropped,
}

/// The rules this node forwards by.
#[derive(Debug, Default)]
pub(super) struct RuleTable {
    rules: BTreeMap<u32, Rule>,
    /// (previous neighbour, its label) → our label, so a retransmitted
    /// SETUP finds the rule it already made.
    by_previous: HashMap<(NodeId, u32), u32>,
    /// Ephemeral keys of layers seen, with when to forget them and the
    /// neighbour that brought them.
    replay: HashMap<[u8; 32], (Instant, NodeId)>,
    /// Per neighbour: the rules it asked for (it is their previous hop),
    /// and the layers it brought that are still remembered — its share of
    /// the table and of the replay memory.
    shares: HashMap<NodeId, Share>,
}

/// What one neighbour holds of this node's routing state.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Share {
    pub(super) rules: usize,
    pub(super) remembered: usize,
}

impl RuleTable {
    pub(super) fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether anything waits to expire (rules, or remembered setups).
    pub(super) fn has_expiries(&self) -> bool {
        !self.rules.is_empty() || !self.replay.is_empty()
    }

    pub(super) fn get(&self, label: u32) -> Option<&Rule> {
        self.rules.get(&label)
    }

    pub(super) fn get_mut(&mut self, label: u32) -> Option<&mut Rule> {
        self.rules.get_mut(&label)
    }

    /// A label no rule has, from `random` bytes.
    pub(super) fn allocate(&self, mut random: impl FnMut() -> [u8; 4]) -> u32 {
        loop {
            let label = u32::from_be_bytes(random());
            if label != 0 && !self.rules.contains_key(&label) {
                return label;
            }
        }
    }

    /// Adds a rule (and remembers its previous hop's label).
    pub(super) fn insert(&mut self, label: u32, rule: Rule) {
        if let Some(prev) = rule.prev {
            self.by_previous.insert(prev, label);
            self.shares.entry(prev.0).or_default().rules += 1;
        }
        if let Some(old) = self.rules.insert(label, rule) {
            self.release(&old);
        }
    }

    /// Gives back the share a removed rule held.
    fn release(&mut self, rule: &Rule) {
        if let Some((prev, _)) = rule.prev {
            self.shrink(prev, |share| share.rules = share.rules.saturating_sub(1));
        }
    }

    fn shrink(&mut self, neighbour: NodeId, change: impl FnOnce(&mut Share)) {
        if let Some(share) = self.shares.get_mut(&neighbour) {
            change(share);
            if *share == Share::default() {
                self.shares.remove(&neighbour);
            }
        }
    }

    /// What `neighbour` holds now.
    pub(super) fn share(&self, neighbour: NodeId) -> Share {
        self.shares.get(&neighbour).copied().unwrap_or_default()
    }

    /// Layers remembered now (all neighbours).
    pub(super) fn remembered(&self) -> usize {
        self.replay.len()
    }

    /// Removes a rule (and what pointed at it).
    pub(super) fn remove(&mut self, label: u32) -> Option<Rule> {
        let rule = self.rules.remove(&label)?;
        if let Some(prev) = rule.prev {
            self.by_previous.remove(&prev);
        }
        self.release(&rule);
        Some(rule)
    }

    /// The rule a SETUP from `from` with its label `prev_label` made.
    pub(super) fn for_previous(&self, from: NodeId, prev_label: u32) -> Option<&Rule> {
        self.by_previous
            .get(&(from, prev_label))
            .and_then(|label| self.rules.get(label))
    }

    /// Whether a setup layer with this ephemeral key was seen.
    pub(super) fn seen(&self, ephemeral: &[u8; 32]) -> bool {
        self.replay.contains_key(ephemeral)
    }

    /// Remembers a setup layer's ephemeral key, brought by `from`, until
    /// `forget_at`.
    pub(super) fn remember(&mut self, ephemeral: [u8; 32], from: NodeId, forget_at: Instant) {
        if self.replay.insert(ephemeral, (forget_at, from)).is_none() {
            self.shares.entry(from).or_default().remembered += 1;
        }
    }

    /// Forgets the setups remembered long enough, and returns the rules
    /// that expired by `now`.
    pub(super) fn expired(&mut self, now: Instant) -> Vec<u32> {
        let mut forgotten: HashMap<NodeId, usize> = HashMap::new();
        self.replay.retain(|_, (forget_at, from)| {
            let keep = *forget_at > now;
            if !keep {
                *forgotten.entry(*from).or_default() += 1;
            }
            keep
        });
        for (neighbour, count) in forgotten {
            self.shrink(neighbour, |share| {
                share.remembered = share.remembered.saturating_sub(count)
            });
        }
        self.rules
            .iter()
            .filter(|(_, rule)| rule.expires_at <= now)
            .map(|(label, _)| *label)
            .collect()
    }

    /// The rules that run over the link to `neighbour`.
    pub(super) fn over(&self, neighbour: NodeId) -> Vec<u32> {
        self.rules
            .iter()
            .filter(|(_, rule)| rule.touches(neighbour))
            .map(|(label, _)| *label)
            .collect()
    }

    /// Every rule, as reports show it.
    pub(super) fn info(&self) -> impl Iterator<Item = RuleInfo> + '_ {
        self.rules.iter().map(|(label, rule)| RuleInfo {
            label: *label,
            prev: rule.prev.map(|(node, _)| node),
            next: rule.next.map(|(node, _)| node),
            route_tag: rule.route_tag,
            counters: rule.counters,
            relay: rule.role == Role::Relay,
        })
    }

    /// A data packet from `from`: counted, and relabelled and passed on if
    /// this node relays it; else whose end it is for.
    pub(super) fn forward(
        &mut self,
        from: NodeId,
        header: DataHeader,
        packet: &Bytes,
        transmits: &mut VecDeque<Transmit>,
    ) -> Forward {
        let Some(rule) = self.rules.get_mut(&header.label) else {
            return Forward::Dropped;
        };
        let from_prev = rule.prev.is_some_and(|(node, _)| node == from);
        let from_next = rule.next.is_some_and(|(node, _)| node == from);
        if !(from_prev || from_next) {
            return Forward::Dropped;
        }
        rule.counters.count(from_prev, packet.len());
        match rule.role {
            Role::Relay => {
                let onward = if from_prev {
                    rule.next_label()
                } else {
                    rule.prev
                };
                if let Some((to, label)) = onward {
                    transmits.push_back(Transmit::Data {
                        to,
                        header: DataHeader { label, ..header }.encode(),
                        body: packet.slice(DATA_HEADER_LEN..),
                    });
                }
                Forward::Relayed
            }
            Role::Source(route) if from_next => Forward::Source(route),
            Role::Destination(session) if from_prev => Forward::Destination(session),
            _ => Forward::Dropped,
        }
    }

    /// Seals a session packet with `cipher` and queues it on the route of
    /// rule `label` (towards the other end).
    pub(super) fn send_sealed(
        &mut self,
        label: u32,
        cipher: &mut SessionCipher,
        kind: u8,
        body_len: usize,
        write_body: impl FnOnce(&mut Vec<u8>),
        transmits: &mut VecDeque<Transmit>,
    ) -> Result<(), SendError> {
        let rule = self.rules.get_mut(&label).ok_or(SendError::NotUp)?;
        let ((to, their_label), forward) = match rule.role {
            Role::Source(_) => (rule.next_label().ok_or(SendError::NotUp)?, true),
            Role::Destination(_) => (rule.prev.ok_or(SendError::NotUp)?, false),
            Role::Relay => return Err(SendError::NotUp),
        };
        let packet = cipher
            .seal_with(kind, body_len, write_body)
            .map_err(|_| SendError::Exhausted)?;
        // An end counts what it sends as travelling away from it.
        rule.counters.count(forward, DATA_HEADER_LEN + packet.len());
        let header = DataHeader {
            label: their_label,
            kind: DATA_KIND_SESSION,
            len: packet.len() as u16,
        };
        transmits.push_back(Transmit::Data {
            to,
            header: header.encode(),
            body: Bytes::from(packet),
        });
        Ok(())
    }
}
