//! Cluster commands: init, join, status, members.

use std::path::Path;

use fogwire_api::ClusterStatus;

use crate::control::{ReadArgs, client, print_json};
use crate::output::{Table, short};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Make a new cluster with this board in it; prints the join code the
    /// other boards join with.
    ///
    /// The cluster's key stays in this board's data directory
    /// (cluster.key, mode 0600): it signs the cluster's manifest.
    Init(ReadArgs),
    /// Join a cluster: this board finds the cluster's other boards on the
    /// local network (mDNS) and links to them by itself, and rejoins after
    /// every restart.
    ///
    /// The join code is what `fogwire cluster init` printed. It is a
    /// secret: whoever holds it can join. `[cluster] join = "…"` in
    /// fogwire.toml does the same from the start.
    Join(JoinArgs),
    /// Print the join code of this board's cluster again (any member
    /// holds it). It is a secret: whoever holds it can join.
    JoinCode(ReadArgs),
    /// This board's view of its cluster: the cluster, this board, and how
    /// many members are alive, suspected and failed.
    Status(ReadArgs),
    /// Every member this board knows, with its state (alive, suspect,
    /// dead), addresses and resources.
    Members(ReadArgs),
}

#[derive(Debug, clap::Args)]
pub struct JoinArgs {
    /// The join code (fwjoin1…).
    code: String,
    #[arg(long)]
    json: bool,
}

pub async fn run(home: &Path, command: Command) -> anyhow::Result<()> {
    let client = client(home)?;
    match command {
        Command::Init(args) => {
            let created = client.cluster_init().await?;
            if args.json {
                return print_json(&created);
            }
            println!("Made cluster {}; this board is in it.", created.cluster);
            println!("\nOn every other board of the cluster, run:\n");
            println!("  fogwire cluster join {}\n", created.join_code);
            println!(
                "(or put `join = \"{}\"` under [cluster] in its fogwire.toml). \
                 The code is a secret: whoever holds it can join.",
                created.join_code
            );
            Ok(())
        }
        Command::Join(args) => {
            let status = client.cluster_join(&args.code).await?;
            if args.json {
                return print_json(&status);
            }
            println!(
                "Joined cluster {}; looking for its boards on the local network{}.",
                status.cluster.as_deref().map(short).unwrap_or_default(),
                if status.mdns {
                    ""
                } else {
                    " (mDNS is off: link to one with `fogwire connect`)"
                }
            );
            println!("`fogwire cluster members` lists the boards found.");
            Ok(())
        }
        Command::JoinCode(args) => {
            let code = client.cluster_join_code().await?;
            if args.json {
                return print_json(&code);
            }
            println!("{}", code.join_code);
            Ok(())
        }
        Command::Status(args) => {
            let status = client.cluster().await?;
            if args.json {
                return print_json(&status);
            }
            print_status(&status);
            Ok(())
        }
        Command::Members(args) => {
            let status = client.cluster().await?;
            if args.json {
                return print_json(&status.members);
            }
            if status.cluster.is_none() {
                println!("{}", NOT_IN_A_CLUSTER);
                return Ok(());
            }
            let mut table = Table::new(
                &[
                    "member",
                    "state",
                    "for",
                    "addresses",
                    "boot",
                    "cores",
                    "memory",
                    "linked",
                ],
                &[2, 4, 5, 6],
            );
            for member in &status.members {
                let name = if member.this_board {
                    format!("{} (this board)", short(&member.node_id))
                } else {
                    short(&member.node_id)
                };
                table.row([
                    name,
                    member.state.clone(),
                    format!("{:.0}s", member.since_secs),
                    member.addrs.join(" "),
                    format!("{}.{}", member.boot, member.incarnation),
                    member.cores.to_string(),
                    format!("{} MiB", member.memory_mib),
                    if member.linked { "yes" } else { "no" }.to_owned(),
                ]);
            }
            table.print();
            Ok(())
        }
    }
}

const NOT_IN_A_CLUSTER: &str = "This board is in no cluster. `fogwire cluster init` makes one; \
     `fogwire cluster join <code>` joins one.";

fn print_status(status: &ClusterStatus) {
    let Some(cluster) = &status.cluster else {
        println!("{NOT_IN_A_CLUSTER}");
        return;
    };
    let count = |state: &str| {
        status
            .members
            .iter()
            .filter(|member| member.state == state)
            .count()
    };
    println!("cluster   {cluster}");
    println!(
        "board     {}{} (boot {}, incarnation {})",
        short(&status.node_id),
        if status.owner { ", owner" } else { "" },
        status.boot,
        status.incarnation
    );
    println!(
        "members   {} alive, {} suspect, {} dead",
        count("alive"),
        count("suspect"),
        count("dead")
    );
    println!(
        "health    {} (Lifeguard's local health: 0 is healthy, 8 the worst)",
        status.health
    );
    println!(
        "mDNS      {}",
        if status.mdns {
            "announcing and browsing on every interface"
        } else {
            "off"
        }
    );
    let counters = &status.counters;
    println!(
        "counters  {} messages, {} refused, {} probes ({} failed), {} refutations, {} boards heard",
        counters.messages,
        counters.refused,
        counters.probes,
        counters.probes_failed,
        counters.refutations,
        counters.discovered
    );
}
