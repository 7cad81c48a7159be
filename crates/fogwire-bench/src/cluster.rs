//! Cluster placement: the time every board spends computing where each
//! service runs (`fogwire_cluster_proto::place`) for many members and
//! services, beside sorting as many scored pairs as it considers — the
//! floor of any placement that takes pairs best first — and how many
//! instances one board's failure moves on a box of 32.

use std::time::Instant;

use fogwire_cluster_proto::{Member, Resources, ServiceSpec, place};
use fogwire_identity::Keypair;
use serde::Serialize;

use crate::link::median;

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    pub members: usize,
    pub services: usize,
    pub rounds: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            members: 1_000,
            services: 100,
            rounds: 21,
        }
    }
}

/// Medians over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub members: usize,
    pub services: usize,
    pub rounds: usize,
    pub place_ms: f64,
    pub place_max_ms: f64,
    /// Baseline: sorting `members × services` scored pairs.
    pub sort_ms: f64,
    /// One board's failure on a box of 32 running 24 services: instances
    /// moved, on average over each board failing, and at most.
    pub box_moved_mean: f64,
    pub box_moved_max: usize,
}

/// Which step is being measured, for progress output.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    Members,
    Round { round: usize },
    Failures,
}

fn make_members(count: usize) -> Vec<Member> {
    (0..count)
        .map(|index| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(index as u64).to_be_bytes());
            Member {
                id: Keypair::from_seed(&seed).node_id(),
                resources: Resources {
                    cores: 4,
                    memory_mib: 4096,
                    disk_mib: 64 * 1024,
                },
            }
        })
        .collect()
}

fn make_services(count: usize) -> Vec<ServiceSpec> {
    (0..count)
        .map(|index| {
            let needs = Resources {
                cores: 1,
                memory_mib: 256,
                disk_mib: 1024,
            };
            ServiceSpec::new(format!("service-{index}"), 1, needs)
        })
        .collect()
}

pub fn run(options: &Options, mut progress: impl FnMut(Step)) -> Report {
    let rounds = options.rounds.max(1);
    progress(Step::Members);
    let members = make_members(options.members);
    let services = make_services(options.services);
    let pairs = options.members * options.services;
    let mut place_ms = Vec::with_capacity(rounds);
    let mut sort_ms = Vec::with_capacity(rounds);
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..rounds {
        progress(Step::Round { round });
        let started = Instant::now();
        let placement = place(&services, &members);
        place_ms.push(started.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(&placement);
        let mut scored: Vec<(bool, u64, usize, usize)> = (0..pairs)
            .map(|index| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (false, state, index / options.members.max(1), index)
            })
            .collect();
        let started = Instant::now();
        scored.sort_unstable_by(|a, b| {
            (b.0, b.1)
                .cmp(&(a.0, a.1))
                .then(a.2.cmp(&b.2))
                .then(a.3.cmp(&b.3))
        });
        sort_ms.push(started.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(&scored);
    }
    progress(Step::Failures);
    let on_box = make_members(32);
    let box_services = make_services(24);
    let before = place(&box_services, &on_box);
    let mut moved = Vec::with_capacity(on_box.len());
    for failed in 0..on_box.len() {
        let mut alive = on_box.clone();
        alive.remove(failed);
        moved.push(place(&box_services, &alive).moved_since(&before));
    }
    Report {
        members: options.members,
        services: options.services,
        rounds,
        place_max_ms: place_ms.iter().copied().fold(0.0, f64::max),
        place_ms: median(&place_ms),
        sort_ms: median(&sort_ms),
        box_moved_mean: moved.iter().sum::<usize>() as f64 / moved.len() as f64,
        box_moved_max: moved.iter().copied().max().unwrap_or(0),
    }
}
