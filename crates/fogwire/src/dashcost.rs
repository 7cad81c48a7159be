//! `fogwire bench dashboard`: what open dashboards cost a node that
//! relays. Four real `fogwire node` processes in a line, one cluster;
//! the first streams to the last's sink over the 3-hop route, timed
//! with no dashboard open and with two open on the first node (its board
//! page and its box page, which asks every other board for its figures
//! each second), in alternating rounds of the same run. The two readers
//! read every event, as a browser does.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fogwire_client::Client;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::soak::SoakNode;

#[derive(Debug, clap::Args)]
pub struct DashboardArgs {
    /// Bytes streamed over the route per round.
    #[arg(long, default_value_t = 512 * 1024 * 1024)]
    pub bytes: u64,
    /// Rounds of each case, alternating; medians are reported.
    #[arg(long, default_value_t = 9)]
    pub rounds: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct DashboardReport {
    pub bytes: u64,
    pub rounds: usize,
    /// The stream over 3 hops with no dashboard open (bytes per second).
    pub without_bytes_per_sec: f64,
    /// With two open on the streaming node.
    pub with_bytes_per_sec: f64,
    /// with / without.
    pub ratio: f64,
    /// The least and greatest ratio of one round's pair (the noise).
    pub ratio_min: f64,
    pub ratio_max: f64,
    /// What the two dashboards received, bytes per second together.
    pub dashboard_bytes_per_sec: f64,
}

/// One reader of a dashboard's event stream: counts what it reads.
struct Reader {
    task: tokio::task::JoinHandle<()>,
    read: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

async fn open_dashboard(api: &str, token: &str, view: &str) -> anyhow::Result<Reader> {
    let mut stream = tokio::net::TcpStream::connect(api).await?;
    stream
        .write_all(
            format!(
                "GET /dash/events?view={view} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \
                 {token}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await?;
    if &head != b"HTTP/1.1 200" {
        bail!(
            "the dashboard's stream was refused: {}",
            String::from_utf8_lossy(&head)
        );
    }
    let read = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = read.clone();
    let task = tokio::spawn(async move {
        let mut buffer = vec![0u8; 64 * 1024];
        while let Ok(n) = stream.read(&mut buffer).await {
            if n == 0 {
                break;
            }
            counter.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        }
    });
    Ok(Reader { task, read })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

async fn stream_once(client: &Client, to: &str, bytes: u64) -> anyhow::Result<f64> {
    let request = fogwire_api::RouteRequest {
        node: to.to_owned(),
        hops: Some(3),
        min_hops: None,
        max_hops: None,
        avoid: Vec::new(),
        exit: None,
        alternatives: None,
        count: None,
        interval_ms: None,
        bytes: Some(bytes),
    };
    let mut report = None;
    let mut failure = None;
    client
        .send(&request, |line| match line {
            fogwire_api::SendLine::Result(result) => report = Some(result),
            fogwire_api::SendLine::Error(error) => failure = Some(error),
            _ => {}
        })
        .await?;
    if let Some(error) = failure {
        bail!("the stream failed: {error}");
    }
    let report = report.context("the stream ended without a result")?;
    if !report.intact {
        bail!("the sink did not receive what was sent");
    }
    Ok(report.bytes as f64 / report.secs.max(1e-9))
}

pub async fn run(args: DashboardArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find this program to start nodes")?;
    let scratch = tempfile::Builder::new()
        .prefix("fogwire-bench-dashboard-")
        .tempdir()?;
    let report = measure(&exe, scratch.path(), &args).await?;
    if args.json {
        return crate::control::print_json(&report);
    }
    let mib = |rate: f64| rate / (1024.0 * 1024.0);
    println!(
        "3-hop stream, no dashboard open     {:>9.1} MiB/s   (baseline)",
        mib(report.without_bytes_per_sec)
    );
    println!(
        "3-hop stream, two dashboards open   {:>9.1} MiB/s   ×{:.3} of the baseline (rounds: ×{:.3}–×{:.3})",
        mib(report.with_bytes_per_sec),
        report.ratio,
        report.ratio_min,
        report.ratio_max
    );
    println!(
        "the two dashboards received         {:>9.1} KiB/s   ({} rounds of {} each, medians)",
        report.dashboard_bytes_per_sec / 1024.0,
        report.rounds,
        crate::output::format_bytes(report.bytes)
    );
    Ok(())
}

async fn measure(
    exe: &Path,
    scratch: &Path,
    args: &DashboardArgs,
) -> anyhow::Result<DashboardReport> {
    eprintln!("starting four nodes in a line, one cluster…");
    let mut nodes = Vec::new();
    for index in 0..4 {
        let mut node = SoakNode::init(exe, scratch.join(format!("n{index}")), "")?;
        node.start(exe)?;
        nodes.push(node);
    }
    let clients: Vec<Client> = nodes
        .iter()
        .map(|node| crate::control::client(&node.home))
        .collect::<anyhow::Result<_>>()?;
    for index in 1..4 {
        clients[index].connect(&nodes[index - 1].addr).await?;
    }
    let created = clients[0].cluster_init().await?;
    for client in &clients[1..] {
        client.cluster_join(&created.join_code).await?;
    }
    let far = nodes[3].id.clone();
    let started = Instant::now();
    loop {
        let cluster = clients[0].cluster().await?;
        let ready = cluster.members.len() == 4
            && cluster.members.iter().all(|member| member.state == "alive")
            && stream_once(&clients[0], &far, 1024 * 1024).await.is_ok();
        if ready {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("the four nodes did not form a cluster and a 3-hop route within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let api = std::fs::read_to_string(nodes[0].home.join("data/api.addr"))?;
    let token = std::fs::read_to_string(nodes[0].home.join("data/api.token"))?;
    let (mut without, mut with, mut received) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds.max(1) {
        eprintln!("round {}: no dashboard open", round + 1);
        without.push(stream_once(&clients[0], &far, args.bytes).await?);
        eprintln!("round {}: two dashboards open", round + 1);
        let readers = [
            open_dashboard(api.trim(), token.trim(), "board").await?,
            open_dashboard(api.trim(), token.trim(), "box").await?,
        ];
        // Let the box page's asking for the other boards begin.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let before: u64 = readers
            .iter()
            .map(|reader| reader.read.load(std::sync::atomic::Ordering::Relaxed))
            .sum();
        let timed = Instant::now();
        with.push(stream_once(&clients[0], &far, args.bytes).await?);
        let after: u64 = readers
            .iter()
            .map(|reader| reader.read.load(std::sync::atomic::Ordering::Relaxed))
            .sum();
        received.push((after - before) as f64 / timed.elapsed().as_secs_f64());
        for reader in readers {
            reader.task.abort();
        }
    }
    let ratios: Vec<f64> = with
        .iter()
        .zip(&without)
        .map(|(with, without)| with / without.max(1e-9))
        .collect();
    let ratio_min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let ratio_max = ratios.iter().copied().fold(0.0, f64::max);
    let without = median(without);
    let with = median(with);
    drop(nodes);
    Ok(DashboardReport {
        bytes: args.bytes,
        rounds: args.rounds.max(1),
        without_bytes_per_sec: without,
        with_bytes_per_sec: with,
        ratio: with / without.max(1e-9),
        ratio_min,
        ratio_max,
        dashboard_bytes_per_sec: median(received),
    })
}
