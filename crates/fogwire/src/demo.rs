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
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    // Link events would scroll the table away; RUST_LOG still wins.
    crate::node::init_logging("warn");
    let stdout_is_terminal = std::io::stdout().is_terminal();
    let options = fogwire_demo::Options {
        nodes: args.nodes,
        duration: (args.duration > 0).then(|| Duration::from_secs(args.duration)),
        bytes_per_sec_per_link: args.rate * 1024,
        refresh: Duration::from_secs(if stdout_is_terminal { 1 } else { 5 }),
        redraw: stdout_is_terminal,
    };
    let interrupted = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let mut stdout = std::io::stdout();
    fogwire_demo::run(&options, &mut stdout, interrupted).await?;
    Ok(())
}
