//! Routes on loopback: the throughput of one stream over 1, 2 and 3 hops
//! beside one direct link measured in the same run, route setup time
//! beside the path's round-trip time, and a thousand setups in a row.
//!
//! Four nodes in a line, N0–N1–N2–N3, each on its own tokio runtime with
//! one worker thread (as four nodes sharing this machine would be), linked
//! over real TCP with real Noise links and running real routing. N0 opens
//! the routes; the far end's `discard` service counts what arrives.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fogwire_identity::Keypair;
use fogwire_link::proto::{Config, LinkIdentity, MESSAGE_LEN_MAX};
use fogwire_link::{LinkHandle, connect, establish, spawn};
use fogwire_route::services::{DISCARD, send_to_discard};
use fogwire_route::{Constraints, Options as RoutingOptions, Routing, link_channels};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

use crate::link::{BenchError, link_throughput, median, node_runtime, on};

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// Time each stream is timed for.
    pub duration: Duration,
    /// Rounds of every throughput measurement, interleaved.
    pub rounds: usize,
    /// Routes set up per hop count to time setup against the path's RTT.
    pub setups_timed: usize,
    /// 3-hop routes set up and closed in a row, counting failures.
    pub setups_in_a_row: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(2),
            rounds: 3,
            setups_timed: 50,
            setups_in_a_row: 1000,
        }
    }
}

/// One stream over `hops` links.
#[derive(Debug, Clone, Serialize)]
pub struct StreamResult {
    pub hops: usize,
    /// Median of the rounds: payload bytes per second the far end counted.
    pub bytes_per_sec: f64,
    /// Beside the direct link of the same run.
    pub to_direct_link: f64,
}

/// Setup time of routes of `hops` links.
#[derive(Debug, Clone, Serialize)]
pub struct SetupResult {
    pub hops: usize,
    pub setup_median_ms: f64,
    pub setup_max_ms: f64,
    /// Median end-to-end ping over the same routes: the path's RTT.
    pub path_rtt_median_ms: f64,
    /// Setup minus RTT, median: what setting up costs beyond the round
    /// trip it needs.
    pub beyond_rtt_median_ms: f64,
}

/// The thousand setups.
#[derive(Debug, Clone, Serialize)]
pub struct InARow {
    pub hops: usize,
    pub attempted: usize,
    pub failed: usize,
    pub median_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub total_secs: f64,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub rounds: usize,
    /// One link between two nodes, 64 KiB messages: the baseline.
    pub direct_link_bytes_per_sec: f64,
    pub streams: Vec<StreamResult>,
    pub setups: Vec<SetupResult>,
    pub in_a_row: InARow,
}

/// Which step is being measured, for progress output.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    Linking,
    DirectLink { round: usize },
    Stream { round: usize, hops: usize },
    Setups { hops: usize },
    InARow { done: usize },
}

/// Nodes in a line, each on its own one-thread runtime.
pub(crate) struct Line {
    pub(crate) runtimes: Vec<Runtime>,
    pub(crate) routings: Vec<Routing>,
    links: Vec<LinkHandle>,
}

/// The per-neighbour setup burst of the bench's relays.
pub const SETUPS_BURST_IN_BENCH: u32 = 100_000;

fn link_config() -> Arc<Config> {
    Arc::new(Config {
        channels: link_channels(),
        ..Config::default()
    })
}

pub(crate) fn bench_error(error: impl std::fmt::Display) -> BenchError {
    BenchError::Link(error.to_string())
}

impl Line {
    /// `count` nodes, node `i`'s routing options set by `customize(i, …)`
    /// (its services and offers, say).
    pub(crate) fn start_with(
        count: usize,
        customize: impl Fn(usize, &mut RoutingOptions),
    ) -> Result<Self, BenchError> {
        let mut runtimes = Vec::with_capacity(count);
        let mut identities = Vec::with_capacity(count);
        let mut routings = Vec::with_capacity(count);
        for index in 0..count {
            let runtime = node_runtime(&format!("bench-n{index}"))?;
            let identity = Arc::new(
                LinkIdentity::generate(Arc::new(Keypair::from_seed(&[index as u8 + 10; 32])))
                    .map_err(bench_error)?,
            );
            let mut options = RoutingOptions::new(identity.clone());
            customize(index, &mut options);
            let routing =
                on(&runtime, async move { Routing::start(options) })?.map_err(bench_error)?;
            runtimes.push(runtime);
            identities.push(identity);
            routings.push(routing);
        }
        let mut line = Line {
            runtimes,
            routings,
            links: Vec::new(),
        };
        for index in 0..count - 1 {
            line.link(&identities, index, index + 1)?;
        }
        Ok(line)
    }

    /// Links node `a` (dialing) to node `b`, each end on its own runtime,
    /// and tells both routings, as a node does.
    fn link(
        &mut self,
        identities: &[Arc<LinkIdentity>],
        a: usize,
        b: usize,
    ) -> Result<(), BenchError> {
        let listener = self.runtimes[b].block_on(TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let listener_identity = identities[b].clone();
        let accepting = self.runtimes[b].spawn(async move {
            let (stream, remote) = listener.accept().await?;
            establish(
                fogwire_link::LinkStream::Tcp(stream),
                remote,
                &listener_identity,
                link_config(),
            )
            .await
            .map(spawn)
            .map_err(|e| std::io::Error::other(e.to_string()))
        });
        let (dialer, expected) = (identities[a].clone(), identities[b].node_id());
        let outbound = on(&self.runtimes[a], async move {
            connect(addr, expected, &dialer, link_config())
                .await
                .map(spawn)
                .map_err(|e| e.to_string())
        })?
        .map_err(BenchError::Link)?;
        let inbound = self.runtimes[b]
            .block_on(accepting)
            .map_err(bench_error)??;
        for (index, link) in [(a, &outbound), (b, &inbound)] {
            let routing = self.routings[index].clone();
            let link = link.clone();
            on(&self.runtimes[index], async move {
                routing.link_up(link.clone());
                tokio::spawn(async move {
                    link.closed().await;
                    routing.link_down(link.peer(), link.id());
                });
            })?;
        }
        self.links.push(outbound);
        self.links.push(inbound);
        Ok(())
    }

    /// Waits until N0 knows every node.
    pub(crate) fn converge(&self) -> Result<(), BenchError> {
        let routing = self.routings[0].clone();
        let count = self.routings.len();
        on(&self.runtimes[0], async move {
            let started = Instant::now();
            loop {
                let nodes = routing.nodes().await.map_err(bench_error)?;
                let links: usize = nodes.iter().map(|n| n.advert.links.len()).sum();
                if nodes.len() == count && links == 2 * (count - 1) {
                    return Ok(());
                }
                if started.elapsed() > Duration::from_secs(20) {
                    return Err(BenchError::Link("the nodes never learned the graph".into()));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })?
    }

    /// Opens a route of exactly `hops` links from N0 to N`hops`, runs
    /// `work` on it on N0's runtime, and closes it.
    fn with_route<T: Send + 'static, F>(
        &self,
        hops: usize,
        work: impl FnOnce(Routing, u64) -> F + Send + 'static,
    ) -> Result<T, BenchError>
    where
        F: Future<Output = Result<T, BenchError>> + Send,
    {
        let routing = self.routings[0].clone();
        let destination = self.routings[hops].node_id();
        on(&self.runtimes[0], async move {
            let opened = routing
                .open(destination, Constraints::hops(hops))
                .await
                .map_err(bench_error)?;
            let result = work(routing.clone(), opened.route).await;
            let _ = routing.close(opened.route).await;
            result
        })?
    }

    pub(crate) fn shutdown(self) {
        for (routing, runtime) in self.routings.iter().zip(&self.runtimes) {
            let routing = routing.clone();
            let _ = on(runtime, async move { routing.shutdown().await });
        }
        for link in &self.links {
            let link = link.clone();
            let _ = on(&self.runtimes[0], async move {
                link.close(fogwire_link::proto::CloseCode::NORMAL, "bench done")
                    .await;
            });
        }
    }
}

/// Runs every measurement; `progress` is told before each starts. Must be
/// called outside any tokio runtime.
pub fn run(options: &Options, mut progress: impl FnMut(Step)) -> Result<Report, BenchError> {
    let rounds = options.rounds.max(1);
    progress(Step::Linking);
    // The setups in a row measure what the setup path can do, so each
    // relay admits them all at once: by default a neighbour gets 256 at
    // once, then 100/s (routing.md §4), and the bench would measure that
    // limiter instead (most of the 1000 refused as busy).
    let line = Line::start_with(4, |_, routing| {
        routing.router.setups_per_neighbour_burst = SETUPS_BURST_IN_BENCH;
    })?;
    line.converge()?;
    let block = Bytes::from(vec![0x5a; 256 * 1024]);
    let mut direct = Vec::with_capacity(rounds);
    let mut streams: Vec<Vec<f64>> = (0..3).map(|_| Vec::with_capacity(rounds)).collect();
    for round in 0..rounds {
        progress(Step::DirectLink { round });
        // The baseline: one link between two nodes on two runtimes, the
        // largest messages, in the same run.
        let sender = node_runtime("bench-direct-a")?;
        let receiver = node_runtime("bench-direct-b")?;
        direct.push(link_throughput(
            &sender,
            &receiver,
            MESSAGE_LEN_MAX,
            options.duration,
        )?);
        drop((sender, receiver));
        for hops in 1..=3 {
            progress(Step::Stream { round, hops });
            let (block, duration) = (block.clone(), options.duration);
            let (bytes, elapsed) = line.with_route(hops, move |routing, route| async move {
                let stream = routing.connect(route, DISCARD).await.map_err(bench_error)?;
                send_to_discard(stream, block, duration)
                    .await
                    .map_err(bench_error)
            })?;
            streams[hops - 1].push(bytes as f64 / elapsed.as_secs_f64());
        }
    }
    let direct = median(&direct);
    let streams = streams
        .iter()
        .enumerate()
        .map(|(index, rates)| {
            let rate = median(rates);
            StreamResult {
                hops: index + 1,
                bytes_per_sec: rate,
                to_direct_link: rate / direct,
            }
        })
        .collect();

    let mut setups = Vec::with_capacity(3);
    for hops in 1..=3 {
        progress(Step::Setups { hops });
        let mut setup_ms = Vec::with_capacity(options.setups_timed);
        let mut rtt_ms = Vec::with_capacity(options.setups_timed);
        for _ in 0..options.setups_timed.max(1) {
            let routing = line.routings[0].clone();
            let destination = line.routings[hops].node_id();
            let (setup, rtt) = on(&line.runtimes[0], async move {
                let opened = routing
                    .open(destination, Constraints::hops(hops))
                    .await
                    .map_err(bench_error)?;
                let mut rtts = Vec::with_capacity(5);
                for _ in 0..5 {
                    let rtt = routing
                        .ping(opened.route, Duration::from_secs(2))
                        .await
                        .map_err(bench_error)?;
                    rtts.push(rtt.as_secs_f64() * 1e3);
                }
                let _ = routing.close(opened.route).await;
                Ok::<_, BenchError>((opened.setup_time.as_secs_f64() * 1e3, median(&rtts)))
            })??;
            setup_ms.push(setup);
            rtt_ms.push(rtt);
        }
        let beyond: Vec<f64> = setup_ms.iter().zip(&rtt_ms).map(|(s, r)| s - r).collect();
        setups.push(SetupResult {
            hops,
            setup_median_ms: median(&setup_ms),
            setup_max_ms: setup_ms.iter().copied().fold(0.0, f64::max),
            path_rtt_median_ms: median(&rtt_ms),
            beyond_rtt_median_ms: median(&beyond),
        });
    }

    let attempted = options.setups_in_a_row.max(1);
    let routing = line.routings[0].clone();
    let destination = line.routings[3].node_id();
    let started = Instant::now();
    let mut times = Vec::with_capacity(attempted);
    let mut failed = 0;
    for done in 0..attempted {
        if done % 50 == 0 {
            progress(Step::InARow { done });
        }
        let routing = routing.clone();
        let opened = on(&line.runtimes[0], async move {
            let opened = routing.open(destination, Constraints::hops(3)).await;
            if let Ok(opened) = &opened {
                let _ = routing.close(opened.route).await;
            }
            opened
        })?;
        match opened {
            Ok(opened) => times.push(opened.setup_time.as_secs_f64() * 1e3),
            Err(_) => failed += 1,
        }
    }
    let total_secs = started.elapsed().as_secs_f64();
    times.sort_by(f64::total_cmp);
    let p99 = times
        .get((times.len() * 99 / 100).min(times.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0);
    let in_a_row = InARow {
        hops: 3,
        attempted,
        failed,
        median_ms: median(&times),
        p99_ms: p99,
        max_ms: times.last().copied().unwrap_or(0.0),
        total_secs,
    };
    line.shutdown();
    Ok(Report {
        rounds,
        direct_link_bytes_per_sec: direct,
        streams,
        setups,
        in_a_row,
    })
}
