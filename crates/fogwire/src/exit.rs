//! Exits and the SOCKS proxy: `fogwire exits`, `fogwire proxy`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::Path;

use fogwire_api::{ProxyLine, ProxyRequest, ProxyStatus};
use fogwire_ledger::format_coins;

use crate::control::{ReadArgs, client, print_json};
use crate::output::{Table, format_bytes, short};

/// `fogwire proxy`: a SOCKS 5 proxy for as long as the command runs.
#[derive(Debug, clap::Args)]
pub struct ProxyArgs {
    /// Where to serve SOCKS 5 (loopback only; `[socks] listen` in
    /// fogwire.toml serves for good).
    #[arg(long, default_value = "127.0.0.1:1080", value_name = "ADDR")]
    listen: SocketAddr,
    /// The exit to leave by: a node id or a prefix of one (see `fogwire
    /// exits`). Default: the cheapest, nearest exit.
    #[arg(long, value_name = "NODE")]
    exit: Option<String>,
    /// Links on each route to the exit, at least: more hide you better
    /// from the exit and cost more.
    #[arg(long, default_value_t = 1, value_name = "N")]
    min_hops: usize,
}

pub async fn exits(home: &Path, args: ReadArgs) -> anyhow::Result<()> {
    let report = client(home)?.exits().await?;
    if args.json {
        return print_json(&report);
    }
    if report.exits.is_empty() {
        println!(
            "No exit is known in the network yet (a node serves as one with [exit] serve = true)."
        );
    } else {
        let mut table = Table::new(
            &["exit", "price/GiB", "latency", "hops", "policy"],
            &[1, 2, 3],
        );
        for exit in &report.exits {
            table.row([
                exit.node_id.clone(),
                format_coins(exit.price_per_gib),
                exit.latency_ms
                    .map_or_else(|| "no path".into(), |ms| format!("{ms:.2} ms")),
                exit.hops
                    .map_or_else(|| "-".into(), |hops| hops.to_string()),
                if exit.vpn {
                    format!("{}; vpn", exit.policy)
                } else {
                    exit.policy.clone()
                },
            ]);
        }
        table.print();
        println!("\nThe first reachable exit is the one `fogwire proxy` picks without --exit.");
    }
    if let Some(serving) = &report.serving {
        println!(
            "\nThis node serves as an exit ({}; {}/GiB): {} connected, {} refused, {} failed, \
             {} out, {} in, {} clients now",
            serving.policy,
            format_coins(serving.price_per_gib),
            serving.connected,
            serving.refused,
            serving.failed,
            format_bytes(serving.bytes_out),
            format_bytes(serving.bytes_in),
            serving.clients_now,
        );
    }
    if let Some(proxy) = &report.proxy {
        println!("\n{}", proxy_line(proxy));
    }
    for usage in &report.usage {
        let owed = fogwire_ledger::proto::receipt::cost(usage.receipted, usage.price_per_gib);
        println!(
            "\nexit {} carried {} for this node; receipts sent for {} ({} at {}/GiB)",
            short(&usage.exit),
            format_bytes(usage.bytes),
            format_bytes(usage.receipted),
            format_coins(owed),
            format_coins(usage.price_per_gib),
        );
    }
    Ok(())
}

fn proxy_line(proxy: &ProxyStatus) -> String {
    let exits: Vec<String> = proxy
        .routes
        .iter()
        .map(|route| short(&route.exit))
        .collect();
    format!(
        "SOCKS 5 on {} via {}: {} connections ({} failed), {} up, {} down",
        proxy.listen,
        if exits.is_empty() {
            "no route yet".to_owned()
        } else {
            format!("exit {}", exits.join(", "))
        },
        proxy.connections,
        proxy.failed,
        format_bytes(proxy.bytes_up),
        format_bytes(proxy.bytes_down),
    )
}

pub async fn proxy(home: &Path, args: ProxyArgs) -> anyhow::Result<()> {
    let request = ProxyRequest {
        listen: args.listen,
        exit: args.exit,
        min_hops: Some(args.min_hops),
    };
    let interactive = std::io::stderr().is_terminal();
    let spinner = if interactive {
        indicatif::ProgressBar::new_spinner()
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut first = true;
    let mut failure = None;
    let outcome = client(home)?
        .proxy(&request, |line| match line {
            ProxyLine::Status(status) => {
                if first {
                    first = false;
                    println!(
                        "SOCKS 5 proxy on {listen}, leaving by {exit}; Ctrl-C stops it. Try:\n  \
                         curl --socks5-hostname {listen} https://example.com/",
                        listen = status.listen,
                        exit = status.exit.as_deref().map_or_else(
                            || "the cheapest, nearest exit".to_owned(),
                            |exit| format!("exit {}", short(exit))
                        ),
                    );
                }
                spinner.set_message(proxy_line(&status));
                spinner.tick();
            }
            ProxyLine::Error(error) => failure = Some(error),
        })
        .await;
    spinner.finish_and_clear();
    outcome?;
    match failure {
        Some(error) => anyhow::bail!("the proxy stopped: {error}"),
        None => anyhow::bail!("the node closed the proxy"),
    }
}

/// `fogwire ip`: a node's IPv6 address, derived from its id.
#[derive(Debug, clap::Args)]
pub struct IpArgs {
    /// The node: an id, or the start of one the running node knows
    /// (`fogwire nodes`). Default: this node (from its key file).
    node: Option<String>,
    /// Print {"node_id", "address"} as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn ip(home: &Path, args: IpArgs) -> anyhow::Result<()> {
    let node: fogwire_identity::NodeId = match &args.node {
        None => crate::init::node_id(home)?,
        Some(name) => match name.trim().parse() {
            Ok(id) => id,
            Err(_) => {
                let prefix = fogwire_identity::prefix_of(name);
                let known = client(home)?.nodes().await?;
                let matching: Vec<&str> = known
                    .iter()
                    .map(|node| node.node_id.as_str())
                    .filter(|id| id.starts_with(prefix))
                    .collect();
                match matching.as_slice() {
                    [one] => one.parse()?,
                    [] => anyhow::bail!(
                        "no known node's id starts with {prefix} (see `fogwire nodes`)"
                    ),
                    _ => anyhow::bail!(
                        "{} known nodes' ids start with {prefix}: give more of it",
                        matching.len()
                    ),
                }
            }
        },
    };
    let address = fogwire_exit_proto::address::address_of(node.as_bytes());
    if args.json {
        return print_json(&serde_json::json!({
            "node_id": node.to_string(),
            "address": address.to_string(),
        }));
    }
    println!("{address}");
    Ok(())
}

/// `fogwire vpn`: this node's VPN.
#[derive(Debug, clap::Subcommand)]
pub enum VpnCommand {
    /// Create the TUN device (fogwire0) with this node's address and carry
    /// IPv6 to other nodes' addresses over routes. Needs the node to run
    /// as root (or with CAP_NET_ADMIN).
    ///
    /// With --exit, also send this host's IPv4 and IPv6 default routes
    /// through that exit (one whose `fogwire exits` line says "vpn"): the
    /// exit is leased first, then the routes change; fogwire's own links
    /// keep their old routes. `fogwire vpn down` gives the routes back.
    Up {
        /// Carry the default routes through this exit (a node id or name).
        #[arg(long, value_name = "NODE")]
        exit: Option<String>,
        /// Links on the route to the exit, at least.
        #[arg(long, value_name = "N", requires = "exit")]
        min_hops: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// Take the device down.
    Down {
        #[arg(long)]
        json: bool,
    },
    /// Whether it is up, its address, and its counters.
    Status(ReadArgs),
}

fn print_vpn(status: &fogwire_api::VpnStatus) {
    if !status.up {
        println!("VPN down; this node's address would be {}", status.address);
        return;
    }
    println!(
        "VPN up on {} with {} (MTU {}): {} packets ({}) out, {} ({}) in; dropped {} out, {} in ({} spoofed); {} routes",
        status.device.as_deref().unwrap_or("?"),
        status.address,
        status.mtu.unwrap_or(0),
        status.packets_out,
        format_bytes(status.bytes_out),
        status.packets_in,
        format_bytes(status.bytes_in),
        status.dropped_out,
        status.dropped_in,
        status.spoofed,
        status.routes,
    );
    if let Some(ipv4) = &status.ipv4 {
        println!("IPv4 address {ipv4}");
    }
    if let Some(exit) = &status.exit {
        let state = if status.exit_leased {
            "leased"
        } else {
            "lease lost, renewing"
        };
        println!("default routes through exit {exit} ({state})");
    }
    if let Some(gateway) = &status.gateway {
        println!(
            "exit gateway: {} clients; {} packets forwarded, {} answered; {} refused by policy, {} dropped, {} spoofed",
            gateway.clients,
            gateway.forwarded,
            gateway.answered,
            gateway.refused,
            gateway.dropped,
            gateway.spoofed
        );
    }
}

pub async fn vpn(home: &Path, command: VpnCommand) -> anyhow::Result<()> {
    let client = client(home)?;
    let (status, json) = match command {
        VpnCommand::Up {
            exit,
            min_hops,
            json,
        } => (
            client
                .vpn_up(&fogwire_api::VpnUpRequest { exit, min_hops })
                .await?,
            json,
        ),
        VpnCommand::Down { json } => (client.vpn_down().await?, json),
        VpnCommand::Status(args) => (client.vpn_status().await?, args.json),
    };
    if json {
        return print_json(&status);
    }
    print_vpn(&status);
    Ok(())
}
