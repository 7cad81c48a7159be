use std::io::Write;
use std::time::Duration;

use fogwire_bench::link::{Options, Step};

use crate::output::{Table, format_bytes};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Throughput of one encrypted link on loopback, beside raw TCP on
    /// loopback and the single-core speed of the link's cipher.
    Link(LinkArgs),
    /// Routes on loopback: one stream over 1, 2 and 3 hops beside a direct
    /// link, setup time beside the path's round trip, 1000 setups in a row.
    Route(StreamArgs),
    /// Hole punching on loopback: the time from asking for a direct link
    /// to a node reached through a hub (over a route) to a QUIC link both
    /// keep, beside dialing a plain TCP link directly.
    Punch(PunchArgs),
    /// Path computation time on generated graphs, beside a breadth-first
    /// traversal of the same graph.
    Paths(RouteArgs),
    /// The SOCKS proxy and exits on loopback: a download through 1 and 3
    /// hops beside a direct TCP download, and a new connection's time to
    /// its first byte beside a direct one's plus the route's round trip.
    Socks(SocksArgs),
    /// Adding a file to the store, and reading it back verified, each
    /// beside BLAKE3 hashing the same file on as many threads (b3sum
    /// --num-threads N, or the blake3 crate).
    Store(StoreArgs),
    /// Replication on loopback: a blob fetched from one peer beside a bare
    /// link, and from three rate-capped peers beside one such peer.
    Transfer(TransferArgs),
    /// Finding content beyond the neighbours on 8 nodes on loopback: a
    /// fetch that asks the keepers of the blob's provider records who
    /// holds it, beside the same fetch told the holder (`store get
    /// --from`), for a small blob and a large one; and the lookup alone
    /// beside the route's round trip.
    Find(FindArgs),
    /// The messenger on 4 nodes on loopback: a message's latency over 3
    /// hops (to its delivery receipt) beside the route's round trip;
    /// messages per second between neighbours beside Olm alone on one
    /// core; 1,000 messages queued for a stopped node, delivered when it
    /// is back; 1,000 held by its mailbox, picked up when it is back.
    Msg(MsgArgs),
    /// The service RPC on one link: one call beside a bare round trip of a
    /// link message (the RPC's cost per call is the difference), and calls
    /// per second with many in flight.
    Rpc(RpcArgs),
    /// Jobs on a hub and seven workers on loopback: a trivial task with 3
    /// replicas from submission to accepted result, and tasks per second,
    /// beside running the same module directly in wasmtime.
    Compute(ComputeArgs),
    /// The ledger: signed transactions applied and made durable per
    /// second, in its process and from another node, beside the signature
    /// check, the state machine and one durable commit each; a payment's
    /// time beside a read over the same link.
    Ledger(LedgerArgs),
    /// The market's matching engine: orders per second through one order
    /// book, beside the ordered map it keeps orders in.
    Market(MarketArgs),
    /// Clusters: placement (100 services on 1,000 members, beside sorting
    /// as many scored pairs; the instances one board's failure moves on a
    /// box of 32), and membership on real `fogwire node` processes given
    /// only a join code (convergence after start, a `kill -9` known
    /// everywhere), beside the protocol period they kept.
    Cluster(ClusterArgs),
    /// Real `fogwire node` processes (a hub and workers) storing,
    /// fetching, routing and running jobs while one is killed and
    /// restarted every minute; prints each node's memory, open files and
    /// threads over time and fails if the nodes never restarted grow.
    Soak(crate::soak::SoakArgs),
    /// One node process under a combined attack from this process (idle
    /// sockets, self-made identities, a handshake flood, idle API
    /// connections, stalled blob readers), beside the same figures with no
    /// attack: a peer's link time, status and store add, CPU per 1,000
    /// handshakes/s, memory, open files, log bytes/s.
    Attack(crate::attack::AttackArgs),
    /// What open dashboards cost: a stream over a 3-hop route between
    /// real node processes, with no dashboard open and with two open on
    /// the streaming node (its board page and its box page), in
    /// alternating rounds of the same run.
    Dashboard(crate::dashcost::DashboardArgs),
}

#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// Live members to place on.
    #[arg(long, default_value_t = 1_000)]
    members: usize,
    /// Services (one instance each) to place.
    #[arg(long, default_value_t = 100)]
    services: usize,
    /// Rounds; medians are reported.
    #[arg(long, default_value_t = 21)]
    rounds: usize,
    /// Cluster sizes to run membership on, as real node processes on
    /// this machine (0: skip).
    #[arg(long, value_delimiter = ',', default_values_t = [8, 32])]
    boards: Vec<usize>,
    /// Rounds of each membership run.
    #[arg(long, default_value_t = 3)]
    board_rounds: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct MarketArgs {
    /// Orders per round.
    #[arg(long, default_value_t = 1_000_000)]
    orders: usize,
    /// Rounds; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct LedgerArgs {
    /// Accounts sending at once.
    #[arg(long, default_value_t = 64)]
    senders: usize,
    /// Transactions per round.
    #[arg(long, default_value_t = 20_000)]
    transactions: usize,
    /// Payments timed one after another, per round.
    #[arg(long, default_value_t = 200)]
    payments: usize,
    /// Rounds; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ComputeArgs {
    /// Workers besides the hub.
    #[arg(long, default_value_t = 7)]
    workers: usize,
    /// Tasks each worker runs at once.
    #[arg(long, default_value_t = 4)]
    slots: u32,
    /// Workers per task.
    #[arg(long, default_value_t = 3)]
    replicas: u8,
    /// One-task jobs timed one after another, per round.
    #[arg(long, default_value_t = 50)]
    latency_jobs: usize,
    /// Tasks of the job timed for throughput, per round.
    #[arg(long, default_value_t = 2000)]
    tasks: u32,
    /// Rounds; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RpcArgs {
    /// Sequential round trips, and sequential calls, timed per round.
    #[arg(long, default_value_t = 2000)]
    round_trips: usize,
    /// Calls in flight for the calls-per-second measure.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Calls made for the calls-per-second measure, per round.
    #[arg(long, default_value_t = 20_000)]
    calls: usize,
    /// Rounds, interleaved; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct TransferArgs {
    /// Size of the blob fetched from one peer (K, M, G: binary).
    #[arg(long, default_value = "1G", value_parser = crate::output::parse_size)]
    size: u64,
    /// Size of the blob fetched from capped peers.
    #[arg(long, default_value = "256M", value_parser = crate::output::parse_size)]
    capped_size: u64,
    /// Each capped peer's cap, per second.
    #[arg(long, default_value = "64M", value_parser = crate::output::parse_size)]
    cap: u64,
    /// Rounds of every measurement; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Directory for the test files and stores (default: the system's).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct MsgArgs {
    /// Messages timed one by one over 3 hops.
    #[arg(long, default_value_t = 50)]
    latency_messages: usize,
    /// Messages sent at once between neighbours.
    #[arg(long, default_value_t = 10_000)]
    burst: usize,
    /// Messages queued for a stopped node.
    #[arg(long, default_value_t = 1_000)]
    queued: usize,
    /// Bytes of text per message.
    #[arg(long, default_value_t = 100)]
    text_bytes: usize,
    /// Directory for the nodes' files (default: the system's).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct FindArgs {
    /// Size of each small blob (K, M, G: binary).
    #[arg(long, default_value = "64K", value_parser = crate::output::parse_size)]
    small: u64,
    /// Size of the large blob.
    #[arg(long, default_value = "128M", value_parser = crate::output::parse_size)]
    large: u64,
    /// Rounds, the two ways alternating which goes first; medians are
    /// reported.
    #[arg(long, default_value_t = 9)]
    rounds: usize,
    /// Directory for the stores (default: the system's).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// Size of the test file (K, M, G: binary).
    #[arg(long, default_value = "1G", value_parser = crate::output::parse_size)]
    size: u64,
    /// Rounds, interleaved; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Directory for the test file and store (default: the system's).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct StreamArgs {
    /// Seconds each stream is timed for.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Rounds of every throughput measurement, interleaved; medians are
    /// reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Routes set up per hop count to time setup against the path's RTT.
    #[arg(long, default_value_t = 50)]
    setups: usize,
    /// 3-hop routes set up and closed in a row.
    #[arg(long, default_value_t = 1000)]
    in_a_row: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct SocksArgs {
    /// Seconds each download is timed for.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Rounds of every measurement, interleaved; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// New connections timed to their first byte, per path and round.
    #[arg(long, default_value_t = 50)]
    connects: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RouteArgs {
    /// Graph sizes in nodes, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1000usize, 10_000, 100_000])]
    nodes: Vec<usize>,
    /// Random queries per kind and size.
    #[arg(long, default_value_t = 50)]
    queries: usize,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct PunchArgs {
    /// Punches (and plain dials) measured.
    #[arg(long, default_value_t = 20)]
    tries: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct LinkArgs {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 1.5)]
    seconds: f64,
    /// Rounds of every measurement, interleaved; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Message sizes in bytes, comma-separated (at most 65516).
    #[arg(long, value_delimiter = ',', default_values_t = [1024usize, 4096, 16384, 65516])]
    sizes: Vec<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn rate(bytes_per_sec: f64) -> String {
    format!("{}/s", format_bytes(bytes_per_sec as u64))
}

pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Link(args) => link(args).await,
        Command::Route(args) => streams(args).await,
        Command::Punch(args) => punch(args).await,
        Command::Socks(args) => socks(args).await,
        Command::Paths(args) => paths(args).await,
        Command::Store(args) => store(args).await,
        Command::Rpc(args) => rpc(args).await,
        Command::Compute(args) => compute(args).await,
        Command::Ledger(args) => ledger(args).await,
        Command::Market(args) => market(args).await,
        Command::Cluster(args) => cluster(args).await,
        Command::Transfer(args) => transfer(args).await,
        Command::Find(args) => find(args).await,
        Command::Msg(args) => msg(args).await,
        Command::Attack(args) => crate::attack::run(args).await,
        Command::Dashboard(args) => {
            debug_warning("dashboard");
            crate::dashcost::run(args).await
        }
        Command::Soak(args) => tokio::task::spawn_blocking(|| crate::soak::run(args)).await?,
    }
}

async fn msg(args: MsgArgs) -> anyhow::Result<()> {
    use fogwire_bench::msg::{Options as MsgOptions, Step as MsgStep};
    debug_warning("msg");
    let options = MsgOptions {
        latency_messages: args.latency_messages.clamp(1, 10_000),
        burst: args.burst.clamp(1, 1_000_000),
        queued: args.queued.clamp(1, 100_000),
        text_bytes: args.text_bytes.clamp(1, fogwire_msg::TEXT_LEN_MAX),
        dir: args.dir.unwrap_or_else(std::env::temp_dir),
    };
    let measured = measure(
        args.json,
        move |progress| fogwire_bench::msg::run(&options, progress),
        move |step| {
            match step {
                MsgStep::Starting => "starting 4 nodes in a line",
                MsgStep::Latency => "timing messages over 3 hops",
                MsgStep::Burst => "sending a burst to a neighbour",
                MsgStep::Cipher => "timing Olm alone",
                MsgStep::Queued => "queueing for a stopped node, starting it again",
                MsgStep::Mailbox => "leaving mail at a stopped node's mailbox, starting it again",
            }
            .to_owned()
        },
    )
    .await?;
    let Some(report) = measured else {
        return Ok(());
    };
    println!(
        "the messenger: 4 nodes on loopback in a line, each on one core's runtime; {}-byte texts",
        report.text_bytes
    );
    println!(
        "\n{:<52} {:>14} {:>14}  {:>9}",
        "", "MESSENGER", "BASELINE", "RATIO"
    );
    println!(
        "{:<52} {:>11.2} ms {:>11.2} ms  {:>+6.2} ms",
        "latency over 3 hops (to the receipt) / route RTT",
        report.message_latency_ms,
        report.route_rtt_ms,
        report.latency_over_rtt_ms
    );
    println!(
        "{:<52} {:>12.0}/s {:>12.0}/s  {:>8.3}×",
        format!("{} messages to a neighbour / Olm on one core", report.burst),
        report.messages_per_sec,
        report.olm_messages_per_sec,
        report.messages_to_olm
    );
    println!(
        "{:<52} {:>11.0} ms {:>11.0} ms",
        format!(
            "{} queued, delivered after a path / node's return",
            report.queued
        ),
        report.queued_delivered_ms,
        report.reconnect_ms
    );
    println!(
        "{:<52} {:>11.0} ms {:>11.0} ms",
        format!(
            "{} held by its mailbox, picked up after a path / return",
            report.queued
        ),
        report.mailbox_delivered_ms,
        report.mailbox_reconnect_ms
    );
    Ok(())
}

async fn find(args: FindArgs) -> anyhow::Result<()> {
    use fogwire_bench::find::{Options as FindOptions, Step as FindStep};
    debug_warning("find");
    let options = FindOptions {
        small_bytes: usize::try_from(args.small.clamp(1, 1 << 30))?,
        large_bytes: usize::try_from(args.large.clamp(1, 4 << 30))?,
        rounds: args.rounds.clamp(1, 100),
        dir: args.dir.unwrap_or_else(std::env::temp_dir),
    };
    let measured = measure(
        args.json,
        move |progress| fogwire_bench::find::run(&options, progress),
        move |step| match step {
            FindStep::Starting => "starting 8 nodes, linking them".to_owned(),
            FindStep::Providing => {
                "pinning the blobs on the seed, waiting for their keepers".to_owned()
            }
            FindStep::Round { round } => format!("round {}", round + 1),
        },
    )
    .await?;
    let Some(report) = measured else {
        return Ok(());
    };
    println!(
        "finding content beyond the neighbours: {} nodes on loopback, the holder 3 hops away, \
         each node on one core's runtime; medians of {} rounds",
        report.nodes, report.rounds
    );
    println!("baselines, same run:");
    println!(
        "  the route's round trip to the holder:                    {:>9.2} ms",
        report.route_rtt_ms
    );
    println!(
        "  asking the keepers alone (store providers):              {:>9.2} ms",
        report.lookup_ms
    );
    println!(
        "\n{:<56} {:>13} {:>13}  {:>7}",
        "", "TOLD --from", "FOUND", "RATIO"
    );
    println!(
        "{:<56} {:>10.2} ms {:>10.2} ms  {:>6.2}×",
        format!(
            "fetch a {} blob, start to end",
            format_bytes(report.small_bytes as u64)
        ),
        report.small_known_ms,
        report.small_found_ms,
        report.small_found_to_known
    );
    println!(
        "{:<56} {:>13} {:>13}  {:>6.2}×",
        format!("fetch a {} blob", format_bytes(report.large_bytes as u64)),
        rate(report.large_known_bytes_per_sec),
        rate(report.large_found_bytes_per_sec),
        report.large_found_to_known
    );
    Ok(())
}

async fn transfer(args: TransferArgs) -> anyhow::Result<()> {
    use fogwire_bench::transfer::{Options as TransferOptions, Step as TransferStep};
    debug_warning("transfer");
    let options = TransferOptions {
        blob_bytes: args.size.max(1),
        capped_bytes: args.capped_size.max(1),
        cap_bytes_per_sec: args.cap.max(1),
        rounds: args.rounds.clamp(1, 100),
        dir: args.dir.unwrap_or_else(std::env::temp_dir),
        ..TransferOptions::default()
    };
    let measured = measure(
        args.json,
        move |progress| fogwire_bench::transfer::run(&options, progress),
        move |step| match step {
            TransferStep::Writing => "writing the test files".to_owned(),
            TransferStep::Starting => "starting the nodes, seeding".to_owned(),
            TransferStep::Link { round } => format!("round {}: bare link", round + 1),
            TransferStep::Copy { round } => format!("round {}: copying the file", round + 1),
            TransferStep::FileOverLink { round } => {
                format!("round {}: the file over a bare link", round + 1)
            }
            TransferStep::OnePeer { round } => {
                format!("round {}: fetch from one peer", round + 1)
            }
            TransferStep::CappedOne { round } => {
                format!("round {}: fetch from one capped peer", round + 1)
            }
            TransferStep::CappedThree { round } => {
                format!("round {}: fetch from three capped peers", round + 1)
            }
        },
    )
    .await?;
    let Some(report) = measured else {
        return Ok(());
    };
    println!(
        "replication on loopback, every node on one core's runtime; medians of {} rounds",
        report.rounds
    );
    println!("baselines, same run:");
    println!(
        "  one bare link between two nodes, 64 KiB messages:                {}",
        rate(report.link_bytes_per_sec)
    );
    println!(
        "  the blob's file sent over a bare link and written, unverified:   {}",
        rate(report.file_over_link_bytes_per_sec)
    );
    println!(
        "  copying the blob's file to a new file on this machine's disk:    {}\n",
        rate(report.copy_bytes_per_sec)
    );
    println!("{:<52} {:>13}  {:>8}", "", "SPEED", "RATIO");
    println!(
        "{:<52} {:>13}  {:>7.2}×  (of the bare link; {:.2}× of the file over it)",
        format!(
            "fetch a {} blob from one peer",
            format_bytes(report.blob_bytes)
        ),
        rate(report.one_peer_bytes_per_sec),
        report.one_peer_to_link,
        report.one_peer_to_file_over_link
    );
    println!(
        "{:<52} {:>13}  {:>8}",
        format!(
            "fetch {} from 1 peer capped at {}",
            format_bytes(report.capped_bytes),
            rate(report.cap_bytes_per_sec as f64)
        ),
        rate(report.capped_one_bytes_per_sec),
        "1.00×"
    );
    println!(
        "{:<52} {:>13}  {:>7.2}×  (of one capped peer)",
        "the same from 3 such peers at once",
        rate(report.capped_three_bytes_per_sec),
        report.three_to_one
    );
    let shares: Vec<String> = report
        .capped_three_shares
        .iter()
        .map(|bytes| format_bytes(*bytes))
        .collect();
    println!("  bytes from each of the three: {}", shares.join(", "));
    println!(
        "\nCPU per GiB moved (both nodes, all threads): bare link {:.2} s, file over it {:.2} s, \
         fetch {:.2} s;\nwith {} cores shared by both ends, the fetch can reach at most {:.2}× of the bare link here",
        report.link_cpu_secs_per_gib,
        report.file_over_link_cpu_secs_per_gib,
        report.one_peer_cpu_secs_per_gib,
        report.cores,
        if report.one_peer_cpu_secs_per_gib > 0.0 {
            (report.link_cpu_secs_per_gib / report.one_peer_cpu_secs_per_gib).min(1.0)
        } else {
            0.0
        }
    );
    Ok(())
}

async fn store(args: StoreArgs) -> anyhow::Result<()> {
    use fogwire_bench::store::{Options as StoreOptions, Step as StoreStep};
    debug_warning("store");
    let options = StoreOptions {
        file_bytes: args.size.max(1),
        rounds: args.rounds.clamp(1, 100),
        dir: args.dir.unwrap_or_else(std::env::temp_dir),
    };
    let measured = measure(
        args.json,
        move |progress| fogwire_bench::store::run(&options, progress),
        move |step| match step {
            StoreStep::Writing => "writing the test file".to_owned(),
            StoreStep::Baseline { round, threads } => {
                format!("round {}: baseline, {threads} thread(s)", round + 1)
            }
            StoreStep::Copy { round } => format!("round {}: copying the file", round + 1),
            StoreStep::AddReference { round } => {
                format!("round {}: store add --reference", round + 1)
            }
            StoreStep::Add { round } => format!("round {}: store add", round + 1),
            StoreStep::Read { round } => format!("round {}: verified read", round + 1),
        },
    )
    .await?;
    let Some(report) = measured else {
        return Ok(());
    };
    println!(
        "the store on a {} file in the page cache; medians of {} interleaved rounds",
        format_bytes(report.file_bytes),
        report.rounds
    );
    println!(
        "baselines, same file, same run: {} {}; {} {}; copying it (the disk's floor for any copy) {}",
        report.baseline,
        rate(report.baseline_bytes_per_sec),
        report.baseline_store_threads,
        rate(report.baseline_store_threads_bytes_per_sec),
        rate(report.copy_bytes_per_sec)
    );
    println!(
        "each figure beside the baseline on as many threads as it uses (the store hashes on {}, reads on 1)\n",
        report.store_threads
    );
    println!(
        "{:<40} {:>7}  {:>13}  {:>10}  {:>8}",
        "", "THREADS", "SPEED", "×BLAKE3", "×COPY"
    );
    let threads = report.store_threads;
    println!(
        "{:<40} {:>7}  {:>13}  {:>10.2}  {:>8}",
        "store add --reference (hash, outboard)",
        threads,
        rate(report.add_reference_bytes_per_sec),
        report.add_reference_to_baseline,
        "-"
    );
    println!(
        "{:<40} {:>7}  {:>13}  {:>10.2}  {:>8.2}",
        "store add (copy, hash, outboard)",
        threads,
        rate(report.add_bytes_per_sec),
        report.add_to_baseline,
        report.add_to_copy
    );
    println!(
        "{:<40} {:>7}  {:>13}  {:>10.2}  {:>8}",
        "read back, every chunk group verified",
        1,
        rate(report.read_bytes_per_sec),
        report.read_to_baseline,
        "-"
    );
    Ok(())
}

fn debug_warning(command: &str) {
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this is a debug build; numbers will be far below what fogwire can do. \
             Use `cargo run --release -- bench {command}`."
        );
    }
}

async fn socks(args: SocksArgs) -> anyhow::Result<()> {
    use fogwire_bench::socks::{Options, Step};
    debug_warning("socks");
    let options = Options {
        duration: Duration::from_secs_f64(args.seconds.clamp(0.1, 600.0)),
        rounds: args.rounds.clamp(1, 100),
        connects: args.connects.clamp(1, 10_000),
    };
    let measured = measure(
        args.json,
        move |progress| fogwire_bench::socks::run(&options, progress),
        |step| match step {
            Step::Setup => "four nodes in a line, exits at N1 and N3, two proxies at N0".to_owned(),
            Step::Download { round, hops } => {
                format!("round {}: download, {hops} hop(s)", round + 1)
            }
            Step::FirstBytes { round, hops: 0 } => {
                format!("round {}: first bytes, direct", round + 1)
            }
            Step::FirstBytes { round, hops } => {
                format!("round {}: first bytes, {hops} hop(s)", round + 1)
            }
        },
    )
    .await?;
    let Some(report) = measured else {
        return Ok(());
    };
    println!(
        "a download from a TCP server on loopback through fogwire's SOCKS proxy and an exit (4 nodes \
         in a line, each on its own one-thread runtime)"
    );
    println!(
        "baseline: the same download over a bare TCP connection, same run; medians of {} \
         interleaved rounds\n",
        report.rounds
    );
    let mut table = Table::new(
        &[
            "path",
            "download",
            "gbit/s",
            "×direct",
            "first byte",
            "route rtt",
            "goal",
        ],
        &[1, 2, 3, 4, 5, 6],
    );
    let mut missed = Vec::new();
    for path in &report.paths {
        let goal = path.first_byte_goal_ms.map_or_else(
            || "-".to_owned(),
            |goal| {
                if path.first_byte_ms > goal {
                    missed.push(path.path.clone());
                }
                format!("≤ {goal:.3} ms")
            },
        );
        table.row([
            path.path.clone(),
            rate(path.bytes_per_sec),
            format!("{:.2}", path.bytes_per_sec * 8.0 / 1e9),
            format!("{:.2}", path.to_direct),
            format!("{:.3} ms", path.first_byte_ms),
            path.route_rtt_ms
                .map_or_else(|| "-".to_owned(), |rtt| format!("{rtt:.3} ms")),
            goal,
        ]);
    }
    table.print();
    println!(
        "
goal for the first byte: a direct connection's first byte + the route's round trip + 2 ms"
    );
    if !missed.is_empty() {
        println!("missed the first-byte goal: {}", missed.join(", "));
    }
    Ok(())
}

async fn streams(args: StreamArgs) -> anyhow::Result<()> {
    use fogwire_bench::routing::{Options as RouteOptions, Step as RouteStep};
    debug_warning("route");
    let options = RouteOptions {
        duration: Duration::from_secs_f64(args.seconds.clamp(0.1, 600.0)),
        rounds: args.rounds.clamp(1, 100),
        setups_timed: args.setups.clamp(1, 10_000),
        setups_in_a_row: args.in_a_row.clamp(1, 1_000_000),
    };
    let in_a_row = options.setups_in_a_row;
    let measured = measure(
        args.json,
        move |progress| fogwire_bench::routing::run(&options, progress),
        move |step| match step {
            RouteStep::Linking => "linking four nodes in a line".to_owned(),
            RouteStep::DirectLink { round } => format!("round {}: direct link", round + 1),
            RouteStep::Stream { round, hops } => {
                format!("round {}: stream over {hops} hop(s)", round + 1)
            }
            RouteStep::Setups { hops } => format!("setup time over {hops} hop(s)"),
            RouteStep::InARow { done } => format!("setups in a row: {done} of {in_a_row}"),
        },
    )
    .await?;
    let Some(report) = measured else {
        return Ok(());
    };
    let gbit = |bytes_per_sec: f64| bytes_per_sec * 8.0 / 1e9;
    println!(
        "one stream over a route on loopback (4 nodes in a line, each on its own one-thread runtime)"
    );
    println!(
        "baseline: one direct link between two nodes, 64 KiB messages, same run: {} ({:.2} Gbit/s); \
         medians of {} interleaved rounds\n",
        rate(report.direct_link_bytes_per_sec),
        gbit(report.direct_link_bytes_per_sec),
        report.rounds
    );
    let mut table = Table::new(&["hops", "stream", "gbit/s", "×direct link"], &[0, 1, 2, 3]);
    for stream in &report.streams {
        table.row([
            stream.hops.to_string(),
            rate(stream.bytes_per_sec),
            format!("{:.2}", gbit(stream.bytes_per_sec)),
            format!("{:.2}", stream.to_direct_link),
        ]);
    }
    table.print();
    println!(
        "\nroute setup (one round trip), beside the path's RTT measured by pings over the same route"
    );
    let mut table = Table::new(
        &["hops", "setup (med)", "max", "path rtt", "setup − rtt"],
        &[0, 1, 2, 3, 4],
    );
    for setup in &report.setups {
        table.row([
            setup.hops.to_string(),
            format!("{:.3} ms", setup.setup_median_ms),
            format!("{:.2} ms", setup.setup_max_ms),
            format!("{:.3} ms", setup.path_rtt_median_ms),
            format!("{:.3} ms", setup.beyond_rtt_median_ms),
        ]);
    }
    table.print();
    let row = &report.in_a_row;
    println!(
        "\n{} {}-hop setups in a row in {:.1} s: {} failed; median {:.3} ms, p99 {:.3} ms, max {:.2} ms",
        row.attempted, row.hops, row.total_secs, row.failed, row.median_ms, row.p99_ms, row.max_ms
    );
    println!(
        "(the relays admit {} setups per neighbour at once here; a node's default is 256, then 100/s)",
        fogwire_bench::routing::SETUPS_BURST_IN_BENCH
    );
    if row.failed > 0 {
        anyhow::bail!("{} of {} setups failed", row.failed, row.attempted);
    }
    Ok(())
}

async fn paths(args: RouteArgs) -> anyhow::Result<()> {
    if let Some(&size) = args.nodes.iter().find(|&&n| !(2..=2_000_000).contains(&n)) {
        anyhow::bail!("--nodes: {size} is outside 2..=2000000");
    }
    let quiet = args.json;
    let results = tokio::task::spawn_blocking(move || {
        fogwire_bench::route::run(&args.nodes, args.queries, |nodes| {
            if !quiet {
                eprint!("\r\x1b[K  generating and searching a graph of {nodes} nodes…");
                let _ = std::io::stderr().flush();
            }
        })
    })
    .await?;
    if quiet {
        println!("{}", serde_json::to_string_pretty(&results)?);
        return Ok(());
    }
    eprint!("\r\x1b[K");
    println!("path computation on generated graphs (mean degree 8, latencies 1–50 ms); medians");
    println!("baseline: one breadth-first traversal of the whole graph, same run\n");
    let mut table = Table::new(
        &[
            "nodes",
            "edges",
            "bfs",
            "shortest (×bfs)",
            "3–6 hops (×bfs)",
            "3 disjoint (×bfs)",
        ],
        &[0, 1, 2, 3, 4, 5],
    );
    let cell = |us: f64, bfs: f64| format!("{:.0} µs ({:.2})", us, us / bfs.max(0.001));
    for result in results {
        table.row([
            result.nodes.to_string(),
            result.edges.to_string(),
            format!("{:.0} µs", result.bfs_us),
            cell(result.shortest_us, result.bfs_us),
            cell(result.min_hops_3_us, result.bfs_us),
            cell(result.disjoint_3_us, result.bfs_us),
        ]);
    }
    table.print();
    Ok(())
}

async fn link(args: LinkArgs) -> anyhow::Result<()> {
    if let Some(&size) = args.sizes.iter().find(|&&s| s == 0 || s > 65_516) {
        anyhow::bail!("--sizes: {size} is outside 1..=65516, the link's message limit");
    }
    debug_warning("link");
    let options = Options {
        message_sizes: args.sizes,
        duration: Duration::from_secs_f64(args.seconds.clamp(0.1, 600.0)),
        rounds: args.rounds.clamp(1, 100),
    };
    let total = ((options.message_sizes.len() * 2 + 1) * options.rounds) as f64
        * options.duration.as_secs_f64();
    if !args.json {
        eprintln!("measuring for about {total:.0} s…");
    }
    // The bench runs its two nodes on runtimes of their own.
    let measured = measure(
        args.json,
        move |progress| fogwire_bench::link::run(&options, progress),
        move |step| match step {
            Step::Cipher { round, size } => {
                format!("round {}: cipher, {size}-byte blocks", round + 1)
            }
            Step::RawTcp { round } => format!("round {}: raw TCP", round + 1),
            Step::Link { round, size } => {
                format!("round {}: link, {size}-byte messages", round + 1)
            }
            Step::QuicLink { round, size } => {
                format!("round {}: link over QUIC, {size}-byte messages", round + 1)
            }
        },
    )
    .await?;
    let Some(report) = measured else {
        return Ok(());
    };
    println!("one encrypted link on loopback ({})", report.noise_params);
    println!(
        "baseline: raw TCP on loopback {}; cipher: {}, one core; medians of {} interleaved rounds",
        rate(report.raw_tcp_bytes_per_sec),
        report.cipher,
        report.rounds
    );
    println!();
    let mut table = Table::new(
        &[
            "message",
            "link",
            "cipher",
            "link/ciph",
            "(range)",
            "link/tcp",
        ],
        &[0, 1, 2, 3, 4, 5],
    );
    for size in &report.sizes {
        table.row([
            format_bytes(size.message_size as u64),
            rate(size.link_bytes_per_sec),
            rate(size.cipher_bytes_per_sec),
            format!("{:.2}", size.link_to_cipher),
            format!(
                "{:.2}–{:.2}",
                size.link_to_cipher_range.0, size.link_to_cipher_range.1
            ),
            format!("{:.2}", size.link_to_raw_tcp),
        ]);
    }
    table.print();
    println!();
    println!(
        "the same link over QUIC (UDP; TLS outside, the link's Noise inside), largest messages: {} ({:.2}x the link over TCP)",
        rate(report.quic_link_bytes_per_sec),
        report.quic_to_tcp_link
    );
    println!();
    println!(
        "the two ends are two nodes on this machine, each on its own single-threaded runtime; \
         they share its cores with the kernel's loopback."
    );
    Ok(())
}

async fn punch(args: PunchArgs) -> anyhow::Result<()> {
    debug_warning("punch");
    let tries = args.tries.clamp(1, 1000);
    let measured = measure(
        args.json,
        move |progress| fogwire_bench::punch::run(tries, progress),
        move |step: fogwire_bench::punch::Step| {
            format!(
                "try {} of {tries}: punch, then a plain dial",
                step.try_index + 1
            )
        },
    )
    .await?;
    let Some(report) = measured else {
        return Ok(());
    };
    println!("hole punching on loopback: two nodes that reach each other through a hub");
    println!(
        "direct QUIC link, from asking (over a route through the hub) to a link both keep: median {:.2} ms, slowest {:.2} ms ({} tries, {} failed)",
        report.punch_median_ms, report.punch_max_ms, report.tries, report.failed
    );
    println!(
        "baseline: a plain TCP link dialed directly (connect, handshake, first ping): median {:.2} ms",
        report.plain_link_median_ms
    );
    println!("ratio: {:.2}x", report.punch_to_plain);
    if report.failed > 0 {
        anyhow::bail!(
            "{} of {} punches made no direct link",
            report.failed,
            report.tries
        );
    }
    Ok(())
}

async fn rpc(args: RpcArgs) -> anyhow::Result<()> {
    use fogwire_bench::rpc::{Options as RpcOptions, Step as RpcStep};
    debug_warning("rpc");
    let options = RpcOptions {
        round_trips: args.round_trips.clamp(1, 1_000_000),
        in_flight: args.in_flight.clamp(1, 1024),
        calls: args.calls.clamp(1, 10_000_000),
        rounds: args.rounds.clamp(1, 100),
    };
    let measured = measure(
        args.json,
        move |progress| fogwire_bench::rpc::run(&options, progress),
        |step| match step {
            RpcStep::Linking => "linking two nodes".to_owned(),
            RpcStep::RoundTrips { round } => format!("round {}: bare round trips", round + 1),
            RpcStep::Calls { round } => format!("round {}: calls one at a time", round + 1),
            RpcStep::Throughput { round } => format!("round {}: calls in flight", round + 1),
        },
    )
    .await?;
    let Some(report) = measured else {
        return Ok(());
    };
    println!(
        "the service RPC on one encrypted link on loopback (each end on a one-thread runtime); medians of {} rounds",
        report.rounds
    );
    println!(
        "baseline, same run: a 16-byte link message to the peer and back: {:.1} µs\n",
        report.link_round_trip_us
    );
    println!(
        "one call (16-byte argument, answered with it):  {:>8.1} µs   ×{:.2} of the round trip; the RPC adds {:.1} µs",
        report.call_us,
        report.call_us / report.link_round_trip_us.max(f64::MIN_POSITIVE),
        report.overhead_us
    );
    println!(
        "calls with {} in flight:                        {:>8.0} calls/s",
        report.in_flight, report.calls_per_sec
    );
    Ok(())
}

async fn compute(args: ComputeArgs) -> anyhow::Result<()> {
    use fogwire_bench::compute::{Options as ComputeOptions, Step as ComputeStep};
    debug_warning("compute");
    let options = ComputeOptions {
        workers: args.workers.clamp(1, 64),
        slots: args.slots.clamp(1, 256),
        replicas: args.replicas.clamp(1, 9),
        latency_jobs: args.latency_jobs.clamp(1, 100_000),
        tasks: args.tasks.clamp(1, 4096),
        rounds: args.rounds.clamp(1, 100),
    };
    if usize::from(options.replicas) > options.workers {
        anyhow::bail!(
            "--replicas {} needs at least that many --workers",
            options.replicas
        );
    }
    let measured = measure(
        args.json,
        move |progress| fogwire_bench::compute::run(&options, progress),
        |step| match step {
            ComputeStep::Direct => "running the module directly".to_owned(),
            ComputeStep::Starting => "starting a hub and its workers".to_owned(),
            ComputeStep::Latency { round } => format!("round {}: one-task jobs", round + 1),
            ComputeStep::Throughput { round } => format!("round {}: a many-task job", round + 1),
            ComputeStep::Paid => "one-task jobs, paid for through the ledger".to_owned(),
        },
    )
    .await?;
    let Some(report) = measured else {
        return Ok(());
    };
    println!(
        "jobs on a hub and {} workers, real nodes on loopback, {} replicas per task (commit, reveal, quorum); medians of {} rounds",
        report.workers, report.replicas, report.rounds
    );
    println!(
        "baseline, same run: the trivial module run directly in wasmtime: {:.1} µs ({:.0} runs/s on one thread)\n",
        report.direct_us, report.direct_runs_per_sec
    );
    println!(
        "trivial task, submit to accepted result:  {:>8.2} ms   ×{:.0} of the direct run",
        report.latency_ms,
        report.latency_ms * 1000.0 / report.direct_us.max(f64::MIN_POSITIVE)
    );
    println!(
        "the same, paid (escrow, then payout):     {:>8.2} ms   payment adds {:.2} ms",
        report.paid_latency_ms,
        report.paid_latency_ms - report.latency_ms
    );
    println!(
        "tasks accepted per second:                {:>8.0}      ({:.0} replica runs/s; ×{:.2} of direct runs/s)",
        report.tasks_per_sec,
        report.tasks_per_sec * f64::from(report.replicas),
        report.tasks_per_sec * f64::from(report.replicas)
            / report.direct_runs_per_sec.max(f64::MIN_POSITIVE)
    );
    println!(
        "\nRPC calls per second on one link: `fogwire bench rpc`. All nodes share this machine's cores."
    );
    Ok(())
}

/// The goal of issue 16 for placing 100 services on 1,000 members.
const PLACEMENT_GOAL_MS: f64 = 10.0;

async fn cluster(args: ClusterArgs) -> anyhow::Result<()> {
    use fogwire_bench::cluster::{Options as ClusterOptions, Step as ClusterStep};
    debug_warning("cluster");
    let options = ClusterOptions {
        members: args.members.clamp(1, 100_000),
        services: args.services.clamp(1, 4_096),
        rounds: args.rounds.clamp(1, 1_000),
    };
    let sizes: Vec<usize> = args.boards.into_iter().filter(|size| *size >= 2).collect();
    let rounds = args.board_rounds.clamp(1, 100);
    if args.json {
        // One document with both halves.
        let (placement, membership) = tokio::task::spawn_blocking(move || {
            let placement = fogwire_bench::cluster::run(&options, &mut |_| {});
            crate::boards::run(&sizes, rounds, &mut |_| {}).map(|boards| (placement, boards))
        })
        .await??;
        let report = serde_json::json!({ "placement": placement, "membership": membership });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let measured = measure(
        false,
        move |progress| Ok::<_, anyhow::Error>(fogwire_bench::cluster::run(&options, progress)),
        |step| match step {
            ClusterStep::Members => "making the members".to_owned(),
            ClusterStep::Round { round } => format!("round {}: placing", round + 1),
            ClusterStep::Failures => "a box of 32: each board failing".to_owned(),
        },
    )
    .await?;
    let Some(report) = measured else {
        return Ok(());
    };
    println!(
        "placing {} services on {} members, on one thread; medians of {} rounds",
        report.services, report.members, report.rounds
    );
    println!(
        "baseline, same run: sorting {} scored pairs, as placement does: {:.2} ms\n",
        report.members * report.services,
        report.sort_ms
    );
    println!(
        "placement: {:.2} ms (max {:.2})   ×{:.2} of the baseline   goal ≤ {PLACEMENT_GOAL_MS} ms",
        report.place_ms,
        report.place_max_ms,
        report.place_ms / report.sort_ms.max(f64::MIN_POSITIVE)
    );
    println!(
        "a box of 32 running 24 services: one board's failure moves {:.2} instances on average (its own: 0.75), at most {}",
        report.box_moved_mean, report.box_moved_max
    );
    if sizes.is_empty() {
        return Ok(());
    }
    let sizes_run = sizes.clone();
    let reports = measure(
        false,
        move |progress| crate::boards::run(&sizes_run, rounds, progress),
        |step: String| step,
    )
    .await?
    .unwrap_or_default();
    let Some(first) = reports.first() else {
        return Ok(());
    };
    println!(
        "\nmembership: real `fogwire node` processes on this machine, each given only the join code, \
         finding each other by mDNS; medians of {rounds} rounds"
    );
    println!(
        "baseline, same run: the protocol period each size kept (seconds per probe, from the boards' \
         counters; configured {:.0} ms, stretched by Lifeguard's local health when boards are starved); \
         minimum suspicion {:.0} ms\n",
        first.probe_interval_ms, first.suspicion_min_ms
    );
    let mut table = Table::new(
        &[
            "boards",
            "period kept",
            "processes up",
            "converged",
            "after up",
            "×period",
            "kill -9 known everywhere",
            "×period",
            "its service moved",
            "goals",
        ],
        &[0, 1, 2, 3, 4, 5, 6, 7, 8],
    );
    for report in &reports {
        let period = report.measured_period_ms.max(f64::MIN_POSITIVE);
        table.row([
            report.boards.to_string(),
            format!("{:.0} ms", report.measured_period_ms),
            format!("{:.0} ms", report.processes_up_ms),
            format!("{:.0} ms", report.converged_ms),
            format!("{:.0} ms", report.converged_after_up_ms),
            format!("{:.2}", report.converged_ms / period),
            format!("{:.0} ms", report.failure_known_ms),
            format!("{:.2}", report.failure_known_ms / period),
            format!("{:.0} ms", report.service_moved_ms),
            if report.boards == 8 {
                "converged ≤ 2 s; known ≤ 5 s; moved ≤ 10 s".to_owned()
            } else {
                "known ≤ 5 s; moved ≤ 10 s".to_owned()
            },
        ]);
    }
    table.print();
    println!(
        "(converged: from spawning the first process; after up: from every API answering; \
         figures resolve to {} ms)",
        crate::boards::POLL.as_millis()
    );
    Ok(())
}

async fn market(args: MarketArgs) -> anyhow::Result<()> {
    use fogwire_bench::market::{Options as MarketOptions, Step as MarketStep};
    debug_warning("market");
    let options = MarketOptions {
        orders: args.orders.clamp(1, 100_000_000),
        rounds: args.rounds.clamp(1, 100),
    };
    let measured = measure(
        args.json,
        move |progress| fogwire_bench::market::run(&options, progress),
        |step| match step {
            MarketStep::Round { round } => format!("round {}: matching", round + 1),
        },
    )
    .await?;
    let Some(report) = measured else {
        return Ok(());
    };
    println!(
        "the matching engine: {} asks and bids of mixed requirements through one book, on one thread; medians of {} rounds",
        report.orders, report.rounds
    );
    println!(
        "baseline, same run: an insert and a removal in a BTreeMap per order: {:.0} orders/s\n",
        report.btree_ops_per_sec
    );
    println!(
        "orders matched per second: {:>12.0}   ×{:.2} of the baseline ({} fills, {} deals per round)",
        report.orders_per_sec,
        report.orders_per_sec / report.btree_ops_per_sec.max(f64::MIN_POSITIVE),
        report.fills,
        report.deals
    );
    Ok(())
}

async fn ledger(args: LedgerArgs) -> anyhow::Result<()> {
    use fogwire_bench::ledger::{Options as LedgerOptions, Step as LedgerStep};
    debug_warning("ledger");
    let options = LedgerOptions {
        senders: args.senders.clamp(1, 4096),
        transactions: args.transactions.clamp(1, 10_000_000),
        payments: args.payments.clamp(1, 100_000),
        rounds: args.rounds.clamp(1, 100),
    };
    let measured = measure(
        args.json,
        move |progress| fogwire_bench::ledger::run(&options, progress),
        |step| match step {
            LedgerStep::Signing => "signing the transactions".to_owned(),
            LedgerStep::Baselines { round } => format!("round {}: baselines", round + 1),
            LedgerStep::Service { round } => {
                format!("round {}: in the ledger's process", round + 1)
            }
            LedgerStep::Rpc { round } => format!("round {}: from another node", round + 1),
            LedgerStep::Payments { round } => format!("round {}: payments one by one", round + 1),
        },
    )
    .await?;
    let Some(report) = measured else {
        return Ok(());
    };
    let ratio = |a: f64, b: f64| a / b.max(f64::MIN_POSITIVE);
    println!(
        "the ledger: {} transfers from {} senders at once, each signed, checked, applied and durable in redb before it is answered; medians of {} rounds",
        report.transactions, report.senders, report.rounds
    );
    println!("baselines, same run, one thread:");
    println!(
        "  signature checks alone:                 {:>9.0} /s",
        report.verify_per_sec
    );
    println!(
        "  the state machine alone:                {:>9.0} /s",
        report.apply_per_sec
    );
    println!(
        "  one durable redb commit per transaction: {:>8.0} /s\n",
        report.durable_commits_per_sec
    );
    println!(
        "transactions/s, in the ledger's process:  {:>9.0} /s   ×{:.2} of signature checks alone, ×{:.0} of a commit each",
        report.service_tx_per_sec,
        ratio(report.service_tx_per_sec, report.verify_per_sec),
        ratio(report.service_tx_per_sec, report.durable_commits_per_sec)
    );
    println!(
        "transactions/s, from another node (RPC):  {:>9.0} /s   ×{:.2} of signature checks alone",
        report.rpc_tx_per_sec,
        ratio(report.rpc_tx_per_sec, report.verify_per_sec)
    );
    println!(
        "one payment, submitted to durable receipt: {:>8.2} ms   a read over the same link: {:.2} ms (×{:.1})",
        report.payment_ms,
        report.read_ms,
        ratio(report.payment_ms, report.read_ms)
    );
    Ok(())
}

/// Runs a benchmark on a blocking thread (it runs nodes on runtimes of
/// its own), showing each step on one line of stderr unless `json`. With
/// `json` the report is printed as JSON and none is returned; otherwise
/// the caller prints its table.
async fn measure<R, S, E>(
    json: bool,
    run: impl FnOnce(&mut dyn FnMut(S)) -> Result<R, E> + Send + 'static,
    describe: impl Fn(S) -> String + Send + 'static,
) -> anyhow::Result<Option<R>>
where
    R: serde::Serialize + Send + 'static,
    E: Into<anyhow::Error> + Send + 'static,
{
    let report = tokio::task::spawn_blocking(move || {
        run(&mut |step| {
            if json {
                return;
            }
            eprint!("\r\x1b[K  {}…", describe(step));
            let _ = std::io::stderr().flush();
        })
    })
    .await?
    .map_err(Into::into)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(None);
    }
    eprint!("\r\x1b[K");
    Ok(Some(report))
}
