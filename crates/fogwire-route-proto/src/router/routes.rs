//! The routes this node opened, as their source: where each stands (being
//! set up, up, broken), its path and the keys of its hops, its session,
//! what it carried across repairs, and when its timers run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fogwire_identity::NodeId;

use super::rules::RuleTable;
use super::session::{Initiator, TOKEN_LEN};
use super::sessions::Sessions;
use super::{Config, Counters, RouteId, RouteInfo, RouteStatus, SessionId};

#[derive(Debug)]
pub(super) enum RouteState {
    Setting {
        setup: bytes::Bytes,
        started_at: Instant,
        retransmit_at: Instant,
        retransmit_every: Duration,
        initiator: Initiator,
    },
    Up {
        keepalive_at: Instant,
        last_echo: Instant,
        keepalive_seq: u32,
    },
    Broken,
}

#[derive(Debug)]
pub(super) struct SourceRoute {
    /// Hops after the source; the last is the destination.
    pub(super) hops: Vec<NodeId>,
    /// The source's rule, while one exists.
    pub(super) label: Option<u32>,
    pub(super) reply_keys: Vec<[u8; 32]>,
    pub(super) route_tags: Vec<[u8; 16]>,
    pub(super) state: RouteState,
    pub(super) token: [u8; TOKEN_LEN],
    pub(super) session: Option<SessionId>,
    /// Counters of the rules of earlier paths.
    pub(super) earlier: Counters,
    pub(super) repairs: u32,
    pub(super) setup_time: Option<Duration>,
    pub(super) broken_since: Option<Instant>,
    pub(super) receipt_seq: u64,
    pub(super) receipt_at: Instant,
    /// Counters of the current rule when the last receipts were sent.
    pub(super) receipted: Counters,
}

/// Every route this node opened, by id.
#[derive(Debug)]
pub(super) struct SourceRoutes {
    map: BTreeMap<RouteId, SourceRoute>,
    next: RouteId,
}

impl SourceRoutes {
    pub(super) fn new() -> Self {
        Self {
            map: BTreeMap::new(),
            next: 1,
        }
    }

    /// The id the next route will have.
    pub(super) fn next_id(&self) -> RouteId {
        self.next
    }

    /// Adds the route with the id [`SourceRoutes::next_id`] gave.
    pub(super) fn insert(&mut self, route: SourceRoute) -> RouteId {
        let id = self.next;
        self.next += 1;
        self.map.insert(id, route);
        id
    }

    pub(super) fn contains(&self, route: RouteId) -> bool {
        self.map.contains_key(&route)
    }

    pub(super) fn get(&self, route: RouteId) -> Option<&SourceRoute> {
        self.map.get(&route)
    }

    pub(super) fn get_mut(&mut self, route: RouteId) -> Option<&mut SourceRoute> {
        self.map.get_mut(&route)
    }

    pub(super) fn remove(&mut self, route: RouteId) -> Option<SourceRoute> {
        self.map.remove(&route)
    }

    pub(super) fn ids(&self) -> Vec<RouteId> {
        self.map.keys().copied().collect()
    }

    /// When the first route timer runs out: a setup's retransmission or
    /// timeout, a keepalive, giving up on a repair.
    pub(super) fn next_timeout(&self, config: &Config) -> Option<Instant> {
        self.map
            .values()
            .filter_map(|route| {
                let own = match &route.state {
                    RouteState::Setting {
                        retransmit_at,
                        started_at,
                        ..
                    } => Some((*retransmit_at).min(*started_at + config.setup_timeout)),
                    RouteState::Up { keepalive_at, .. } => Some(*keepalive_at),
                    RouteState::Broken => None,
                };
                let give_up = route
                    .broken_since
                    .map(|since| since + config.repair_timeout);
                own.into_iter().chain(give_up).min()
            })
            .min()
    }

    /// What a route has carried, across repairs.
    pub(super) fn counters(&self, route: RouteId, rules: &RuleTable) -> Option<Counters> {
        let entry = self.map.get(&route)?;
        let mut counters = entry.earlier;
        if let Some(rule) = entry.label.and_then(|label| rules.get(label)) {
            counters.add(&rule.counters);
        }
        Some(counters)
    }

    /// Every route, as reports show it.
    pub(super) fn info<'a>(
        &'a self,
        rules: &'a RuleTable,
        sessions: &'a Sessions,
    ) -> impl Iterator<Item = RouteInfo> + 'a {
        self.map.iter().map(move |(id, entry)| RouteInfo {
            id: *id,
            path: entry.hops.clone(),
            status: match entry.state {
                RouteState::Up { .. } => RouteStatus::Up,
                _ if entry.session.is_some() => RouteStatus::Repairing,
                _ => RouteStatus::SettingUp,
            },
            counters: self.counters(*id, rules).unwrap_or_default(),
            repairs: entry.repairs,
            session: entry.session,
            setup_time: entry.setup_time,
            streams: entry
                .session
                .and_then(|s| sessions.get(s))
                .map_or(0, |s| s.stream_count()),
        })
    }
}
