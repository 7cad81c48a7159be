use std::io::IsTerminal;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many nodes to start (2 to 64).
    #[arg(long, default_value_t = 8)]
    nodes: usize,
    /// Seconds to run; 0 runs until Ctrl-C.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    duration: u64,
    /// Traffic each node streams on each link, in KiB per second.
    #[arg(long, value_name = "KIB", default_value_t = 256)]
    rate: u64,
    /// Bytes streamed over the 3-hop route while one of its relays is
    /// killed (K, M, G suffixes: binary).
    #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = crate::output::parse_size)]
    stream: u64,
    /// Skip the routing stage (routes, pings, the stream, the relay killed).
    #[arg(long)]
    no_routes: bool,
    /// Skip the store stage (a directory published through a feed and
    /// replicated by every other node).
    #[arg(long)]
    no_store: bool,
    /// Skip the exit stage (a page fetched through a SOCKS proxy and an
    /// exit over a 3-hop route).
    #[arg(long)]
    no_exit: bool,
    /// Skip the compute stage (a Mandelbrot image rendered in bands on the
    /// workers, three per band, with one cheating worker caught).
    #[arg(long)]
    no_compute: bool,
    /// Skip the cluster stage (the nodes form a cluster from one manifest
    /// that places the ledger, the hub, the workers and the exit, and a
    /// board switched off has its service moved). Those roles come from
    /// the manifest, so the compute and exit stages and the coins are
    /// skipped too.
    #[arg(long)]
    no_cluster: bool,
    /// Where the compute stage writes its image (default:
    /// fogwire-mandelbrot.png in the system's temporary directory, never
    /// over a file of the directory you run it in).
    #[arg(long, value_name = "PATH")]
    image: Option<std::path::PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    // Link events (and the killed relay's neighbours redialing it) would
    // scroll the table away; RUST_LOG still wins.
    let _ = crate::node::init_logging("error", false);
    let stdout_is_terminal = std::io::stdout().is_terminal();
    let options = fogwire_demo::Options {
        nodes: args.nodes,
        duration: (args.duration > 0).then(|| Duration::from_secs(args.duration)),
        bytes_per_sec_per_link: args.rate * 1024,
        refresh: Duration::from_secs(if stdout_is_terminal { 1 } else { 5 }),
        redraw: stdout_is_terminal,
        store: !args.no_store,
        routes: !args.no_routes,
        exit: !args.no_exit,
        stream_bytes: args.stream,
        compute: (!args.no_compute).then(|| {
            args.image
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join("fogwire-mandelbrot.png"))
        }),
        cluster: !args.no_cluster,
    };
    let interrupted = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let mut stdout = std::io::stdout();
    let summary = fogwire_demo::run(&options, &mut stdout, interrupted).await?;
    if let Some((replicated, followers)) = summary.replicated
        && (replicated < followers || summary.restored_intact != Some(true))
    {
        anyhow::bail!(
            "only {replicated} of {followers} followers replicated the published directory intact"
        );
    }
    if summary.computed_correctly == Some(false) {
        anyhow::bail!("the computed image differs from a direct run of the module");
    }
    if summary.proxied_intact == Some(false) {
        anyhow::bail!("the page fetched through the exit did not arrive intact");
    }
    if summary.vpn_pinged == Some(false) {
        anyhow::bail!("no ping crossed the VPN between the two nodes");
    }
    if summary.job_paid == Some(false) {
        anyhow::bail!("the job's payment was not settled");
    }
    if summary.supply_ok == Some(false) {
        anyhow::bail!("the ledger's supply check failed");
    }
    if summary.cluster_assembled == Some(false) {
        anyhow::bail!(
            "the box did not assemble: the manifest's services did not all run, so the stages that need them were skipped"
        );
    }
    if summary.cluster_service_moved == Some(false) {
        anyhow::bail!("the switched-off board's service did not run on another board");
    }
    if summary.stream_intact == Some(false) {
        anyhow::bail!("the stream over the repaired route did not arrive intact");
    }
    Ok(())
}
