//! `fogwire bench attack`: one real `fogwire node` process under a
//! combined attack played from this process over real sockets — idle
//! sockets on its link port, self-made identities holding links, a flood
//! of handshake openers (one captured first message replayed, so the
//! attacker does no cryptography), idle control-API connections and
//! stalled blob readers — beside the same figures with no attack, in the
//! same run: how long a peer takes to link, `fogwire status` and
//! `fogwire store add` as a user runs them, the node's CPU per 1,000
//! handshake attempts a second, its memory and open files, and its log
//! bytes a second; and what the node's puzzle (a RETRY under load) costs
//! an attacker who solves it, beside what a first message costs the node.
//!
//! The attackers come from other loopback addresses (127.0.0.2 and up) than
//! the honest peers (127.0.0.1), as they would from other hosts.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fogwire_identity::{Keypair, NodeId};
use fogwire_link::proto::puzzle::Puzzle;
use fogwire_link::proto::{Config as LinkConfig, Handshake, LinkIdentity};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::output::Table;
use crate::soak::{Figures, SoakNode, cli};

#[derive(Debug, clap::Args)]
pub struct AttackArgs {
    /// Idle TCP sockets held open on the link port (reopened when closed).
    #[arg(long, default_value_t = 1000)]
    pub idle_sockets: usize,
    /// Self-made identities that complete the handshake and hold a link.
    #[arg(long, default_value_t = 300)]
    pub identities: usize,
    /// Tasks opening handshakes as fast as they can.
    #[arg(long, default_value_t = 8)]
    pub flooders: usize,
    /// Idle connections to the control API (reopened when closed).
    #[arg(long, default_value_t = 2000)]
    pub api_idle: usize,
    /// Clients reading a blob from the control API, then reading no more.
    #[arg(long, default_value_t = 500)]
    pub stalled_readers: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The figures of one phase (no attack, or under attack).
#[derive(Debug, Clone, Default, Serialize)]
struct Phase {
    /// The node linking to a peer it is told to keep (`fogwire connect`
    /// run on the node: a configured peer).
    link_ms: Vec<f64>,
    /// Peers that could not link, and why.
    link_failures: Vec<String>,
    /// A new peer dialing the node (`fogwire connect` run on the peer):
    /// under attack it competes with the attackers for handshake and link
    /// slots, so it is reported, not held to a goal.
    newcomer_ms: Vec<f64>,
    newcomer_failures: Vec<String>,
    status_ms: Vec<f64>,
    store_add_ms: Vec<f64>,
    /// The node's CPU over the measuring window, in cores.
    cpu_cores: f64,
    handshakes_per_sec: f64,
    /// Of the flooders' first messages, the share answered with a RETRY
    /// (a puzzle) rather than message 2.
    puzzle_share: f64,
    rss_mib: f64,
    open_files: u64,
    /// Links the node holds at the end of the window (`fogwire status`).
    links: u64,
    log_bytes_per_sec: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    baseline: Phase,
    attack: Phase,
    /// The handshake flood alone (its CPU per attempt, its puzzles).
    flood: Phase,
    /// The node's CPU (in % of a core) per 1,000 handshake attempts a
    /// second in the flood alone, beyond its CPU with no attack.
    cpu_percent_per_1000_handshakes: f64,
    /// The most bits a RETRY asked of the flooders.
    puzzle_bits: u8,
    /// One core's time to solve a puzzle of those bits on this machine
    /// (median of several), what a flooder pays per message 2 it gets.
    solve_ms: f64,
    /// The node's CPU time per flooder first message under attack.
    node_ms_per_attempt: f64,
    goals_met: bool,
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NAN, f64::max)
}

/// The node's user + system CPU time so far (`/proc/<pid>/stat`).
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses).
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line; 12 and 13 here.
    (ticks(11) + ticks(12)) / 100.0
}

/// A TCP connection from `source` (a loopback address) to `to`.
async fn connect_from(source: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    socket.connect(to).await
}

/// The attacker's `n`th source address, in 127.0.0.0/8 beyond 127.0.0.1.
fn attacker(base: u8, n: usize, per_address: usize) -> Ipv4Addr {
    let index = n / per_address.max(1);
    Ipv4Addr::new(127, base, (index / 250) as u8, (index % 250) as u8 + 2)
}

/// Holds a connection until the other side closes it, then opens it
/// again (a pause between, so a refused one is not a busy loop).
async fn hold_open(
    source: Ipv4Addr,
    to: SocketAddr,
    first: &'static [u8],
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        if let Ok(mut stream) = connect_from(source, to).await {
            let _ = stream.write_all(first).await;
            let mut sink = [0u8; 512];
            // Read the answer's start (a stalled reader reads no further).
            let held = async {
                let mut read_total = 0;
                loop {
                    match stream.read(&mut sink).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read_total += n,
                    }
                    if read_total >= 512 && !first.is_empty() {
                        // Stall: keep the socket, read nothing more.
                        std::future::pending::<()>().await;
                    }
                }
            };
            tokio::select! {
                () = held => {}
                () = stop.cancelled() => return,
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A self-made identity that links and stays silent, linking again when
/// its link is closed.
async fn hold_identity(source: Ipv4Addr, to: SocketAddr, node: NodeId, stop: CancellationToken) {
    let config = Arc::new(LinkConfig::default());
    while !stop.is_cancelled() {
        let identity = Keypair::generate()
            .ok()
            .and_then(|key| LinkIdentity::generate(Arc::new(key)).ok());
        if let (Some(identity), Ok(stream)) = (identity, connect_from(source, to).await)
            && let Ok(established) =
                fogwire_link::connect_stream(stream, to, node, &identity, config.clone()).await
        {
            let link = fogwire_link::spawn(established);
            tokio::select! {
                _ = link.closed() => {}
                () = stop.cancelled() => return,
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the flooders counted.
#[derive(Debug, Default)]
struct FloodCounts {
    attempts: AtomicU64,
    /// Answered with a RETRY.
    puzzles: AtomicU64,
    /// The most bits a RETRY asked.
    bits: AtomicU64,
}

/// Opens handshakes as fast as the node answers: the captured first
/// message, then whatever the node answers (a RETRY is counted, never
/// solved), then close.
async fn flood(
    sources: Vec<Ipv4Addr>,
    to: SocketAddr,
    message1: Arc<Vec<u8>>,
    counts: Arc<FloodCounts>,
    stop: CancellationToken,
) {
    let mut next = 0;
    let mut reply = [0u8; 4096];
    while !stop.is_cancelled() {
        next = (next + 1) % sources.len();
        let Ok(mut stream) = connect_from(sources[next], to).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        counts.attempts.fetch_add(1, Ordering::Relaxed);
        if stream.write_all(&message1).await.is_ok() {
            let read = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut reply)).await;
            if let Ok(Ok(read)) = read
                && let Some(Ok(puzzle)) = reply[..read].get(2..).and_then(Puzzle::decode_retry)
            {
                counts.puzzles.fetch_add(1, Ordering::Relaxed);
                counts
                    .bits
                    .fetch_max(u64::from(puzzle.bits), Ordering::Relaxed);
            }
        }
    }
}

/// One core's time to solve a puzzle of `bits` on average, in
/// milliseconds: 2^bits tries at the rate this machine checks them (one
/// puzzle's time varies too much to be the figure: tries are a geometric
/// draw).
fn solve_ms(bits: u8) -> f64 {
    const TRIES: u64 = 1 << 20;
    let mut challenge = [0u8; 16];
    (fogwire_env::os_random())(&mut challenge);
    // 32 bits: no nonce below TRIES is likely to pass, so all are tried.
    let puzzle = Puzzle {
        challenge,
        bits: 32,
    };
    let started = Instant::now();
    let passed = (0..TRIES).filter(|nonce| puzzle.check(*nonce)).count();
    let per_try = started.elapsed().as_secs_f64() / TRIES as f64;
    std::hint::black_box(passed);
    per_try * 2f64.powi(i32::from(bits)) * 1000.0
}

/// Times `fogwire <args>` against `home`; fails on a failed command.
fn timed(exe: &Path, home: &Path, args: &[&str]) -> anyhow::Result<f64> {
    let started = Instant::now();
    let output = cli(exe, home, args)?;
    if !output.status.success() {
        bail!(
            "fogwire {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

/// Measures one phase: peers linking, status and store add, then the
/// node's figures over `window`.
fn measure(
    exe: &Path,
    victim: &SoakNode,
    peers: &[SoakNode],
    scratch: &Path,
    counts: &FloodCounts,
    window: Duration,
) -> anyhow::Result<Phase> {
    let attempts = &counts.attempts;
    let puzzles_before = counts.puzzles.load(Ordering::Relaxed);
    let pid = victim.pid().context("the node is not running")?;
    let log = victim.home.join("node.log");
    let log_size = || std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let (cpu_before, log_before, attempts_before) = (
        cpu_seconds(pid),
        log_size(),
        attempts.load(Ordering::Relaxed),
    );
    let started = Instant::now();
    let mut phase = Phase::default();
    let (configured, newcomers) = peers.split_at(peers.len() / 2);
    for peer in configured {
        match timed(exe, &victim.home, &["connect", &peer.addr]) {
            Ok(ms) => phase.link_ms.push(ms),
            Err(error) => phase.link_failures.push(error.to_string()),
        }
    }
    for peer in newcomers {
        match timed(exe, &peer.home, &["connect", &victim.addr]) {
            Ok(ms) => phase.newcomer_ms.push(ms),
            Err(error) => phase.newcomer_failures.push(error.to_string()),
        }
    }
    for i in 0..5 {
        phase.status_ms.push(timed(exe, &victim.home, &["status"])?);
        let file = scratch.join(format!("add-{i}-{}", started.elapsed().as_nanos()));
        let mut data = vec![0u8; 64 * 1024];
        (fogwire_env::os_random())(&mut data);
        std::fs::write(&file, &data)?;
        phase.store_add_ms.push(timed(
            exe,
            &victim.home,
            &["store", "add", &file.to_string_lossy()],
        )?);
    }
    std::thread::sleep(window.saturating_sub(started.elapsed()));
    let elapsed = started.elapsed().as_secs_f64();
    phase.cpu_cores = (cpu_seconds(pid) - cpu_before) / elapsed;
    let attempted = attempts.load(Ordering::Relaxed) - attempts_before;
    phase.handshakes_per_sec = attempted as f64 / elapsed;
    if attempted > 0 {
        let puzzles = counts.puzzles.load(Ordering::Relaxed) - puzzles_before;
        phase.puzzle_share = puzzles as f64 / attempted as f64;
    }
    phase.log_bytes_per_sec = (log_size() - log_before) as f64 / elapsed;
    let figures: Figures = victim.figures().context("cannot read the node's figures")?;
    phase.rss_mib = figures.rss_kib as f64 / 1024.0;
    phase.open_files = figures.fds;
    let status = cli(exe, &victim.home, &["status", "--json"])?;
    if !status.status.success() {
        bail!(
            "fogwire status failed: {}",
            String::from_utf8_lossy(&status.stderr).trim()
        );
    }
    let status: serde_json::Value =
        serde_json::from_slice(&status.stdout).context("cannot read `fogwire status --json`")?;
    phase.links = status["links"].as_u64().unwrap_or_default();
    Ok(phase)
}

/// Where the attack goes.
#[derive(Debug, Clone)]
struct Plan {
    link_addr: SocketAddr,
    api_addr: SocketAddr,
    node_id: NodeId,
    /// A request for a blob, with the API token, for the stalled readers.
    blob_request: String,
}

/// The CPU the attacker is pinned to; the node, its peers and the
/// commands timed get the others. On one machine the attacker's CPU (its
/// puzzle solving above all) would otherwise starve the node it attacks,
/// and the figures would measure the attacker, not the node.
const ATTACKER_CPU: usize = 1;

/// Runs the attack until `stop`: `sizes` are the idle sockets,
/// identities, flooders, idle API connections and stalled readers.
async fn attack(
    plan: Plan,
    [
        idle_sockets,
        identities,
        flooders,
        api_idle,
        stalled_readers,
    ]: [usize; 5],
    counts: Arc<FloodCounts>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    let Plan {
        link_addr,
        api_addr,
        node_id,
        blob_request,
    } = plan;
    for n in 0..idle_sockets {
        tasks.spawn(hold_open(attacker(1, n, 50), link_addr, b"", stop.clone()));
    }
    for n in 0..identities {
        tasks.spawn(hold_identity(
            attacker(2, n, 16),
            link_addr,
            node_id,
            stop.clone(),
        ));
    }
    let message1 = {
        let identity = LinkIdentity::generate(Arc::new(Keypair::generate()?))?;
        let mut handshake = Handshake::initiator(
            &identity,
            Arc::new(LinkConfig::default()),
            node_id,
            Instant::now(),
        )?;
        let mut bytes = Vec::new();
        handshake.take_transmit(&mut bytes);
        Arc::new(bytes)
    };
    for f in 0..flooders {
        let sources = (0..16).map(|i| attacker(3, f * 16 + i, 1)).collect();
        tasks.spawn(flood(
            sources,
            link_addr,
            message1.clone(),
            counts.clone(),
            stop.clone(),
        ));
    }
    for n in 0..api_idle {
        tasks.spawn(hold_open(attacker(4, n, 100), api_addr, b"", stop.clone()));
    }
    let request: &'static [u8] = Box::leak(blob_request.into_bytes().into_boxed_slice());
    for n in 0..stalled_readers {
        tasks.spawn(hold_open(
            attacker(5, n, 100),
            api_addr,
            request,
            stop.clone(),
        ));
    }
    stop.cancelled().await;
    tasks.abort_all();
    Ok(())
}

/// Starts the attack (`sizes` as [`attack`] takes them) on a thread of
/// its own, pinned to [`ATTACKER_CPU`] if `pinned`, until `stop`.
fn start_attacker(
    plan: Plan,
    sizes: [usize; 5],
    counts: Arc<FloodCounts>,
    stop: CancellationToken,
    pinned: bool,
) -> std::thread::JoinHandle<anyhow::Result<()>> {
    std::thread::spawn(move || -> anyhow::Result<()> {
        if pinned {
            pin(Task::Thread(self_thread()?), ATTACKER_CPU)?;
        }
        // The attacker's own runtime: its tasks, and the threads that
        // solve the node's puzzles, run where it was pinned.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(attack(plan, sizes, counts, stop))
    })
}

fn join(attacker: std::thread::JoinHandle<anyhow::Result<()>>) -> anyhow::Result<()> {
    attacker
        .join()
        .map_err(|_| anyhow::anyhow!("the attacker's thread panicked"))?
}

/// What [`pin`] pins.
enum Task {
    Whole(u32),
    Thread(String),
}

/// The calling thread's id (`/proc/thread-self` names it).
fn self_thread() -> anyhow::Result<String> {
    let link = std::fs::read_link("/proc/thread-self").context("cannot read /proc/thread-self")?;
    link.file_name()
        .map(|tid| tid.to_string_lossy().into_owned())
        .context("no thread id in /proc/thread-self")
}

/// Pins `task` — a process with every thread it has (`Whole`), or one
/// thread — to CPUs `cpus` with `taskset`; threads it starts later
/// inherit that.
fn pin(task: Task, cpus: impl std::fmt::Display) -> anyhow::Result<()> {
    let cpus = cpus.to_string();
    let mut command = std::process::Command::new("taskset");
    let task = match task {
        Task::Whole(pid) => {
            command.arg("--all-tasks");
            pid.to_string()
        }
        Task::Thread(tid) => tid,
    };
    let output = command
        .args(["--cpu-list", "--pid", &cpus, &task])
        .output()
        .context("cannot run taskset (util-linux) to pin the attacker apart")?;
    if !output.status.success() {
        bail!(
            "taskset could not pin {task} to CPU {cpus}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

pub async fn run(args: AttackArgs) -> anyhow::Result<()> {
    // Thousands of sockets: this process needs the files for them.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    // The node, its peers and the timed commands (children of this
    // process, which inherit its CPUs) on every CPU but the attacker's.
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let pinned = cpus > ATTACKER_CPU;
    if pinned {
        let others = (0..cpus).filter(|cpu| *cpu != ATTACKER_CPU);
        let others: Vec<String> = others.map(|cpu| cpu.to_string()).collect();
        pin(Task::Whole(std::process::id()), others.join(","))?;
        eprintln!(
            "the attacker runs on CPU {ATTACKER_CPU}; the node, its peers and the commands timed on CPU {}",
            others.join(",")
        );
    } else {
        eprintln!("one CPU: the attacker shares it with the node it attacks");
    }
    let exe = std::env::current_exe().context("cannot find this program to start nodes")?;
    let dir = tempfile::tempdir()?;
    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(&scratch)?;
    eprintln!("starting the node under test and 8 peers…");
    let (victim, peers, blob) = {
        let exe = exe.clone();
        let root = dir.path().to_owned();
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let mut victim = SoakNode::init(&exe, root.join("victim"), "")?;
            victim.start_with_log(&exe, "info")?;
            let mut peers = Vec::new();
            for i in 0..8 {
                let mut peer = SoakNode::init(&exe, root.join(format!("peer{i}")), "")?;
                peer.start(&exe)?;
                peers.push(peer);
            }
            // A blob for the stalled readers to read.
            let file = root.join("blob");
            let mut data = vec![0u8; 8 * 1024 * 1024];
            (fogwire_env::os_random())(&mut data);
            std::fs::write(&file, &data)?;
            timed(
                &exe,
                &victim.home,
                &["store", "add", &file.to_string_lossy()],
            )?;
            Ok((victim, peers, blake3::hash(&data).to_hex().to_string()))
        })
        .await??
    };
    let link_addr: SocketAddr = victim
        .addr
        .split_once('@')
        .map(|(_, addr)| addr)
        .unwrap_or_default()
        .parse()
        .context("the node's link address")?;
    let api_addr: SocketAddr = std::fs::read_to_string(victim.home.join("data/api.addr"))?
        .trim()
        .parse()?;
    let token = std::fs::read_to_string(victim.home.join("data/api.token"))?;
    let node_id: NodeId = victim.id.parse().context("the node's id")?;
    let counts = Arc::new(FloodCounts::default());
    let window = Duration::from_secs(15);

    eprintln!("measuring with no attack…");
    let baseline = {
        let (exe, scratch, counts) = (exe.clone(), scratch.clone(), counts.clone());
        let victim = Arc::new(victim);
        let peers = Arc::new(peers);
        let (v, p) = (victim.clone(), peers.clone());
        let phase = tokio::task::spawn_blocking(move || {
            measure(&exe, &v, &p[..4], &scratch, &counts, window)
        })
        .await??;
        (phase, victim, peers)
    };
    let (baseline, victim, peers) = baseline;

    eprintln!(
        "attacking: {} idle sockets, {} self-made identities, {} handshake flooders, {} idle API \
         connections, {} stalled readers…",
        args.idle_sockets, args.identities, args.flooders, args.api_idle, args.stalled_readers
    );
    let stop = CancellationToken::new();
    let plan = Plan {
        link_addr,
        api_addr,
        node_id,
        blob_request: format!(
            "GET /blobs/{blob} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
            token.trim()
        ),
    };
    let sizes = [
        args.idle_sockets,
        args.identities,
        args.flooders,
        args.api_idle,
        args.stalled_readers,
    ];
    let attacker = start_attacker(plan.clone(), sizes, counts.clone(), stop.clone(), pinned);
    // Let the attack reach its full strength.
    tokio::time::sleep(Duration::from_secs(10)).await;
    eprintln!("measuring under attack…");
    let attack = {
        let (exe, scratch, counts) = (exe.clone(), scratch.clone(), counts.clone());
        let (v, p) = (victim.clone(), peers.clone());
        tokio::task::spawn_blocking(move || measure(&exe, &v, &p[4..], &scratch, &counts, window))
            .await?
    };
    stop.cancel();
    join(attacker)?;
    let attack = attack?;

    // The flood alone, for what it costs the node per first message: in
    // the combined attack the identities' puzzle solving takes the
    // attacker's CPU from its flooders.
    eprintln!("measuring a handshake flood alone…");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stop = CancellationToken::new();
    let flood_sizes = [0, 0, args.flooders, 0, 0];
    let attacker = start_attacker(plan, flood_sizes, counts.clone(), stop.clone(), pinned);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let flood = {
        let (exe, scratch, counts) = (exe.clone(), scratch.clone(), counts.clone());
        let v = victim.clone();
        tokio::task::spawn_blocking(move || measure(&exe, &v, &[], &scratch, &counts, window))
            .await?
    };
    stop.cancel();
    join(attacker)?;
    let flood = flood?;

    let extra_cpu = (flood.cpu_cores - baseline.cpu_cores).max(0.0);
    let per_thousand = if flood.handshakes_per_sec > 0.0 {
        extra_cpu * 100.0 / (flood.handshakes_per_sec / 1000.0)
    } else {
        f64::NAN
    };
    // What a flooder that solved the puzzles would pay per message 2,
    // measured now, with the attack stopped.
    let puzzle_bits = counts.bits.load(Ordering::Relaxed).min(32) as u8;
    let solve_ms = if puzzle_bits > 0 {
        tokio::task::spawn_blocking(move || solve_ms(puzzle_bits)).await?
    } else {
        f64::NAN
    };
    let node_ms_per_attempt = if flood.handshakes_per_sec > 0.0 {
        extra_cpu * 1000.0 / flood.handshakes_per_sec
    } else {
        f64::NAN
    };
    let goals = [
        ("a configured peer links", max(&attack.link_ms), 2000.0),
        ("fogwire status", max(&attack.status_ms), 1000.0),
        ("fogwire store add", max(&attack.store_add_ms), 1000.0),
    ];
    let goals_met = attack.link_failures.is_empty()
        && baseline.link_failures.is_empty()
        && goals.iter().all(|(_, value, goal)| value <= goal);
    let report = Report {
        baseline: baseline.clone(),
        attack: attack.clone(),
        flood: flood.clone(),
        cpu_percent_per_1000_handshakes: per_thousand,
        puzzle_bits,
        solve_ms,
        node_ms_per_attempt,
        goals_met,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let ms = |values: &[f64]| format!("{:.0}/{:.0} ms", median(values), max(values));
        // Under attack beside no attack, for the figures measured in both.
        let ratio = |base: f64, under: f64| {
            if base > 0.0 && under.is_finite() {
                format!("{:.2}×", under / base)
            } else {
                String::new()
            }
        };
        let times = |base: &[f64], under: &[f64]| ratio(median(base), median(under));
        let linked = |phase: &Phase| {
            format!(
                "{} of {}",
                phase.newcomer_ms.len(),
                phase.newcomer_ms.len() + phase.newcomer_failures.len()
            )
        };
        let (b, a, f) = (&baseline, &attack, &flood);
        let rows: [[String; 5]; 14] = [
            [
                "a configured peer links".into(),
                ms(&b.link_ms),
                ms(&a.link_ms),
                times(&b.link_ms, &a.link_ms),
                "≤ 2000 ms".into(),
            ],
            [
                "a new peer dialing it links".into(),
                linked(b),
                linked(a),
                String::new(),
                "(reported)".into(),
            ],
            [
                "fogwire status".into(),
                ms(&b.status_ms),
                ms(&a.status_ms),
                times(&b.status_ms, &a.status_ms),
                "≤ 1000 ms".into(),
            ],
            [
                "fogwire store add".into(),
                ms(&b.store_add_ms),
                ms(&a.store_add_ms),
                times(&b.store_add_ms, &a.store_add_ms),
                "≤ 1000 ms".into(),
            ],
            [
                "handshake attempts/s (combined; flood alone)".into(),
                format!("{:.0}", b.handshakes_per_sec),
                format!("{:.0}; {:.0}", a.handshakes_per_sec, f.handshakes_per_sec),
                String::new(),
                String::new(),
            ],
            [
                "first messages answered with a puzzle".into(),
                format!("{:.0}%", b.puzzle_share * 100.0),
                format!(
                    "{:.0}%; {:.0}%",
                    a.puzzle_share * 100.0,
                    f.puzzle_share * 100.0
                ),
                String::new(),
                String::new(),
            ],
            [
                format!("a flooder solving ({puzzle_bits} bits), per message 2 on average"),
                String::new(),
                format!("{solve_ms:.2} ms"),
                ratio(node_ms_per_attempt, solve_ms),
                "÷ node per attempt".into(),
            ],
            [
                "node CPU per first message (flood alone)".into(),
                String::new(),
                format!("{node_ms_per_attempt:.3} ms"),
                String::new(),
                String::new(),
            ],
            [
                "node CPU, cores (combined; flood alone)".into(),
                format!("{:.2}", b.cpu_cores),
                format!("{:.2}; {:.2}", a.cpu_cores, f.cpu_cores),
                String::new(),
                String::new(),
            ],
            [
                "node CPU per 1,000 handshakes/s (flood alone)".into(),
                String::new(),
                format!("{per_thousand:.1}% core"),
                String::new(),
                String::new(),
            ],
            [
                "links the node holds".into(),
                b.links.to_string(),
                a.links.to_string(),
                String::new(),
                String::new(),
            ],
            [
                "node RSS".into(),
                format!("{:.0} MiB", b.rss_mib),
                format!("{:.0} MiB", a.rss_mib),
                ratio(b.rss_mib, a.rss_mib),
                String::new(),
            ],
            [
                "node open files".into(),
                b.open_files.to_string(),
                a.open_files.to_string(),
                ratio(b.open_files as f64, a.open_files as f64),
                String::new(),
            ],
            [
                "node log bytes/s".into(),
                format!("{:.0}", b.log_bytes_per_sec),
                format!("{:.0}", a.log_bytes_per_sec),
                ratio(b.log_bytes_per_sec, a.log_bytes_per_sec),
                String::new(),
            ],
        ];
        let mut table = Table::new(
            &["", "no attack", "under attack", "ratio", "goal"],
            &[1, 2, 3],
        );
        for row in rows {
            table.row(row);
        }
        println!("(times: median/max; ratio: under attack ÷ no attack)");
        table.print();
        for failure in b.link_failures.iter().chain(&a.link_failures) {
            println!("  a configured peer could not link: {failure}");
        }
        for failure in b.newcomer_failures.iter().chain(&a.newcomer_failures) {
            println!("  a new peer could not link: {failure}");
        }
    }
    drop(victim);
    drop(peers);
    if !goals_met {
        bail!("a goal was missed under attack (see above)");
    }
    Ok(())
}
