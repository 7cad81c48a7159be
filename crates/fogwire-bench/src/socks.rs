//! The SOCKS proxy and exits on loopback: one download through the proxy
//! over a 1-hop and a 3-hop route, beside the same download over a bare
//! TCP connection; and the time to the first byte of a new connection
//! through the proxy, beside a direct connection's plus the route's round
//! trip (the goal: within it plus 2 ms).
//!
//! Four nodes in a line, N0–N1–N2–N3, each on its own one-thread runtime
//! (as in `routing`); N1 and N3 serve as exits allowed to reach this
//! machine's loopback; N0 runs two proxies, one through N1 (1 hop) and
//! one through N3 (3 hops). The origin, on a runtime of its own, writes a
//! byte at once on each connection (the first byte timed) and, when asked,
//! as fast as it can until the reader leaves (the download); the client,
//! on another, is what curl would be.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fogwire_exit::{Exit, ExitConfig, Outbound, Proxy, ProxyConfig};
use fogwire_exit_proto::Policy;
use fogwire_exit_proto::policy::parse_network;
use fogwire_exit_proto::wire::Destination;
use fogwire_identity::Keypair;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::link::{BenchError, median, node_runtime, on};
use crate::routing::{Line, bench_error};

/// A pause after each download, for what is still in flight to arrive.
const DRAIN: Duration = Duration::from_millis(500);

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// Time each download is timed for.
    pub duration: Duration,
    /// Rounds of every measurement, interleaved.
    pub rounds: usize,
    /// New connections timed to their first byte, per path and round.
    pub connects: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(2),
            rounds: 3,
            connects: 50,
        }
    }
}

/// One way of reaching the origin.
#[derive(Debug, Clone, Serialize)]
pub struct PathResult {
    /// "direct TCP", "SOCKS, 1 hop", "SOCKS, 3 hops".
    pub path: String,
    pub hops: usize,
    /// Median of the rounds: bytes per second the client read.
    pub bytes_per_sec: f64,
    /// Beside the direct TCP download of the same run.
    pub to_direct: f64,
    /// Median time from the start of a new connection to its first byte.
    pub first_byte_ms: f64,
    /// Median round trip of the route (none for direct TCP).
    pub route_rtt_ms: Option<f64>,
    /// The goal: direct first byte + route round trip + 2 ms.
    pub first_byte_goal_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub rounds: usize,
    pub paths: Vec<PathResult>,
}

/// Which step is being measured, for progress output.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    Setup,
    Download { round: usize, hops: usize },
    FirstBytes { round: usize, hops: usize },
}

/// The origin: a byte at once (a banner, as SSH or SMTP servers send);
/// then, if the client asks for a download (`D`), 64 KiB writes until the
/// reader goes. A connection timed to its first byte asks for nothing, so
/// it leaves no tail in the relays' queues to slow the next one.
async fn origin() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        let block = vec![0x5a; 64 * 1024];
        while let Ok((mut socket, _)) = listener.accept().await {
            let block = block.clone();
            tokio::spawn(async move {
                let _ = socket.set_nodelay(true);
                if socket.write_all(&block[..1]).await.is_err() {
                    return;
                }
                let mut ask = [0u8; 1];
                if socket.read_exact(&mut ask).await.is_err() || ask[0] != b'D' {
                    return;
                }
                while socket.write_all(&block).await.is_ok() {}
            });
        }
    });
    Ok(address)
}

/// A connection to the origin: directly, or through a proxy.
async fn open(origin: SocketAddr, proxy: Option<SocketAddr>) -> std::io::Result<TcpStream> {
    match proxy {
        None => {
            let socket = TcpStream::connect(origin).await?;
            socket.set_nodelay(true)?;
            Ok(socket)
        }
        Some(proxy) => {
            let destination = Destination::Address(origin.ip());
            fogwire_exit::client::connect(proxy, &destination, origin.port()).await
        }
    }
}

/// Time from the start of a connection to its first byte.
async fn first_byte(origin: SocketAddr, proxy: Option<SocketAddr>) -> std::io::Result<Duration> {
    let started = Instant::now();
    let mut socket = open(origin, proxy).await?;
    let mut byte = [0u8; 1];
    socket.read_exact(&mut byte).await?;
    Ok(started.elapsed())
}

/// Bytes per second read from one connection for `duration`.
async fn download(
    origin: SocketAddr,
    proxy: Option<SocketAddr>,
    duration: Duration,
) -> std::io::Result<f64> {
    let mut socket = open(origin, proxy).await?;
    let mut buffer = vec![0u8; 256 * 1024];
    socket.read_exact(&mut buffer[..1]).await?;
    socket.write_all(b"D").await?;
    let started = Instant::now();
    let mut bytes = 0u64;
    while started.elapsed() < duration {
        let read = socket.read(&mut buffer).await?;
        if read == 0 {
            return Err(std::io::Error::other("the origin closed early"));
        }
        bytes += read as u64;
    }
    Ok(bytes as f64 / started.elapsed().as_secs_f64())
}

fn exit_config() -> ExitConfig {
    ExitConfig {
        policy: Policy {
            allow: parse_network("127.0.0.0/8").into_iter().collect(),
            ..Policy::default()
        },
        ..ExitConfig::default()
    }
}

/// Runs every measurement; `progress` is told before each starts. Must be
/// called outside any tokio runtime.
pub fn run(options: &Options, mut progress: impl FnMut(Step)) -> Result<Report, BenchError> {
    let rounds = options.rounds.max(1);
    progress(Step::Setup);
    let exits: Vec<Option<Exit>> = (0..4)
        .map(|index| (index == 1 || index == 3).then(|| Exit::new(exit_config())))
        .collect();
    let line = Line::start_with(4, |index, routing_options| {
        if let Some(exit) = &exits[index] {
            routing_options
                .services
                .push(fogwire_exit::SERVICE.to_owned());
            routing_options.offers.push(exit.offer());
        }
    })?;
    for (index, exit) in exits.iter().enumerate() {
        if let Some(exit) = exit.clone() {
            let routing = line.routings[index].clone();
            on(&line.runtimes[index], async move {
                exit.serve_on(&routing, None)
            })?
            .map_err(bench_error)?;
        }
    }
    line.converge()?;
    let origin_runtime = node_runtime("bench-origin")?;
    let origin = on(&origin_runtime, origin())??;
    let client = node_runtime("bench-client")?;
    // The proxies, and their routes opened (by a first connection each).
    // N0's key is the line's (seeded by index).
    let routing = line.routings[0].clone();
    let outbound = on(&line.runtimes[0], async move {
        Outbound::start(Arc::new(Keypair::from_seed(&[10; 32])), routing)
    })?
    .map_err(bench_error)?;
    let mut proxies = Vec::new();
    for hops in [1usize, 3] {
        let config = ProxyConfig {
            exit: Some(line.routings[hops].node_id()),
            min_hops: hops,
            ..ProxyConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)))
        };
        let outbound = outbound.clone();
        let proxy = on(&line.runtimes[0], async move {
            Proxy::start(config, outbound).await
        })?
        .map_err(bench_error)?;
        let address = proxy.local_addr();
        on(
            &client,
            async move { first_byte(origin, Some(address)).await },
        )??;
        proxies.push((hops, proxy));
    }
    let paths: Vec<(usize, Option<SocketAddr>)> = std::iter::once((0, None))
        .chain(
            proxies
                .iter()
                .map(|(hops, proxy)| (*hops, Some(proxy.local_addr()))),
        )
        .collect();
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    let mut firsts: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    let mut rtts: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    for round in 0..rounds {
        for (index, (hops, proxy)) in paths.iter().copied().enumerate() {
            // First bytes before the download: a download's tail, still
            // draining from the relays' queues after its reader left,
            // would delay them.
            progress(Step::FirstBytes { round, hops });
            for _ in 0..options.connects.max(1) {
                let took = on(&client, first_byte(origin, proxy))??;
                firsts[index].push(took.as_secs_f64() * 1e3);
            }
            progress(Step::Download { round, hops });
            let duration = options.duration;
            rates[index].push(on(&client, download(origin, proxy, duration))??);
            // Let the tail drain before the next path is measured.
            std::thread::sleep(DRAIN);
            if let Some((_, proxy)) = proxies.iter().find(|(h, _)| *h == hops) {
                let route = proxy
                    .routes()
                    .first()
                    .map(|(_, _, _, route)| *route)
                    .ok_or_else(|| BenchError::Link("the proxy holds no route".into()))?;
                let routing = line.routings[0].clone();
                for _ in 0..10 {
                    let rtt = on(&line.runtimes[0], {
                        let routing = routing.clone();
                        async move { routing.ping(route, Duration::from_secs(2)).await }
                    })?
                    .map_err(bench_error)?;
                    rtts[index].push(rtt.as_secs_f64() * 1e3);
                }
            }
        }
    }
    let direct_rate = median(&rates[0]);
    let direct_first = median(&firsts[0]);
    let results = paths
        .iter()
        .enumerate()
        .map(|(index, (hops, proxy))| {
            let rtt = proxy.map(|_| median(&rtts[index]));
            PathResult {
                path: match hops {
                    0 => "direct TCP".to_owned(),
                    1 => "SOCKS, 1 hop".to_owned(),
                    hops => format!("SOCKS, {hops} hops"),
                },
                hops: *hops,
                bytes_per_sec: median(&rates[index]),
                to_direct: median(&rates[index]) / direct_rate,
                first_byte_ms: median(&firsts[index]),
                route_rtt_ms: rtt,
                first_byte_goal_ms: rtt.map(|rtt| direct_first + rtt + 2.0),
            }
        })
        .collect();
    for (_, proxy) in &proxies {
        proxy.stop();
    }
    drop(proxies);
    line.shutdown();
    drop(origin_runtime);
    Ok(Report {
        rounds,
        paths: results,
    })
}
