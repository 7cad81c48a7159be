//! `fogwire demo`: a network of real nodes on loopback — think of the eight
//! boards of one miner box — shown live.
//!
//! Each node is a full [`fogwire_node::Node`] with its own key file in its
//! own data directory, listening on its own loopback port; the links
//! between them are real TCP connections with real Noise handshakes. The
//! demo links them in a ring with two chords, has every node stream traffic
//! to its neighbours, and redraws a table of nodes and links with live byte
//! counters until its time is up or it is interrupted.
//!
//! The demo is a sequence of stages over one [`Network`] (start, link,
//! traffic on every link; the nodes become one box whose manifest gives
//! every role — see [`cluster`]; then store, compute, exit and routes,
//! and a board switched off); later pillars add stages to [`run`] rather
//! than new demos.

pub mod cluster;
pub mod compute;
pub mod dashboard;
pub mod economy;
pub mod exit;
mod network;
mod render;
pub mod routes;
pub mod store;
mod traffic;
mod vpn;

pub use network::{Network, NetworkError};
pub use render::{RouteView, format_bytes, render_table};
pub use traffic::Traffic;

use std::io::Write;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub nodes: usize,
    /// How long to run; `None` runs until interrupted.
    pub duration: Option<Duration>,
    /// Traffic each node sends on each of its links.
    pub bytes_per_sec_per_link: u64,
    /// How often the table is redrawn.
    pub refresh: Duration,
    /// Redraw in place (a terminal) or print each table below the last.
    pub redraw: bool,
    /// Run the store stage (a directory published through a feed and
    /// replicated by every other node).
    pub store: bool,
    /// Run the routing stage (routes, pings, a stream, a relay killed).
    pub routes: bool,
    /// Run the exit stage (a page fetched through a SOCKS proxy and an
    /// exit over a 3-hop route).
    pub exit: bool,
    /// Bytes streamed over the 3-hop route while its relay dies.
    pub stream_bytes: u64,
    /// Run the compute stage (a replicated job with a cheat among the
    /// workers), writing its image here.
    pub compute: Option<std::path::PathBuf>,
    /// Run the cluster stage (the nodes form a cluster, run a manifest,
    /// and a board switched off has its service moved). The manifest
    /// gives the ledger, hub, workers and exit: without it the compute
    /// and exit stages and the coins are skipped.
    pub cluster: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            nodes: 8,
            duration: Some(Duration::from_secs(30)),
            bytes_per_sec_per_link: 256 * 1024,
            refresh: Duration::from_secs(1),
            redraw: true,
            store: true,
            routes: true,
            exit: true,
            stream_bytes: 256 * 1024 * 1024,
            compute: Some(std::env::temp_dir().join("fogwire-mandelbrot.png")),
            cluster: true,
        }
    }
}

/// What the demo did, for its closing lines and for tests.
#[derive(Debug, Clone)]
pub struct Summary {
    pub nodes: usize,
    pub links: usize,
    pub bytes_delivered: u64,
    pub links_closed_cleanly: usize,
    pub elapsed: Duration,
    /// Whether the stream over the 3-hop route arrived intact across its
    /// relay's death (none if that stage did not run).
    pub stream_intact: Option<bool>,
    /// Followers that replicated the published directory, of how many
    /// (none if that stage did not run), and whether one restored it
    /// byte for byte.
    pub replicated: Option<(usize, usize)>,
    pub restored_intact: Option<bool>,
    /// Wrong results caught, and whether the gathered image was correct
    /// (none if the compute stage did not run).
    pub cheats_caught: Option<u32>,
    pub computed_correctly: Option<bool>,
    /// Whether the job's payment was settled (none if the compute stage
    /// did not run).
    pub job_paid: Option<bool>,
    /// Whether the ledger's supply check passed at the end.
    pub supply_ok: Option<bool>,
    /// Whether the page fetched through the exit arrived intact (none if
    /// that stage did not run).
    pub proxied_intact: Option<bool>,
    /// Whether a ping crossed the VPN between two nodes (none if it did
    /// not run: the demo was not root, or the exit stage did not run).
    pub vpn_pinged: Option<bool>,
    /// Whether a switched-off board's service ran elsewhere (none if the
    /// cluster stage did not run).
    pub cluster_service_moved: Option<bool>,
    /// Whether every service of the manifest ran on its board (none if
    /// the cluster stage did not run).
    pub cluster_assembled: Option<bool>,
}

/// Why the demo stopped early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    #[error("at least 2 and at most 64 nodes, not {0}")]
    NodeCount(usize),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    Dashboard(#[from] dashboard::DashboardError),
    #[error("cannot write the table: {0}")]
    Output(#[from] std::io::Error),
}

/// Runs the demo, writing to `out`, until the duration passes or
/// `interrupted` resolves.
pub async fn run(
    options: &Options,
    out: &mut (dyn Write + Send),
    interrupted: impl Future<Output = ()>,
) -> Result<Summary, DemoError> {
    if !(2..=64).contains(&options.nodes) {
        return Err(DemoError::NodeCount(options.nodes));
    }
    let started = Instant::now();
    writeln!(
        out,
        "fogwire demo: starting {} nodes on 127.0.0.1…",
        options.nodes
    )?;
    let mut network = Network::start(options.nodes).await?;
    writeln!(
        out,
        "linking them: a ring plus chords, {} links…",
        network.topology().len()
    )?;
    network.link_all().await?;
    let dashboards = dashboard::serve(&network).await?;
    writeln!(
        out,
        "dashboard: {} — open it in a browser on this machine for {}'s figures live, and \"Box\" for every board's (--duration 0 keeps the demo running)",
        dashboards.link,
        network.nodes()[0].name
    )?;
    let traffic = traffic::start(&network, options.bytes_per_sec_per_link);
    let deadline = options
        .duration
        .map(|duration| tokio::time::Instant::now() + duration);
    tokio::pin!(interrupted);
    let mut interrupted_by_user = false;
    let mut cluster_stage = None;
    if options.cluster && options.nodes >= 4 {
        writeln!(
            out,
            "cluster: the nodes become one box: {} makes a cluster, the others join, and it publishes one manifest that gives every role…",
            network.nodes()[0].name
        )?;
        out.flush()?;
        let mut narrate = narrator(out);
        tokio::select! {
            done = cluster::assemble(&network, 0, &mut narrate) => { cluster_stage = Some(done); }
            () = &mut interrupted => { interrupted_by_user = true; }
        }
    } else {
        writeln!(
            out,
            "cluster: skipped ({}); the ledger, hub, workers and exit come from its manifest, so the compute and exit stages and the coins are skipped too",
            if options.cluster {
                "it needs 4 nodes or more"
            } else {
                "--no-cluster"
            }
        )?;
    }
    let roles = cluster_stage.as_ref().and_then(|stage| stage.roles.clone());
    let mut store_stage = None;
    if options.store {
        writeln!(
            out,
            "store: {} publishes a directory through a signed feed; every other node follows it…",
            network.nodes()[0].name
        )?;
        out.flush()?;
        let scratch = tempfile::Builder::new()
            .prefix("fogwire-demo-site-")
            .tempdir()
            .map_err(NetworkError::TempDir)?;
        let mut narrate = narrator(out);
        tokio::select! {
            done = store::run(&network, 0, scratch.path(), &mut narrate) => {
                store_stage = Some(done);
            }
            () = &mut interrupted => { interrupted_by_user = true; }
        }
    }
    let mut compute_stage = None;
    if let Some(image) = &options.compute
        && let Some(roles) = &roles
        && !interrupted_by_user
    {
        writeln!(
            out,
            "compute: {} is the hub; it splits a job into tasks and runs each on {} of the {} workers…",
            network.nodes()[roles.hub].name,
            roles.workers.len().min(3),
            roles.workers.len()
        )?;
        out.flush()?;
        let mut narrate = narrator(out);
        tokio::select! {
            done = compute::run(&network, roles, image, &mut narrate) => {
                compute_stage = Some(done);
            }
            () = &mut interrupted => { interrupted_by_user = true; }
        }
    }
    let mut exit_stage = None;
    if options.exit
        && let Some(roles) = &roles
        && !interrupted_by_user
    {
        writeln!(
            out,
            "exit: {} serves as an exit; {} fetches a page from a web server on this machine through its SOCKS proxy, over at least {} hops…",
            network.nodes()[roles.exit].name,
            network.nodes()[exit::client_of(options.nodes, roles.exit)].name,
            exit::min_hops(options.nodes)
        )?;
        out.flush()?;
        let mut narrate = narrator(out);
        tokio::select! {
            done = exit::run(&network, roles.exit, &mut narrate) => { exit_stage = Some(done); }
            () = &mut interrupted => { interrupted_by_user = true; }
        }
    }
    let mut stage = None;
    if options.routes && options.nodes >= 3 && !interrupted_by_user {
        writeln!(
            out,
            "routing: waiting for every node to learn the graph, then routes of 1, 2 and 3 hops…"
        )?;
        out.flush()?;
        let mut narrate = narrator(out);
        tokio::select! {
            done = routes::run(&mut network, 0, options.stream_bytes, &mut narrate) => {
                stage = Some(done);
            }
            () = &mut interrupted => { interrupted_by_user = true; }
        }
    }
    if let Some(stage) = cluster_stage.as_mut().filter(|stage| stage.roles.is_some())
        && !interrupted_by_user
    {
        writeln!(
            out,
            "cluster: a board of the box is switched off; its service must move…"
        )?;
        out.flush()?;
        let mut narrate = narrator(out);
        tokio::select! {
            () = cluster::switch_off(&mut network, 0, stage, &mut narrate) => {}
            () = &mut interrupted => { interrupted_by_user = true; }
        }
    }
    let mut ticker = tokio::time::interval(options.refresh);
    let mut drawn_lines = 0usize;
    loop {
        if interrupted_by_user {
            break;
        }
        tokio::select! {
            _ = ticker.tick() => {}
            () = &mut interrupted => { interrupted_by_user = true; }
            () = sleep_until_opt(deadline) => {}
        }
        let view = route_view(&network, stage.as_ref()).await;
        let table = render_table(
            &network,
            &traffic,
            stage.as_ref(),
            &view,
            started.elapsed(),
            options.duration,
        );
        if options.redraw {
            // Clear the screen and draw from the top.
            // Over the last table only: every stage's story stays above
            // it (and in the scrollback) to the end.
            if drawn_lines > 0 {
                write!(out, "\x1b[{drawn_lines}A\x1b[J")?;
            }
            write!(out, "{table}")?;
            drawn_lines = table.matches('\n').count();
        } else {
            writeln!(out, "{table}")?;
        }
        out.flush()?;
        let done = interrupted_by_user
            || deadline.is_some_and(|deadline| tokio::time::Instant::now() >= deadline);
        if done {
            break;
        }
    }
    let mut supply_ok = None;
    if !interrupted_by_user && roles.is_some() {
        writeln!(out)?;
        let mut narrate = narrator(out);
        supply_ok = economy::report(&network, &mut narrate).await;
    }
    if interrupted_by_user {
        writeln!(out, "\ninterrupted: shutting the nodes down…")?;
    } else {
        writeln!(out, "\ntime is up: shutting the nodes down…")?;
    }
    let bytes_delivered = traffic.bytes_delivered();
    traffic.stop();
    let links = network.topology().len();
    let links_closed_cleanly = network.shutdown().await;
    let summary = Summary {
        nodes: options.nodes,
        links,
        bytes_delivered,
        links_closed_cleanly,
        elapsed: started.elapsed(),
        stream_intact: stage.as_ref().and_then(|stage| stage.stream_intact),
        replicated: store_stage
            .as_ref()
            .map(|stage| (stage.replicated, stage.followers)),
        restored_intact: store_stage.as_ref().and_then(|stage| stage.restored_intact),
        cheats_caught: compute_stage.as_ref().map(|stage| stage.caught),
        computed_correctly: compute_stage.as_ref().and_then(|stage| stage.correct),
        job_paid: compute_stage.as_ref().map(|stage| stage.paid),
        supply_ok,
        proxied_intact: exit_stage.as_ref().and_then(|stage| stage.intact),
        vpn_pinged: exit_stage.as_ref().and_then(|stage| stage.vpn_pinged),
        cluster_assembled: cluster_stage.as_ref().map(|stage| stage.roles.is_some()),
        cluster_service_moved: cluster_stage
            .as_ref()
            .filter(|stage| stage.switched_off)
            .map(|stage| stage.service_moved.is_some()),
    };
    writeln!(
        out,
        "done: {} nodes, {} links, {} delivered; {} of {} links closed with a reason",
        summary.nodes,
        summary.links,
        format_bytes(summary.bytes_delivered),
        summary.links_closed_cleanly,
        summary.links
    )?;
    Ok(summary)
}

/// Writes each line of a stage's story as it happens.
fn narrator(out: &mut (dyn Write + Send)) -> impl FnMut(&str) + Send + '_ {
    move |line| {
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// Reads the routing counters the table shows.
async fn route_view(network: &Network, stage: Option<&routes::RouteStage>) -> RouteView {
    let Some(stage) = stage else {
        return RouteView::default();
    };
    let mut view = RouteView::default();
    for (index, demo_node) in network.nodes().iter().enumerate() {
        if network.is_killed(index) {
            view.relayed.push(0);
            continue;
        }
        let listing = demo_node.node.routing().routes().await.ok();
        let total = listing
            .as_ref()
            .map(|l| l.transit_total())
            .unwrap_or_default();
        view.relayed
            .push(total.bytes_forward + total.bytes_backward);
        if index == stage.source {
            view.source = listing;
        }
    }
    view
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
