//! The `fogwire` command. Glue only: parsing arguments, printing results,
//! and calling into the library crates that do the work.

mod attack;
mod bench;
mod boards;

/// A node moves bulk data through buffers that live a while (link queues,
/// chunk groups on their way to disk); glibc's allocator then keeps
/// returning memory to the kernel and faulting it back in, page by page.
/// mimalloc reuses it, which makes transfers measurably cheaper.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
mod cluster;
mod control;
mod dashcost;
mod demo;
mod exit;
mod feed;
mod group;
mod init;
mod job;
mod market;
mod msg;
mod node;
mod output;
mod route;
mod rpc;
mod soak;
mod store;
mod wallet;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// fogwire: a peer-to-peer network where every machine routes, stores and
/// computes for the others.
///
/// Start here:
///   fogwire demo                 8 nodes on this machine, linked, live
///   fogwire init && fogwire node  set up and run a node of your own
///   fogwire status               what your running node is doing
///   fogwire nodes                the network your node knows
///   fogwire ping <node> --hops 3 a round trip through a 3-hop route
#[derive(Debug, Parser)]
#[command(name = "fogwire", version, about, long_about, verbatim_doc_comment)]
struct Cli {
    /// The node's home: its configuration (fogwire.toml) and data directory.
    #[arg(long, global = true, env = "FOGWIRE_HOME", value_name = "DIR")]
    home: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a commented default configuration, and create the data
    /// directory with the node's key and API token.
    Init(init::Args),
    /// Run the node daemon from the configuration in --home, until Ctrl-C
    /// or SIGTERM.
    Node,
    /// Show what the running node is doing.
    Status(control::ReadArgs),
    /// List linked and wanted peers with their counters.
    Peers(control::ReadArgs),
    /// Link to a peer now and keep the link up (redialing if it drops).
    ///
    /// The peer is <node id>@<host>:<port>; `fogwire status` on the peer
    /// prints its node id. The link fails closed if whoever answers at that
    /// address is not that node.
    Connect(control::ConnectArgs),
    /// Close the link to a peer and stop redialing it.
    Disconnect(control::DisconnectArgs),
    /// Print the running node's Prometheus metrics.
    ///
    /// In the OpenMetrics text format; with --json, each sample as
    /// {"name", "labels", "value"}.
    Metrics(control::ReadArgs),
    /// Give a node a name: every command then takes the name where it
    /// takes a node id, and shows it in place of the id.
    ///
    /// Names are this node's own (kept in its data directory), never
    /// learnt from others. `fogwire name alice fw1…`; `fogwire name
    /// alice --remove` forgets it.
    Name(control::NameArgs),
    /// List the names given to nodes.
    Names(control::ReadArgs),
    /// Print the link that opens the running node's live dashboard.
    ///
    /// Open it in a browser on this machine: the link carries the API
    /// token once, and the browser keeps it in a cookie (read-only). To
    /// show the dashboard to a local network without the token, set
    /// `[web] listen` in fogwire.toml.
    Dashboard(control::ReadArgs),
    /// List the nodes of the network this node knows (from their signed
    /// adverts): their links, addresses and services.
    Nodes(control::ReadArgs),
    /// Routes: find paths, open, list and close routes, send test data.
    ///
    /// A route is a path of links set up in one round trip by this node;
    /// each relay knows only its two neighbours on it, and the data is
    /// end-to-end encrypted. Routes are repaired onto new paths when a
    /// relay or link dies.
    #[command(subcommand)]
    Route(route::Command),
    /// The content-addressed store: add files, get them back verified,
    /// pin, list, collect.
    ///
    /// A blob is named by the BLAKE3 hash of its bytes, exactly what
    /// `b3sum` prints, and every read is checked chunk by chunk.
    #[command(subcommand)]
    Store(store::Command),
    /// Feeds: signed, mutable names for trees in the store.
    ///
    /// A feed is a key; its owner publishes roots (each newer than the
    /// last) that point at content; followers take only valid, newer
    /// roots.
    #[command(subcommand)]
    Feed(feed::Command),
    /// Messages: end-to-end encrypted texts between nodes, delivered when
    /// the recipient is back if it is away.
    ///
    /// Each message is sealed with Olm (the Double Ratchet) for its
    /// recipient's key only, kept in a durable outbox until the recipient
    /// signs a receipt, and shown in its conversation's order, once.
    #[command(subcommand)]
    Msg(msg::Command),
    /// Clusters: boards on one network that find each other, agree on who
    /// is alive, and run the services of one signed manifest.
    ///
    /// One board makes the cluster (`init`) and prints a join code; every
    /// other board joins with it (`join`, or `[cluster] join` in
    /// fogwire.toml) and finds the rest by mDNS.
    #[command(subcommand)]
    Cluster(cluster::Command),
    /// Services of other nodes, called over the link to them
    /// (MessagePack RPC, docs/protocol/rpc.md).
    #[command(subcommand)]
    Rpc(rpc::Command),
    /// Jobs: run programs on other nodes' workers through a hub, with
    /// every result checked by replication.
    #[command(subcommand)]
    Job(job::Command),
    /// The workers a hub knows: their resources and their record.
    Workers(job::WorkersArgs),
    /// Coins: balances, histories, payments, workers' deposits.
    ///
    /// Every node has an account in the ledger, named by its node id and
    /// spent only by transactions its key signs. A coin is 1 000 000
    /// units; amounts are written like 12, 0.5 or 0.000001.
    #[command(subcommand)]
    Wallet(wallet::WalletCommand),
    /// This node's hub wallet: the bond a hub posts before it may pay
    /// workers and hold buyers' money.
    ///
    /// Its life: register (freezes a fixed deposit) → pay workers (each
    /// payout locks 30 % of itself until payday) → payday after the pay
    /// period (0.5 % of the locked funds to the DAO, the rest unlocked)
    /// → idle (withdraw, or register again).
    #[command(subcommand)]
    Hub(wallet::HubCommand),
    /// A hub's market: workers' asks, buyers' bids, and the deals they
    /// make, matched the moment an order arrives.
    #[command(subcommand)]
    Market(market::Command),
    /// The hubs this worker's agent knows: their terms, how far it trusts
    /// them (by their wallets and payments in the ledger), and what it
    /// took from their books.
    Hubs(control::ReadArgs),
    /// The DAO's powers over hubs: suspect, rehabilitate, ban.
    #[command(subcommand)]
    Dao(wallet::DaoCommand),
    /// The ledger: where it runs, its rules, and its supply check.
    Ledger(wallet::JsonArgs),
    /// List the exits the network advertises: price, latency, policy;
    /// and this node's own exit and SOCKS proxy.
    Exits(control::ReadArgs),
    /// Serve SOCKS 5 on this machine until Ctrl-C: every connection goes
    /// through an exit over a route, hostnames resolved at the exit.
    ///
    /// A SOCKS username is an isolation group (different usernames get
    /// different routes); `name@<exit>` also picks the exit.
    Proxy(exit::ProxyArgs),
    /// Measure the round trip to a node through a route set up for it.
    ///
    /// `fogwire ping <node> --hops 3` goes through two relays.
    Ping(route::PingArgs),
    /// Print this node's id (from its key file; the node need not run).
    Id(control::ReadArgs),
    /// Print a node's IPv6 address (this node's by default): derived from
    /// its id in fd77:6972::/32, so nothing is handed out.
    Ip(exit::IpArgs),
    /// The VPN: a TUN device with this node's address, carrying IPv6 to
    /// other nodes' addresses over routes (`fogwire vpn up|down|status`).
    #[command(subcommand)]
    Vpn(exit::VpnCommand),
    /// Start a network of nodes on this machine and show it live.
    Demo(demo::Args),
    /// Measure performance, each figure beside a baseline from the same run.
    #[command(subcommand)]
    Bench(bench::Command),
    /// The node's configuration: `fogwire config show` prints every
    /// setting in effect (the file's, and the defaults of what it leaves
    /// out).
    #[command(subcommand)]
    Config(init::ConfigCommand),
    /// Print shell completions for fogwire.
    ///
    /// bash: `fogwire completions bash > /etc/bash_completion.d/fogwire`;
    /// zsh: `fogwire completions zsh > "${fpath[1]}/_fogwire"`;
    /// fish: `fogwire completions fish > ~/.config/fish/completions/fogwire.fish`.
    Completions(CompletionsArgs),
    /// Print fogwire's manual page (roff), or write one page per command.
    ///
    /// `fogwire man | man -l -` reads it now;
    /// `fogwire man --dir /usr/local/share/man/man1` installs every page.
    Man(ManArgs),
}

#[derive(Debug, clap::Args)]
struct CompletionsArgs {
    shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
struct ManArgs {
    /// Write fogwire.1 and a page per command (fogwire-store-add.1, …)
    /// into this directory instead of printing fogwire.1.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

fn default_home() -> anyhow::Result<PathBuf> {
    let home = home::home_dir()
        .context("no --home given, FOGWIRE_HOME unset, and no home directory: pass --home <DIR>")?;
    Ok(home.join(".fogwire"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon's own output is its logs; a command's is its answer.
    if !matches!(cli.command, Command::Node) {
        quiet_on_broken_pipe();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(cli));
    // Blocking work still running (an export told to stop finishes its
    // chunk group) gets a bounded time, not forever: the store survives
    // being cut at any moment.
    runtime.shutdown_timeout(BLOCKING_WORK_GRACE);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if broken_pipe(&error) => ExitCode::from(BROKEN_PIPE_STATUS),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Whether a command failed only because the reader of its output left.
fn broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `fogwire nodes | head`: when the reader of the output goes away, stop
/// as Unix tools do — quietly, with the status SIGPIPE gives (141) —
/// rather than with a panic message (`println!` panics on a broken pipe,
/// and Rust ignores SIGPIPE).
fn quiet_on_broken_pipe() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        // `println!`'s, and clap_complete's ("failed to write completion
        // file: … BrokenPipe …").
        if message.contains("Broken pipe") || message.contains("BrokenPipe") {
            std::process::exit(i32::from(BROKEN_PIPE_STATUS));
        }
        report(info);
    }));
}

/// What a shell reports for a process killed by SIGPIPE (128 + 13).
const BROKEN_PIPE_STATUS: u8 = 141;

/// How long blocking work may run on once the command is done.
const BLOCKING_WORK_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Neither needs a home.
    match &cli.command {
        Command::Completions(args) => {
            use clap::CommandFactory;
            let mut command = Cli::command();
            clap_complete::generate(args.shell, &mut command, "fogwire", &mut std::io::stdout());
            return Ok(());
        }
        Command::Man(args) => return man(args),
        _ => {}
    }
    let home = match cli.home {
        Some(home) => home,
        None => default_home()?,
    };
    // Names the operator gave nodes, for every command's output.
    if let Ok(config) =
        fogwire_node::config::Config::load(&home.join(fogwire_node::config::CONFIG_FILE_NAME))
    {
        output::load_names(
            &config.data_dir_for(&home.join(fogwire_node::config::CONFIG_FILE_NAME)),
        );
    }
    match cli.command {
        Command::Init(args) => init::run(&home, args),
        Command::Node => node::run(&home).await,
        Command::Status(args) => control::status(&home, args).await,
        Command::Peers(args) => control::peers(&home, args).await,
        Command::Connect(args) => control::connect(&home, args).await,
        Command::Disconnect(args) => control::disconnect(&home, args).await,
        Command::Metrics(args) => control::metrics(&home, args).await,
        Command::Dashboard(args) => control::dashboard(&home, args),
        Command::Name(args) => control::name(&home, args).await,
        Command::Names(args) => control::names(&home, args).await,
        Command::Nodes(args) => route::nodes(&home, args).await,
        Command::Exits(args) => exit::exits(&home, args).await,
        Command::Proxy(args) => exit::proxy(&home, args).await,
        Command::Route(command) => route::run(&home, command).await,
        Command::Ping(args) => route::ping(&home, args).await,
        Command::Store(command) => store::run(&home, command).await,
        Command::Feed(command) => feed::run(&home, command).await,
        Command::Msg(command) => msg::run(&home, command).await,
        Command::Cluster(command) => cluster::run(&home, command).await,
        Command::Rpc(command) => rpc::run(&home, command).await,
        Command::Job(command) => job::run(&home, command).await,
        Command::Workers(args) => job::workers(&home, args).await,
        Command::Wallet(command) => wallet::wallet(&home, command).await,
        Command::Hub(command) => wallet::hub(&home, command).await,
        Command::Dao(command) => wallet::dao(&home, command).await,
        Command::Market(command) => market::run(&home, command).await,
        Command::Hubs(args) => market::hubs(&home, args.json).await,
        Command::Ledger(args) => wallet::ledger(&home, args).await,
        Command::Id(args) => init::print_id(&home, args.json),
        Command::Config(command) => init::config(&home, command),
        Command::Ip(args) => exit::ip(&home, args).await,
        Command::Vpn(command) => exit::vpn(&home, command).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Bench(command) => bench::run(command).await,
        Command::Completions(_) | Command::Man(_) => Ok(()),
    }
}

/// `fogwire man`: the manual page, from the same definitions as `--help`.
fn man(args: &ManArgs) -> anyhow::Result<()> {
    use clap::CommandFactory;
    let command = Cli::command();
    let Some(dir) = &args.dir else {
        clap_mangen::Man::new(command).render(&mut std::io::stdout())?;
        return Ok(());
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot make {}", dir.display()))?;
    clap_mangen::generate_to(command, dir)
        .with_context(|| format!("cannot write the manual pages into {}", dir.display()))?;
    let pages = std::fs::read_dir(dir)?
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|entry| entry.path().extension().is_some_and(|ext| ext == "1"))
        })
        .count();
    eprintln!("{pages} manual pages in {}", dir.display());
    Ok(())
}
