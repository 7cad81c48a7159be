//! Routing commands: the known graph, paths, routes, pings, transfers.

use std::path::Path;

use anyhow::bail;
use fogwire_api::{RouteRequest, RouteStatus, SendLine};

use crate::control::{ReadArgs, client, print_json};
use crate::output::{Table, format_age_ms, format_bytes, progress_bar, short};

/// Where a route may go: hop bounds, nodes to avoid, a required exit.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PathArgs {
    /// Exactly this many links (sets --min-hops and --max-hops).
    #[arg(long, value_name = "N")]
    hops: Option<usize>,
    /// At least this many links (1: a direct link will do).
    #[arg(long, value_name = "N")]
    min_hops: Option<usize>,
    /// At most this many links (up to 8).
    #[arg(long, value_name = "N")]
    max_hops: Option<usize>,
    /// A node the path must not pass through (repeatable).
    #[arg(long, value_name = "NODE")]
    avoid: Vec<String>,
    /// The node the path must reach the destination from.
    #[arg(long, value_name = "NODE")]
    exit: Option<String>,
}

impl PathArgs {
    fn request(&self, node: &str) -> RouteRequest {
        RouteRequest {
            node: node.to_owned(),
            hops: self.hops,
            min_hops: self.min_hops,
            max_hops: self.max_hops,
            avoid: self.avoid.clone(),
            exit: self.exit.clone(),
            ..RouteRequest::default()
        }
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Compute the best path to a node from this node's graph, without
    /// setting anything up.
    ///
    /// NODE is a node id, or the start of one that names a single known
    /// node (see `fogwire nodes`).
    Find(FindArgs),
    /// List the routes this node opened (with bytes carried, each way) and
    /// the routes it relays for others.
    List(ReadArgs),
    /// Set up a route to a node and keep it up (repairing it when a relay
    /// or link dies) until `fogwire route close`.
    Open(OpenArgs),
    /// Close a route this node opened; every hop drops its rule.
    Close(CloseArgs),
    /// Send bytes over a new route to the node's `sink` service and check
    /// that every byte arrived, in order, once (BLAKE3 of both ends).
    Send(SendArgs),
}

#[derive(Debug, clap::Args)]
pub struct FindArgs {
    node: String,
    #[command(flatten)]
    path: PathArgs,
    /// Also show this many node-disjoint alternatives in all.
    #[arg(long, value_name = "K", default_value_t = 1)]
    alternatives: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct OpenArgs {
    node: String,
    #[command(flatten)]
    path: PathArgs,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct CloseArgs {
    /// The route's id, from `fogwire route list`.
    id: u64,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    node: String,
    #[command(flatten)]
    path: PathArgs,
    /// How much to send: bytes, or with K, M, G (binary: 64M = 64 MiB).
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = crate::output::parse_size)]
    bytes: u64,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct PingArgs {
    /// The node to ping: an id or the start of one (see `fogwire nodes`).
    node: String,
    #[command(flatten)]
    path: PathArgs,
    /// Pings to send.
    #[arg(long, short = 'c', default_value_t = 4)]
    count: u32,
    /// Milliseconds between pings.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    interval: u64,
    #[arg(long)]
    json: bool,
}

fn path_text(nodes: &[String]) -> String {
    nodes
        .iter()
        .map(|id| short(id))
        .collect::<Vec<_>>()
        .join(" → ")
}

pub async fn run(home: &Path, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Find(args) => find(home, args).await,
        Command::List(args) => list(home, args).await,
        Command::Open(args) => open(home, args).await,
        Command::Close(args) => close(home, args).await,
        Command::Send(args) => send(home, args).await,
    }
}

pub async fn nodes(home: &Path, args: ReadArgs) -> anyhow::Result<()> {
    let nodes = client(home)?.nodes().await?;
    if args.json {
        return print_json(&nodes);
    }
    let mut table = Table::new(
        &["node", "role", "links", "address", "advert", "services"],
        &[2, 4],
    );
    for node in &nodes {
        let role = if node.this_node {
            "this node"
        } else if node.neighbour {
            "neighbour"
        } else {
            "-"
        };
        table.row([
            crate::output::named(&node.node_id),
            role.to_string(),
            node.links.len().to_string(),
            node.addresses
                .first()
                .cloned()
                .unwrap_or_else(|| "-".into()),
            format_age_ms(node.issued_at_unix_ms),
            node.services.join(","),
        ]);
    }
    table.print();
    let links: usize = nodes.iter().map(|n| n.links.len()).sum();
    println!(
        "\n{} nodes and {} links known (each link as both ends advertise it)",
        nodes.len(),
        links / 2
    );
    Ok(())
}

async fn find(home: &Path, args: FindArgs) -> anyhow::Result<()> {
    let mut request = args.path.request(&args.node);
    request.alternatives = Some(args.alternatives);
    let paths = client(home)?.find(&request).await?;
    if args.json {
        return print_json(&paths);
    }
    for (index, path) in paths.iter().enumerate() {
        let label = if index == 0 { "best" } else { "alternative" };
        println!(
            "{label}: {} hops, {:.2} ms one way (advertised)\n  {}",
            path.hops,
            path.latency_ms,
            path_text(&path.nodes)
        );
    }
    Ok(())
}

async fn list(home: &Path, args: ReadArgs) -> anyhow::Result<()> {
    let routes = client(home)?.routes().await?;
    if args.json {
        return print_json(&routes);
    }
    if routes.routes.is_empty() {
        println!("no routes opened by this node; open one with `fogwire route open <node>`");
    } else {
        let mut table = Table::new(
            &[
                "route", "status", "hops", "path", "sent", "received", "repairs", "setup",
            ],
            &[0, 2, 4, 5, 6, 7],
        );
        for route in &routes.routes {
            let status = match route.status {
                RouteStatus::SettingUp => "setting",
                RouteStatus::Up => "up",
                RouteStatus::Repairing => "repairing",
            };
            table.row([
                route.id.to_string(),
                status.to_string(),
                route.path.len().to_string(),
                path_text(&route.path),
                format_bytes(route.counters.bytes_forward),
                format_bytes(route.counters.bytes_backward),
                route.repairs.to_string(),
                route
                    .setup_ms
                    .map_or_else(|| "-".into(), |ms| format!("{ms:.1} ms")),
            ]);
        }
        table.print();
    }
    println!();
    if routes.transit.is_empty() {
        println!("relaying no routes for others");
    } else {
        println!("relaying {} routes for others:", routes.transit.len());
        let mut table = Table::new(&["label", "from", "to", "forward", "backward"], &[0, 3, 4]);
        for rule in &routes.transit {
            table.row([
                rule.label.to_string(),
                rule.prev.as_deref().map_or_else(|| "-".into(), short),
                rule.next.as_deref().map_or_else(|| "-".into(), short),
                format_bytes(rule.counters.bytes_forward),
                format_bytes(rule.counters.bytes_backward),
            ]);
        }
        table.print();
    }
    let stats = &routes.stats;
    println!(
        "\nreceipts: {} received from sources, {} kept on disk; routes broken {}, repaired {} ({} moved to a shorter path); \
                  packets dropped at full links {}; datagrams for no service {}; \
         session packets that failed to open {}",
        stats.receipts_received,
        stats.receipts_stored,
        stats.routes_broken,
        stats.routes_repaired,
        stats.routes_moved,
        stats.data_dropped,
        stats.datagrams_dropped,
        stats.session_packets_rejected
    );
    Ok(())
}

async fn open(home: &Path, args: OpenArgs) -> anyhow::Result<()> {
    let route = client(home)?
        .open_route(&args.path.request(&args.node))
        .await?;
    if args.json {
        return print_json(&route);
    }
    println!(
        "route {} up in {:.2} ms over {} hops: {}\nit stays up (and is repaired if a relay dies) until \
         `fogwire route close {}`",
        route.id,
        route.setup_ms,
        route.path.len(),
        path_text(&route.path),
        route.id
    );
    Ok(())
}

async fn close(home: &Path, args: CloseArgs) -> anyhow::Result<()> {
    let closed = client(home)?.close_route(args.id).await?;
    if args.json {
        return print_json(&closed);
    }
    println!("route {} closed; every hop dropped its rule", closed.id);
    Ok(())
}

async fn send(home: &Path, args: SendArgs) -> anyhow::Result<()> {
    let mut request = args.path.request(&args.node);
    request.bytes = Some(args.bytes);
    let bar = progress_bar(args.bytes, args.json);
    bar.set_message("setting up the route");
    let mut report = None;
    let mut failure = None;
    client(home)?
        .send(&request, |line| match line {
            SendLine::Route(route) => {
                bar.set_message(format!("{} hops", route.path.len()));
                bar.println(format!(
                    "route up in {:.2} ms: {}",
                    route.setup_ms,
                    path_text(&route.path)
                ));
            }
            SendLine::Progress(sent) => bar.set_position(sent),
            SendLine::Result(result) => report = Some(result),
            SendLine::Error(error) => failure = Some(error),
        })
        .await?;
    bar.finish_and_clear();
    if let Some(error) = failure {
        bail!("the transfer failed: {error}");
    }
    let Some(report) = report else {
        bail!("the node ended the transfer without a result");
    };
    if args.json {
        print_json(&report)?;
    } else {
        println!(
            "sent {} in {:.2} s ({:.0} Mbit/s) over {} hops: {}",
            format_bytes(report.bytes),
            report.secs,
            report.mbit_per_sec,
            report.path.len(),
            path_text(&report.path)
        );
        if report.repairs > 0 {
            println!(
                "the route was repaired {} time(s) on the way",
                report.repairs
            );
        }
    }
    if !report.intact {
        bail!(
            "the sink received {} bytes with BLAKE3 {}, not {} bytes with {}",
            report.received_bytes,
            report.received_blake3,
            report.bytes,
            report.sent_blake3
        );
    }
    if !args.json {
        println!(
            "the sink got every byte, in order, once (BLAKE3 {})",
            &report.sent_blake3[..16]
        );
    }
    Ok(())
}

pub async fn ping(home: &Path, args: PingArgs) -> anyhow::Result<()> {
    let mut request = args.path.request(&args.node);
    request.count = Some(args.count);
    request.interval_ms = Some(args.interval);
    let report = client(home)?.ping(&request).await?;
    if args.json {
        return print_json(&report);
    }
    println!(
        "PING {} over {} hops: {} (route set up in {:.2} ms)",
        report.path.last().map_or_else(String::new, |id| short(id)),
        report.path.len(),
        path_text(&report.path),
        report.setup_ms
    );
    for (index, rtt) in report.rtts_ms.iter().enumerate() {
        match rtt {
            Some(ms) => println!("seq={} rtt={ms:.3} ms", index + 1),
            None => println!("seq={} no answer within 2 s", index + 1),
        }
    }
    let answered: Vec<f64> = report.rtts_ms.iter().flatten().copied().collect();
    if answered.is_empty() {
        bail!("no ping was answered");
    }
    let min = answered.iter().copied().fold(f64::INFINITY, f64::min);
    let max = answered.iter().copied().fold(0.0, f64::max);
    let avg = answered.iter().sum::<f64>() / answered.len() as f64;
    println!(
        "{} sent, {} answered; rtt min/avg/max = {min:.3}/{avg:.3}/{max:.3} ms",
        report.rtts_ms.len(),
        answered.len()
    );
    Ok(())
}
