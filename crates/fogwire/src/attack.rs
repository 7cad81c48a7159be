//! `fogwire bench attack`: one real `fogwire node` process under a
//! combined attack played from this process over real sockets — idle
//! sockets on its link port, self-made identities holding links, a flood
//! of handshake openers (one captured first message replayed, so the
//! attacker does no cryptography), idle control-API connections and
//! stalled blob readers — beside the same figures with no attack, in the
//! same run: how long a peer takes to link, `fogwire status` and
//! `fogwire store add` as a user runs them, the node's CPU per 1,000
//! handshake attempts a second, its memory and open files, and its log
//! bytes a second.
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
    rss_mib: f64,
    open_files: u64,
    log_bytes_per_sec: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    baseline: Phase,
    attack: Phase,
    /// The node's CPU (in % of a core) per 1,000 handshake attempts a
    /// second, beyond its CPU with no attack.
    cpu_percent_per_1000_handshakes: f64,
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

/// Opens handshakes as fast as the node answers: the captured first
/// message, then whatever the node answers, then close.
async fn flood(
    sources: Vec<Ipv4Addr>,
    to: SocketAddr,
    message1: Arc<Vec<u8>>,
    attempts: Arc<AtomicU64>,
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
        attempts.fetch_add(1, Ordering::Relaxed);
        if stream.write_all(&message1).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut reply)).await;
        }
    }
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
    attempts: &AtomicU64,
    window: Duration,
) -> anyhow::Result<Phase> {
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
    phase.handshakes_per_sec =
        (attempts.load(Ordering::Relaxed) - attempts_before) as f64 / elapsed;
    phase.log_bytes_per_sec = (log_size() - log_before) as f64 / elapsed;
    let figures: Figures = victim.figures().context("cannot read the node's figures")?;
    phase.rss_mib = figures.rss_kib as f64 / 1024.0;
    phase.open_files = figures.fds;
    Ok(phase)
}

pub async fn run(args: AttackArgs) -> anyhow::Result<()> {
    // Thousands of sockets: this process needs the files for them.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
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
    let attempts = Arc::new(AtomicU64::new(0));
    let window = Duration::from_secs(15);

    eprintln!("measuring with no attack…");
    let baseline = {
        let (exe, scratch, attempts) = (exe.clone(), scratch.clone(), attempts.clone());
        let victim = Arc::new(victim);
        let peers = Arc::new(peers);
        let (v, p) = (victim.clone(), peers.clone());
        let phase = tokio::task::spawn_blocking(move || {
            measure(&exe, &v, &p[..4], &scratch, &attempts, window)
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
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..args.idle_sockets {
        tasks.spawn(hold_open(attacker(1, n, 50), link_addr, b"", stop.clone()));
    }
    for n in 0..args.identities {
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
    for f in 0..args.flooders {
        let sources = (0..16).map(|i| attacker(3, f * 16 + i, 1)).collect();
        tasks.spawn(flood(
            sources,
            link_addr,
            message1.clone(),
            attempts.clone(),
            stop.clone(),
        ));
    }
    for n in 0..args.api_idle {
        tasks.spawn(hold_open(attacker(4, n, 100), api_addr, b"", stop.clone()));
    }
    let request: &'static [u8] = Box::leak(
        format!(
            "GET /blobs/{blob} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
            token.trim()
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    for n in 0..args.stalled_readers {
        tasks.spawn(hold_open(
            attacker(5, n, 100),
            api_addr,
            request,
            stop.clone(),
        ));
    }
    // Let the attack reach its full strength.
    tokio::time::sleep(Duration::from_secs(10)).await;
    eprintln!("measuring under attack…");
    let attack = {
        let (exe, scratch, attempts) = (exe.clone(), scratch.clone(), attempts.clone());
        let (v, p) = (victim.clone(), peers.clone());
        tokio::task::spawn_blocking(move || measure(&exe, &v, &p[4..], &scratch, &attempts, window))
            .await?
    };
    stop.cancel();
    tasks.abort_all();
    let attack = attack?;

    let extra_cpu = (attack.cpu_cores - baseline.cpu_cores).max(0.0);
    let per_thousand = if attack.handshakes_per_sec > 0.0 {
        extra_cpu * 100.0 / (attack.handshakes_per_sec / 1000.0)
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
        cpu_percent_per_1000_handshakes: per_thousand,
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
        let (b, a) = (&baseline, &attack);
        let rows: [[String; 5]; 10] = [
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
                "handshake attempts/s".into(),
                format!("{:.0}", b.handshakes_per_sec),
                format!("{:.0}", a.handshakes_per_sec),
                String::new(),
                String::new(),
            ],
            [
                "node CPU (cores)".into(),
                format!("{:.2}", b.cpu_cores),
                format!("{:.2}", a.cpu_cores),
                String::new(),
                String::new(),
            ],
            [
                "node CPU per 1,000 handshakes/s".into(),
                String::new(),
                format!("{per_thousand:.1}% core"),
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
