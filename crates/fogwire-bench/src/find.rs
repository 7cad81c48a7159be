//! Finding content beyond the neighbours (store.md §7), on loopback: a
//! fetch that must first ask the keepers of a blob's provider records who
//! holds it, beside the same fetch told the holder (`store get --from`:
//! a route opened straight to it), in the same run, on the same nodes.
//!
//! The network: a line seed — r1 — r2 — fetcher, and four more nodes
//! hanging off the relays, so that the keepers of each hash are spread
//! over the seven nodes other than the fetcher, and most are reached over
//! routes. Only the seed holds the blobs, pinned; every node runs on its
//! own single-threaded runtime. Every measurement starts cold, on a
//! fetcher started for it that has no route and no link but to r2: a
//! found fetch pays for its lookup's route setups, the told one for its
//! route to the seed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fogwire_identity::{Keypair, NodeId};
use fogwire_node::NodeOptions;
use fogwire_store::Hash;
use serde::Serialize;

use crate::link::{BenchError, median, on};
use crate::nodes::{BenchNode, bench_error, until};

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// Size of each small blob (one per round, each with other keepers).
    pub small_bytes: usize,
    /// Size of the large blob.
    pub large_bytes: usize,
    pub rounds: usize,
    /// Where the stores go (a temporary directory inside).
    pub dir: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            small_bytes: 64 << 10,
            large_bytes: 128 << 20,
            rounds: 9,
            dir: std::env::temp_dir(),
        }
    }
}

/// Medians over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub rounds: usize,
    pub nodes: usize,
    pub small_bytes: usize,
    pub large_bytes: usize,
    /// One route's round trip from the fetcher to the seed (3 hops).
    pub route_rtt_ms: f64,
    /// Asking the keepers alone (`store providers`), cold: a route opened
    /// to each keeper that is not a neighbour.
    pub lookup_ms: f64,
    /// A small blob: told the holder (route opened to it, fetched, closed).
    pub small_known_ms: f64,
    /// The same found through the keepers.
    pub small_found_ms: f64,
    pub small_found_to_known: f64,
    /// The large blob: told the holder, and found.
    pub large_known_bytes_per_sec: f64,
    pub large_found_bytes_per_sec: f64,
    pub large_found_to_known: f64,
}

/// Which step is being measured, for progress output.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    Starting,
    Providing,
    Round { round: usize },
}

fn start_with(
    name: &str,
    dir: &std::path::Path,
    adjust: impl FnOnce(&mut NodeOptions),
) -> Result<BenchNode, BenchError> {
    let keypair = Arc::new(Keypair::generate().map_err(bench_error)?);
    let mut options = NodeOptions::local(keypair);
    options.store_dir = Some(dir.join(name));
    adjust(&mut options);
    BenchNode::start(name, options)
}

/// How long a wait may take.
const PATIENCE: Duration = Duration::from_secs(60);

/// Polling a cheap local state.
const OFTEN: Duration = Duration::from_millis(20);

/// A fetcher started for one measurement, linked to r2, that keeps no
/// provider records (the keepers stay the same seven nodes). A fresh node
/// each time: after a fetch, a node hands its server a serving receipt,
/// linking to it if it must, and a link to the seed would make the next
/// fetch a neighbour's.
struct Fetcher(BenchNode);

impl Fetcher {
    fn start(
        index: usize,
        dir: &std::path::Path,
        relay: &BenchNode,
        seed: NodeId,
        keepers: usize,
    ) -> Result<Fetcher, BenchError> {
        let fetcher = Fetcher(start_with(&format!("fetcher{index}"), dir, |options| {
            options.replication.keep_provider_records = false;
        })?);
        fetcher.0.link_to(relay)?;
        let node = fetcher.0.node.clone();
        until("the fetcher to know the network", OFTEN, PATIENCE, || {
            let node = node.clone();
            on(&fetcher.0.runtime, async move {
                let routing = node.routing();
                let serving = routing
                    .serving(fogwire_replicate::PROVIDERS_SERVICE)
                    .await
                    .map_or(0, |serving| serving.len());
                serving == keepers
                    && routing
                        .find(seed, fogwire_route::Constraints::default(), 1)
                        .await
                        .is_ok_and(|paths| !paths.is_empty())
            })
        })?;
        Ok(fetcher)
    }

    /// Fetches `hash` found through the keepers; the time it took.
    fn found(self, hash: Hash, size: usize) -> Result<Duration, BenchError> {
        let node = self.0.node.clone();
        let started = Instant::now();
        let report = on(&self.0.runtime, async move {
            node.replication().fetch(hash, None, None).await
        })?
        .map_err(bench_error)?;
        let took = started.elapsed();
        self.0.stop();
        check(report.fetched_bytes, size)?;
        Ok(took)
    }

    /// Fetches `hash` from `holder` over a route opened for it, as
    /// `store get --from` does; the time from opening to closing.
    fn known(self, hash: Hash, size: usize, holder: NodeId) -> Result<Duration, BenchError> {
        let node = self.0.node.clone();
        let started = Instant::now();
        let fetched = on(&self.0.runtime, async move {
            let route = node
                .replication()
                .open_route(holder)
                .await
                .map_err(bench_error)?;
            let fetched = node.replication().fetch(hash, None, None).await;
            if let Some(route) = route {
                route.close().await;
            }
            fetched.map_err(bench_error)
        })??;
        let took = started.elapsed();
        self.0.stop();
        check(fetched.fetched_bytes, size)?;
        Ok(took)
    }

    /// Asks the keepers alone; the time, and whether they named `holder`.
    fn lookup(self, hash: Hash, holder: NodeId) -> Result<Duration, BenchError> {
        let node = self.0.node.clone();
        let started = Instant::now();
        let found = on(&self.0.runtime, async move {
            node.replication().find_providers(hash).await
        })?;
        let took = started.elapsed();
        self.0.stop();
        if !found.holders.contains(&holder) {
            return Err(BenchError::Link(
                "the keepers lost the seed's record".into(),
            ));
        }
        Ok(took)
    }

    /// The round trip of a route to `holder`, on a route of its own.
    fn rtt(self, holder: NodeId) -> Result<Duration, BenchError> {
        let node = self.0.node.clone();
        let took = on(&self.0.runtime, async move {
            let routing = node.routing();
            let opened = routing
                .open(holder, fogwire_route::Constraints::default())
                .await
                .map_err(bench_error)?;
            let took = routing.ping(opened.route, Duration::from_secs(5)).await;
            let _ = routing.close(opened.route).await;
            took.map_err(bench_error)
        })?;
        self.0.stop();
        took
    }
}

fn check(fetched: u64, size: usize) -> Result<(), BenchError> {
    if fetched != size as u64 {
        return Err(BenchError::Link(format!(
            "fetched {fetched} bytes of a {size}-byte blob"
        )));
    }
    Ok(())
}

/// Runs every measurement; `progress` is told before each starts.
pub fn run(options: &Options, mut progress: impl FnMut(Step)) -> Result<Report, BenchError> {
    let dir = tempfile::Builder::new()
        .prefix("fogwire-bench-find-")
        .tempdir_in(&options.dir)?;
    progress(Step::Starting);
    let names = ["seed", "r1", "r2", "s1", "s2", "s3", "s4"];
    let nodes = names
        .iter()
        .map(|name| start_with(name, dir.path(), |_| {}))
        .collect::<Result<Vec<_>, _>>()?;
    let (seed, relay) = (&nodes[0], &nodes[2]);
    for (a, b) in [(1, 0), (2, 1), (3, 1), (4, 1), (5, 2), (6, 2)] {
        nodes[a].link_to(&nodes[b])?;
    }
    let seed_id = seed.node.node_id();
    let keepers = names.len();
    let mut started = 0usize;
    let mut fresh = || {
        started += 1;
        Fetcher::start(started, dir.path(), relay, seed_id, keepers)
    };

    progress(Step::Providing);
    let rounds = options.rounds.max(1);
    let store = seed.node.store().clone();
    let mut small = Vec::new();
    for round in 0..rounds {
        let data = fogwire_env::pattern(options.small_bytes, round as u64 + 1);
        small.push(
            store
                .import_bytes(&data, Some(&format!("small-{round}")))
                .map_err(bench_error)?,
        );
    }
    let large = store
        .import_bytes(
            &fogwire_env::pattern(options.large_bytes, 999),
            Some("large"),
        )
        .map_err(bench_error)?;
    // Every record with its keepers, as a fetcher sees them.
    let asker = fresh()?;
    for hash in small.iter().chain([&large]) {
        let hash = *hash;
        // A lookup asks keepers over the network: not too often.
        until(
            "the keepers to name the seed",
            Duration::from_millis(250),
            PATIENCE,
            || {
                let node = asker.0.node.clone();
                on(&asker.0.runtime, async move {
                    node.replication()
                        .find_providers(hash)
                        .await
                        .holders
                        .contains(&seed_id)
                })
            },
        )?;
    }
    asker.0.stop();

    let (mut rtt, mut lookup) = (Vec::new(), Vec::new());
    let (mut small_known, mut small_found) = (Vec::new(), Vec::new());
    let (mut large_known, mut large_found) = (Vec::new(), Vec::new());
    let bytes = options.large_bytes as f64;
    for (round, hash) in small.iter().copied().enumerate() {
        progress(Step::Round { round });
        rtt.push(fresh()?.rtt(seed_id)?);
        lookup.push(fresh()?.lookup(hash, seed_id)?);
        // Alternate which goes first, so neither always meets a warmer
        // machine.
        if round % 2 == 0 {
            small_known.push(fresh()?.known(hash, options.small_bytes, seed_id)?);
            small_found.push(fresh()?.found(hash, options.small_bytes)?);
            large_known.push(
                bytes
                    / fresh()?
                        .known(large, options.large_bytes, seed_id)?
                        .as_secs_f64(),
            );
            large_found.push(bytes / fresh()?.found(large, options.large_bytes)?.as_secs_f64());
        } else {
            small_found.push(fresh()?.found(hash, options.small_bytes)?);
            small_known.push(fresh()?.known(hash, options.small_bytes, seed_id)?);
            large_found.push(bytes / fresh()?.found(large, options.large_bytes)?.as_secs_f64());
            large_known.push(
                bytes
                    / fresh()?
                        .known(large, options.large_bytes, seed_id)?
                        .as_secs_f64(),
            );
        }
    }
    let count = nodes.len() + 1;
    for node in nodes {
        node.stop();
    }
    let ms = |values: &[Duration]| {
        median(
            &values
                .iter()
                .map(|d| d.as_secs_f64() * 1e3)
                .collect::<Vec<_>>(),
        )
    };
    let (small_known, small_found) = (ms(&small_known), ms(&small_found));
    let (large_known, large_found) = (median(&large_known), median(&large_found));
    Ok(Report {
        rounds,
        nodes: count,
        small_bytes: options.small_bytes,
        large_bytes: options.large_bytes,
        route_rtt_ms: ms(&rtt),
        lookup_ms: ms(&lookup),
        small_known_ms: small_known,
        small_found_ms: small_found,
        small_found_to_known: small_found / small_known,
        large_known_bytes_per_sec: large_known,
        large_found_bytes_per_sec: large_found,
        large_found_to_known: large_found / large_known,
    })
}
