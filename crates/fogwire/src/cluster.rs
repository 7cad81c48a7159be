//! Cluster commands: init, join, status, members, peering.

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
    /// Publish a manifest (TOML: the services the cluster runs, see
    /// docs/protocol/cluster.md §2) as the cluster's next version; every
    /// board takes it and runs what the placement gives it.
    ///
    /// Only the board that made the cluster can: the manifest is signed
    /// with the cluster key. An invalid manifest is refused here, naming
    /// the line or service and what to fix.
    Apply(ApplyArgs),
    /// The manifest version this board runs by.
    Manifest(ReadArgs),
    /// Where each service instance runs (every board computes the same),
    /// and how this board's own services are doing.
    Placement(ReadArgs),
    /// Ask another cluster, by its id (fwcluster1…, its key's public
    /// half), to peer with this one: its owner board gets the request and
    /// agrees with `fogwire cluster accept`; then the boards of both
    /// clusters link to each other.
    ///
    /// Run it on the board that made this cluster (it signs with the
    /// cluster key). It fails, saying why, if the other cluster's owner
    /// board cannot be found or reached.
    Peer(PeerArgs),
    /// Agree to another cluster's request to peer (`fogwire cluster
    /// peers` lists the requests), on the board that made this cluster.
    Accept(PeerArgs),
    /// The clusters this one peers with, has asked, or was asked by.
    Peers(ReadArgs),
}

#[derive(Debug, clap::Args)]
pub struct PeerArgs {
    /// The other cluster's id (fwcluster1…; `fogwire cluster status`
    /// prints a cluster's).
    cluster: String,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// The manifest file (TOML).
    file: std::path::PathBuf,
    #[arg(long)]
    json: bool,
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
        Command::Apply(args) => {
            let text = std::fs::read_to_string(&args.file)
                .map_err(|error| anyhow::anyhow!("cannot read {}: {error}", args.file.display()))?;
            let status = client
                .cluster_apply(text)
                .await
                .map_err(|error| anyhow::anyhow!("{}: {error}", args.file.display()))?;
            if args.json {
                return print_json(&status);
            }
            let seq = status.manifest.as_ref().map_or(0, |manifest| manifest.seq);
            println!(
                "Published manifest version {seq} of cluster {}; every board takes it as it reaches them.",
                status.cluster.as_deref().map(short).unwrap_or_default()
            );
            println!("`fogwire cluster placement` shows where each service runs.");
            Ok(())
        }
        Command::Manifest(args) => {
            let status = client.cluster().await?;
            if args.json {
                return print_json(&status.manifest);
            }
            print_manifest(&status);
            Ok(())
        }
        Command::Placement(args) => {
            let status = client.cluster().await?;
            if args.json {
                let report = serde_json::json!({
                    "placement": status.placement,
                    "unplaced": status.unplaced,
                    "services": status.services,
                });
                return print_json(&report);
            }
            print_placement(&status);
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
        Command::Peer(args) => {
            let peering = client.cluster_peer(&args.cluster).await?;
            if args.json {
                return print_json(&peering);
            }
            let mine = client.cluster().await?.cluster.unwrap_or_default();
            println!(
                "Asked cluster {} to peer; on the board that made it, its owner agrees with:\n\n  fogwire cluster accept {mine}\n",
                short(&peering.cluster)
            );
            Ok(())
        }
        Command::Accept(args) => {
            let peering = client.cluster_peer_accept(&args.cluster).await?;
            if args.json {
                return print_json(&peering);
            }
            println!(
                "Peered with cluster {}: this cluster's boards link to its {} boards.",
                short(&peering.cluster),
                peering.boards.len()
            );
            println!("`fogwire cluster peers` shows the links.");
            Ok(())
        }
        Command::Peers(args) => {
            let peers = client.cluster_peers().await?;
            if args.json {
                return print_json(&peers);
            }
            if peers.peerings.is_empty() {
                println!("No peered clusters; `fogwire cluster peer <fwcluster1…>` asks one.");
                return Ok(());
            }
            let mut table = Table::new(
                &["cluster", "state", "boards", "linked", "asked by"],
                &[2, 3],
            );
            for peering in &peers.peerings {
                table.row(vec![
                    peering.cluster.clone(),
                    peering.state.clone(),
                    peering.boards.len().to_string(),
                    peering.linked.to_string(),
                    peering.requester.as_deref().map(short).unwrap_or_default(),
                ]);
            }
            table.print();
            if peers
                .peerings
                .iter()
                .any(|peering| peering.state == "asked")
            {
                println!("\nAgree to an asked peering with `fogwire cluster accept <cluster>`.");
            }
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

fn print_manifest(status: &ClusterStatus) {
    if status.cluster.is_none() {
        println!("{NOT_IN_A_CLUSTER}");
        return;
    }
    let Some(manifest) = &status.manifest else {
        println!(
            "No manifest yet: `fogwire cluster apply <manifest.toml>` on the board that made the cluster publishes one."
        );
        if let Some(why) = &status.manifest_refused {
            println!("{why}");
        }
        return;
    };
    println!(
        "manifest version {} (blob {}), published {} ago",
        manifest.seq,
        short(&manifest.content),
        crate::output::format_age_ms(manifest.published_at_unix_ms)
    );
    let mut table = Table::new(
        &[
            "service", "kind", "count", "cores", "memory", "disk", "pin", "shares", "blobs",
            "config",
        ],
        &[2, 3, 4, 5, 8],
    );
    for service in &manifest.services {
        table.row([
            service.name.clone(),
            service.kind.clone(),
            service.count.to_string(),
            service.cores.to_string(),
            format!("{} MiB", service.memory_mib),
            format!("{} MiB", service.disk_mib),
            service
                .pin
                .as_deref()
                .map(short)
                .unwrap_or_else(|| "-".into()),
            if service.shares_board { "yes" } else { "no" }.to_owned(),
            service.blobs.len().to_string(),
            service
                .config
                .as_deref()
                .map(short)
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    table.print();
    if let Some(why) = &status.manifest_refused {
        println!(
            "\nA newer version was refused (this board keeps version {}): {why}",
            manifest.seq
        );
    }
}

fn print_placement(status: &ClusterStatus) {
    if status.cluster.is_none() {
        println!("{NOT_IN_A_CLUSTER}");
        return;
    }
    if status.manifest.is_none() {
        println!(
            "No manifest yet, so nothing is placed: `fogwire cluster apply <manifest.toml>` on the board that made the cluster."
        );
        return;
    }
    let mut table = Table::new(&["service", "replica", "board"], &[1]);
    for placed in &status.placement {
        let board = if placed.board == status.node_id {
            format!("{} (this board)", short(&placed.board))
        } else {
            short(&placed.board)
        };
        table.row([placed.service.clone(), placed.replica.to_string(), board]);
    }
    table.print();
    if !status.unplaced.is_empty() {
        println!(
            "\nNo live member can take: {} (too few boards, or not enough cores, memory or disk)",
            status.unplaced.join(", ")
        );
    }
    if status.services.is_empty() {
        println!("\nNothing is placed on this board.");
        return;
    }
    println!("\nOn this board:");
    for service in &status.services {
        match &service.error {
            Some(error) => println!(
                "  {} ({}): {} — {error}",
                service.name, service.kind, service.state
            ),
            None => println!(
                "  {} ({}): {} for {:.0}s",
                service.name, service.kind, service.state, service.since_secs
            ),
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
    match &status.manifest {
        Some(manifest) => println!(
            "manifest  version {}, {} services; on this board: {}",
            manifest.seq,
            manifest.services.len(),
            if status.services.is_empty() {
                "none".to_owned()
            } else {
                status
                    .services
                    .iter()
                    .map(|service| format!("{} ({})", service.name, service.state))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
        None => println!(
            "manifest  none yet (`fogwire cluster apply` on the board that made the cluster)"
        ),
    }
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
