//! Placement: which board runs each instance of each service.
//!
//! Every board computes it alone, from the manifest's services and the
//! members it knows to be alive, and gets the same answer as every other
//! board with the same inputs: the result depends on neither the order of
//! the inputs nor anything else, so no leader and no election is needed.
//!
//! The rule is rendezvous hashing with constraints. Every pair of an
//! instance (a service and a replica number) and a member gets a score, a
//! hash of both; pairs are taken from the highest score down, and a pair
//! is kept if its instance has no board yet and its member can take it:
//!
//! - the member has the resources left (cores, memory, disk);
//! - it runs no other replica of the same service;
//! - a board runs one service, unless every service on it may share
//!   (`shares_board`);
//! - a pinned service runs only on its pin.
//!
//! Pinned instances are taken first, before any score: their pin is the
//! only board they may have, so no other service may take it from them.
//! Because every score is the same on every board, this is the one stable
//! assignment: no instance would rather be on a board that would rather
//! have it. When a member leaves, only its instances must move, and each
//! goes to the best board that can take it; it may in turn displace an
//! instance with a lower score there, which is rare when boards are free.
//! An instance no member can take stays unplaced (and is reported).

use std::collections::{BTreeMap, BTreeSet};

use fogwire_identity::NodeId;

/// The domains instances and members are hashed under.
const INSTANCE_CONTEXT: &str = "fogwire cluster placement v1 instance";
const MEMBER_CONTEXT: &str = "fogwire cluster placement v1 member";

/// What a board offers, or an instance needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Resources {
    pub cores: u32,
    pub memory_mib: u64,
    pub disk_mib: u64,
}

impl Resources {
    /// Whether `need` fits in what is left of these.
    pub fn fits(&self, need: &Resources) -> bool {
        need.cores <= self.cores
            && need.memory_mib <= self.memory_mib
            && need.disk_mib <= self.disk_mib
    }

    fn take(&mut self, need: &Resources) {
        self.cores = self.cores.saturating_sub(need.cores);
        self.memory_mib = self.memory_mib.saturating_sub(need.memory_mib);
        self.disk_mib = self.disk_mib.saturating_sub(need.disk_mib);
    }
}

/// A live member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Member {
    pub id: NodeId,
    pub resources: Resources,
}

/// A service of the manifest: how many instances, and where they may run.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceSpec {
    pub name: String,
    pub count: u32,
    pub needs: Resources,
    /// The only board it may run on.
    pub pinned: Option<NodeId>,
    /// It may share a board with other services that may too; by default
    /// a board runs one service.
    pub shares_board: bool,
}

impl ServiceSpec {
    /// `count` instances of `name`, each needing `needs`, on boards of
    /// their own, anywhere.
    pub fn new(name: impl Into<String>, count: u32, needs: Resources) -> Self {
        Self {
            name: name.into(),
            count,
            needs,
            pinned: None,
            shares_board: false,
        }
    }
}

/// One instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instance {
    pub service: String,
    pub replica: u32,
}

/// Where every instance runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    pub assigned: BTreeMap<Instance, NodeId>,
    /// Instances no live member can take.
    pub unplaced: BTreeSet<Instance>,
}

impl Placement {
    /// The instances `member` runs.
    pub fn on<'a>(&'a self, member: &'a NodeId) -> impl Iterator<Item = &'a Instance> + 'a {
        self.assigned
            .iter()
            .filter(move |(_, on)| *on == member)
            .map(|(instance, _)| instance)
    }

    /// Instances whose board differs between `before` and this placement
    /// (moved, newly placed, or no longer placed).
    pub fn moved_since(&self, before: &Placement) -> usize {
        let instances: BTreeSet<&Instance> =
            self.assigned.keys().chain(before.assigned.keys()).collect();
        instances
            .into_iter()
            .filter(|instance| self.assigned.get(*instance) != before.assigned.get(*instance))
            .count()
    }
}

/// The score of `instance` on the member `member`: the higher, the more
/// the instance wants the member.
pub fn score(instance: &Instance, member: &NodeId) -> u64 {
    mix(instance_hash(instance), member_hash(member))
}

/// The first 8 bytes, big-endian, of BLAKE3 in derive-key mode.
fn hash64(context: &str, parts: &[&[u8]]) -> u64 {
    let mut hasher = blake3::Hasher::new_derive_key(context);
    for part in parts {
        hasher.update(part);
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    u64::from_be_bytes(first)
}

fn instance_hash(instance: &Instance) -> u64 {
    let name_len = (instance.service.len() as u64).to_be_bytes();
    let replica = instance.replica.to_be_bytes();
    hash64(
        INSTANCE_CONTEXT,
        &[&name_len, instance.service.as_bytes(), &replica],
    )
}

fn member_hash(member: &NodeId) -> u64 {
    hash64(MEMBER_CONTEXT, &[member.as_bytes()])
}

/// Combines an instance's and a member's hashes into their score: the
/// SplitMix64 finaliser, twice. Hashing each instance and each member once
/// and mixing per pair keeps 1,000 members × 100 services to 100,000
/// multiplications rather than 100,000 BLAKE3 calls.
fn mix(instance: u64, member: u64) -> u64 {
    fn splitmix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    splitmix(instance ^ splitmix(member))
}

/// What a member holds while the placement is computed.
struct Board<'a> {
    id: &'a NodeId,
    free: Resources,
    /// Services it runs, and whether every one of them may share.
    services: BTreeSet<&'a str>,
    all_share: bool,
}

impl Board<'_> {
    fn can_take(&self, spec: &ServiceSpec) -> bool {
        if spec.pinned.as_ref().is_some_and(|pin| pin != self.id) {
            return false;
        }
        if self.services.contains(spec.name.as_str()) || !self.free.fits(&spec.needs) {
            return false;
        }
        self.services.is_empty() || (self.all_share && spec.shares_board)
    }
}

/// Places every instance of `services` on `members`. Services with the
/// same name, and members with the same id, count once (the first in
/// sorted order), so the result does not depend on the inputs' order.
pub fn place(services: &[ServiceSpec], members: &[Member]) -> Placement {
    let mut sorted_services: Vec<&ServiceSpec> = services.iter().collect();
    sorted_services.sort();
    sorted_services.dedup_by(|later, first| later.name == first.name);
    let mut sorted_members: Vec<&Member> = members.iter().collect();
    sorted_members.sort();
    sorted_members.dedup_by(|later, first| later.id == first.id);

    let instances: Vec<(Instance, &ServiceSpec)> = sorted_services
        .iter()
        .flat_map(|spec| {
            (0..spec.count).map(move |replica| {
                (
                    Instance {
                        service: spec.name.clone(),
                        replica,
                    },
                    *spec,
                )
            })
        })
        .collect();
    let mut boards: Vec<Board<'_>> = sorted_members
        .iter()
        .map(|member| Board {
            id: &member.id,
            free: member.resources,
            services: BTreeSet::new(),
            all_share: true,
        })
        .collect();
    // Every pair an instance could ever take, best first: pinned
    // instances before all others (they have nowhere else to go), then by
    // score; ties (equal scores) go to the earlier instance, then the
    // earlier member.
    let member_hashes: Vec<u64> = boards.iter().map(|board| member_hash(board.id)).collect();
    // (pinned, score, instance, member).
    let mut pairs: Vec<(bool, u64, usize, usize)> = Vec::new();
    for (instance_index, (instance, spec)) in instances.iter().enumerate() {
        let hash = instance_hash(instance);
        for (member_index, board) in boards.iter().enumerate() {
            if spec.pinned.as_ref().is_none_or(|pin| pin == board.id)
                && board.free.fits(&spec.needs)
            {
                let score = mix(hash, member_hashes[member_index]);
                pairs.push((spec.pinned.is_some(), score, instance_index, member_index));
            }
        }
    }
    pairs.sort_unstable_by(|a, b| {
        (b.0, b.1)
            .cmp(&(a.0, a.1))
            .then(a.2.cmp(&b.2))
            .then(a.3.cmp(&b.3))
    });

    let mut placed: Vec<Option<usize>> = vec![None; instances.len()];
    let mut left = instances.len();
    for (_, _, instance_index, member_index) in pairs {
        if left == 0 {
            break;
        }
        if placed[instance_index].is_some() {
            continue;
        }
        let spec = instances[instance_index].1;
        let board = &mut boards[member_index];
        if !board.can_take(spec) {
            continue;
        }
        board.free.take(&spec.needs);
        board.services.insert(spec.name.as_str());
        board.all_share &= spec.shares_board;
        placed[instance_index] = Some(member_index);
        left -= 1;
    }

    let mut placement = Placement::default();
    for ((instance, _), board) in instances.into_iter().zip(placed) {
        match board {
            Some(index) => {
                placement.assigned.insert(instance, *boards[index].id);
            }
            None => {
                placement.unplaced.insert(instance);
            }
        }
    }
    placement
}

#[cfg(test)]
mod tests;
