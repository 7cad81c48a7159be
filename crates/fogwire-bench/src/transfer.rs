//! Replication between nodes on loopback: one blob fetched from one peer,
//! beside the throughput of a bare link between two nodes in the same run;
//! and a blob fetched from three peers that each serve at a capped rate,
//! beside the same from one such peer.
//!
//! Every node runs on its own single-threaded runtime, as the link and
//! route benchmarks do, so the figures are comparable. Seeds hold the
//! test file by reference (no copy); the fetcher writes a real store,
//! emptied between rounds.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fogwire_identity::{Keypair, NodeId};
use fogwire_node::{Node, NodeOptions};
use fogwire_store::Hash;
use serde::Serialize;
use tokio::runtime::Runtime;

use crate::link::{BenchError, file_over_link, link_throughput, median, node_runtime, on};

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// Size of the blob fetched from one uncapped peer.
    pub blob_bytes: u64,
    /// Size of the blob fetched from capped peers.
    pub capped_bytes: u64,
    /// The cap of each capped peer, bytes per second.
    pub cap_bytes_per_sec: u64,
    pub rounds: usize,
    /// Seconds the bare link is timed for.
    pub link_duration: Duration,
    /// Where the test files and stores go (a temporary directory inside).
    pub dir: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            blob_bytes: 1 << 30,
            capped_bytes: 256 << 20,
            cap_bytes_per_sec: 64 << 20,
            rounds: 3,
            link_duration: Duration::from_secs(2),
            dir: std::env::temp_dir(),
        }
    }
}

/// Everything one run measured (medians over the rounds).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub blob_bytes: u64,
    pub rounds: usize,
    /// One link between two nodes, 64 KiB messages: the baseline.
    pub link_bytes_per_sec: f64,
    /// Fetching the blob from one peer, from the request to the blob
    /// committed in the store, every chunk group verified.
    pub one_peer_bytes_per_sec: f64,
    pub one_peer_to_link: f64,
    /// Copying the blob's file to a new file in the kernel: what writing
    /// that many new bytes costs on this machine, which a fetch must do
    /// and the bare link does not.
    pub copy_bytes_per_sec: f64,
    pub one_peer_to_copy: f64,
    /// The same file sent over a fresh link in 64 KiB messages and written
    /// by the receiver, nothing verified: a plain encrypted file copy.
    pub file_over_link_bytes_per_sec: f64,
    pub one_peer_to_file_over_link: f64,
    /// CPU time (all threads of this process: both nodes) per GiB moved:
    /// over the bare link, and fetched. On a machine whose cores the two
    /// ends share, throughput is at most cores ÷ this.
    pub link_cpu_secs_per_gib: f64,
    pub file_over_link_cpu_secs_per_gib: f64,
    pub one_peer_cpu_secs_per_gib: f64,
    pub cores: usize,
    pub capped_bytes: u64,
    pub cap_bytes_per_sec: u64,
    pub capped_one_bytes_per_sec: f64,
    pub capped_three_bytes_per_sec: f64,
    pub three_to_one: f64,
    /// Bytes each of the three capped peers delivered (last round).
    pub capped_three_shares: Vec<u64>,
}

/// Which step is being measured, for progress output.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    Writing,
    Starting,
    Link { round: usize },
    Copy { round: usize },
    FileOverLink { round: usize },
    OnePeer { round: usize },
    CappedOne { round: usize },
    CappedThree { round: usize },
}

/// CPU seconds this process has used, all threads, user and system
/// (from `/proc/self/stat`, in the kernel's fixed 1/100 s ticks); 0
/// where there is no such file.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces), from field 3:
    // utime is field 14, stime field 15.
    let Some((_, after)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / 100.0
}

fn per_gib(cpu_secs: f64, bytes: f64) -> f64 {
    if bytes > 0.0 {
        cpu_secs * (1u64 << 30) as f64 / bytes
    } else {
        0.0
    }
}

fn bench_error(error: impl std::fmt::Display) -> BenchError {
    BenchError::Link(error.to_string())
}

fn write_test_file(path: &Path, len: u64, seed: u8) -> Result<(), BenchError> {
    use std::io::Write;
    let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut block = vec![0u8; 1 << 20];
    let mut state = 0x2545_f491_4f6c_dd1du64 ^ u64::from(seed);
    let mut left = len;
    while left > 0 {
        for byte in block.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
        let take = left.min(block.len() as u64) as usize;
        file.write_all(&block[..take])?;
        left -= take as u64;
    }
    file.flush()?;
    Ok(())
}

/// A node on its own runtime.
struct BenchNode {
    runtime: Runtime,
    node: Node,
}

impl BenchNode {
    fn start(name: &str, cap: u64, store_dir: &Path) -> Result<BenchNode, BenchError> {
        let runtime = node_runtime(name)?;
        let keypair = Arc::new(Keypair::generate().map_err(bench_error)?);
        let mut options = NodeOptions::local(keypair);
        options.store_dir = Some(store_dir.to_owned());
        options.replication.serve_bytes_per_sec_max = cap;
        let node = on(&runtime, Node::start(options))?.map_err(bench_error)?;
        Ok(BenchNode { runtime, node })
    }

    /// Holds `path` by reference, as a seed.
    fn seed(&self, path: &Path) -> Result<Hash, BenchError> {
        self.node
            .store()
            .import_reference(path, None, &mut |_| {})
            .map_err(bench_error)
    }

    fn link_to(&self, other: &BenchNode) -> Result<(), BenchError> {
        let node = self.node.clone();
        let addr = other.node.peer_addr();
        on(&self.runtime, async move { node.connect(addr).await })?.map_err(bench_error)?;
        let (me, them) = (self.node.node_id(), other.node.node_id());
        let started = Instant::now();
        while !(replicating(&self.node, them) && replicating(&other.node, me)) {
            if started.elapsed() > Duration::from_secs(30) {
                return Err(BenchError::Link("nodes did not start replicating".into()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Fetches `hash`; returns bytes per second and bytes from each peer.
    fn fetch(&self, hash: Hash, size: u64) -> Result<(f64, Vec<(NodeId, u64)>), BenchError> {
        let node = self.node.clone();
        let started = Instant::now();
        let report = on(&self.runtime, async move {
            node.replication().fetch(hash, None, None).await
        })?
        .map_err(bench_error)?;
        let rate = size as f64 / started.elapsed().as_secs_f64();
        if report.fetched_bytes != size {
            return Err(BenchError::Link(format!(
                "fetched {} bytes of a {size}-byte blob",
                report.fetched_bytes
            )));
        }
        // Empty the store for the next round.
        self.node.store().gc(Some(0)).map_err(bench_error)?;
        Ok((rate, report.from))
    }

    fn stop(self) {
        let node = self.node.clone();
        let _ = on(&self.runtime, async move { node.shutdown().await });
    }
}

fn replicating(node: &Node, peer: NodeId) -> bool {
    node.replication()
        .peers()
        .iter()
        .any(|p| p.peer == peer && p.linked)
}

/// Runs every measurement; `progress` is told before each starts.
pub fn run(options: &Options, mut progress: impl FnMut(Step)) -> Result<Report, BenchError> {
    let dir = tempfile::Builder::new()
        .prefix("fogwire-bench-transfer-")
        .tempdir_in(&options.dir)?;
    progress(Step::Writing);
    let big = dir.path().join("big");
    write_test_file(&big, options.blob_bytes, 1)?;
    let capped = dir.path().join("capped");
    write_test_file(&capped, options.capped_bytes, 2)?;
    progress(Step::Starting);
    let store = |name: &str| dir.path().join(name);
    let fetcher = BenchNode::start("fetcher", 0, &store("fetcher"))?;
    let seed = BenchNode::start("seed", 0, &store("seed"))?;
    let big_hash = seed.seed(&big)?;
    fetcher.link_to(&seed)?;
    let capped_seeds = (0..3)
        .map(|i| {
            let node = BenchNode::start(
                &format!("capped{i}"),
                options.cap_bytes_per_sec,
                &store(&format!("capped{i}")),
            )?;
            node.seed(&capped)?;
            Ok(node)
        })
        .collect::<Result<Vec<_>, BenchError>>()?;
    let capped_hash = capped_seeds[0].seed(&capped)?;
    let capped_fetcher = BenchNode::start("capped-fetcher", 0, &store("capped-fetcher"))?;
    capped_fetcher.link_to(&capped_seeds[0])?;
    let rounds = options.rounds.max(1);
    let (mut link, mut one, mut capped_one, mut capped_three) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut copy = Vec::new();
    let (mut file_link, mut file_link_cpu) = (Vec::new(), Vec::new());
    let mut shares = Vec::new();
    let (mut link_cpu, mut one_cpu) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        progress(Step::Link { round });
        let (cpu, started) = (cpu_seconds(), Instant::now());
        let rate = link_throughput(
            &seed.runtime,
            &fetcher.runtime,
            fogwire_link::proto::MESSAGE_LEN_MAX,
            options.link_duration,
        )?;
        // The measurement's set-up is in the time too: a small overstatement.
        let moved = rate * started.elapsed().as_secs_f64();
        link_cpu.push(per_gib(cpu_seconds() - cpu, moved));
        link.push(rate);
        progress(Step::Copy { round });
        let copied = dir.path().join("copy");
        let started = Instant::now();
        std::fs::copy(&big, &copied)?;
        copy.push(options.blob_bytes as f64 / started.elapsed().as_secs_f64());
        std::fs::remove_file(&copied)?;
        progress(Step::FileOverLink { round });
        let cpu = cpu_seconds();
        file_link.push(file_over_link(
            &seed.runtime,
            &fetcher.runtime,
            &big,
            &copied,
        )?);
        file_link_cpu.push(per_gib(cpu_seconds() - cpu, options.blob_bytes as f64));
        std::fs::remove_file(&copied)?;
        progress(Step::OnePeer { round });
        let cpu = cpu_seconds();
        one.push(fetcher.fetch(big_hash, options.blob_bytes)?.0);
        one_cpu.push(per_gib(cpu_seconds() - cpu, options.blob_bytes as f64));
    }
    for round in 0..rounds {
        progress(Step::CappedOne { round });
        capped_one.push(capped_fetcher.fetch(capped_hash, options.capped_bytes)?.0);
    }
    capped_fetcher.link_to(&capped_seeds[1])?;
    capped_fetcher.link_to(&capped_seeds[2])?;
    for round in 0..rounds {
        progress(Step::CappedThree { round });
        let (rate, from) = capped_fetcher.fetch(capped_hash, options.capped_bytes)?;
        capped_three.push(rate);
        shares = capped_seeds
            .iter()
            .map(|seed| {
                from.iter()
                    .find(|(peer, _)| *peer == seed.node.node_id())
                    .map_or(0, |(_, bytes)| *bytes)
            })
            .collect();
    }
    for node in [fetcher, seed, capped_fetcher]
        .into_iter()
        .chain(capped_seeds)
    {
        node.stop();
    }
    let (link, one, copy) = (median(&link), median(&one), median(&copy));
    let file_link = median(&file_link);
    let (capped_one, capped_three) = (median(&capped_one), median(&capped_three));
    Ok(Report {
        blob_bytes: options.blob_bytes,
        rounds,
        link_bytes_per_sec: link,
        one_peer_bytes_per_sec: one,
        one_peer_to_link: one / link,
        copy_bytes_per_sec: copy,
        one_peer_to_copy: one / copy,
        file_over_link_bytes_per_sec: file_link,
        one_peer_to_file_over_link: one / file_link,
        link_cpu_secs_per_gib: median(&link_cpu),
        file_over_link_cpu_secs_per_gib: median(&file_link_cpu),
        one_peer_cpu_secs_per_gib: median(&one_cpu),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        capped_bytes: options.capped_bytes,
        cap_bytes_per_sec: options.cap_bytes_per_sec,
        capped_one_bytes_per_sec: capped_one,
        capped_three_bytes_per_sec: capped_three,
        three_to_one: capped_three / capped_one,
        capped_three_shares: shares,
    })
}
