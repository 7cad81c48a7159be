//! Commands that talk to the running node through its control API.

use std::path::Path;

use fogwire_api::{Peer, PeerState};
use fogwire_client::Client;
use fogwire_node::config::{CONFIG_FILE_NAME, Config};
use fogwire_node::home::DataDir;

use crate::output::{Table, format_age, format_bytes, format_duration, named, short};

#[derive(Debug, clap::Args)]
pub struct ReadArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    /// The peer: <node id>@<host>:<port> to link over TCP,
    /// <node id>@quic:<host>:<port> over QUIC (UDP), or a node id or name
    /// alone for a direct link to a node this one reaches over routes —
    /// through a relay when it is behind a NAT — made by hole punching.
    peer: String,
    /// Print the peer as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct DisconnectArgs {
    /// The peer's node id (fw1…).
    node_id: String,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// The node's configuration, and where its running API listens and the
/// token it takes.
fn running_api(
    home: &Path,
) -> anyhow::Result<(Config, std::net::SocketAddr, fogwire_control::ApiToken)> {
    let config_path = home.join(CONFIG_FILE_NAME);
    let config = Config::load(&config_path)?;
    let data_dir = DataDir::new(config.data_dir_for(&config_path));
    // The command that starts this very node, as printed.
    let not_running = |error: fogwire_node::home::DataDirError| match error {
        fogwire_node::home::DataDirError::NotRunning { .. } => anyhow::anyhow!(
            "{error}; start it with `fogwire --home {} node`",
            home.display()
        ),
        other => other.into(),
    };
    let addr = data_dir.read_api_addr().map_err(not_running)?;
    let token = data_dir.read_token().map_err(not_running)?;
    Ok((config, addr, token))
}

pub fn client(home: &Path) -> anyhow::Result<Client> {
    let (_, addr, token) = running_api(home)?;
    Ok(Client::new(addr, token.as_str()))
}

pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub async fn status(home: &Path, args: ReadArgs) -> anyhow::Result<()> {
    let status = client(home)?.status().await?;
    if args.json {
        return print_json(&status);
    }
    println!("node id   {}", status.node_id);
    println!("version   {}", status.version);
    println!("links     {} up", status.links);
    println!(
        "peers     {} kept linked (configured or connected)",
        status.peers_wanted
    );
    println!("listen    {} (peers dial this)", status.link_listen);
    println!("uptime    {}", format_duration(status.uptime_secs));
    println!("handshakes in progress  {}", status.pending_handshakes);
    if let Some(data_dir) = status.data_dir {
        println!("data      {data_dir}");
    }
    print_reach(&status.reach);
    Ok(())
}

fn print_reach(reach: &fogwire_api::Reach) {
    let what = match reach.reachability.as_str() {
        "public" => "public: peers dialed this node at a public address",
        "private" => {
            "private: peers on public addresses cannot dial this node (behind a NAT or \
             firewall); it is reached over the links it keeps"
        }
        "local" => "local: only peers on private networks know this node, and they dialed it",
        _ => "unknown: no peer has checked this node's addresses yet",
    };
    println!("reach     {what}");
    for address in &reach.addresses {
        println!(
            "          {}  {} (seen there by {}; dialed by {}, not by {})",
            address.address,
            address.state,
            address.seen_by,
            address.confirmed_by.len(),
            address.refuted_by.len()
        );
    }
    for relay in &reach.relays {
        println!(
            "relay     {} {} ({} per GiB)",
            short(&relay.node_id),
            relay.state,
            fogwire_ledger::format_coins(relay.price_per_gib)
        );
    }
    if let Some(serving) = &reach.relay {
        println!(
            "relaying for {} of at most {} clients, {} per GiB",
            serving.clients.len(),
            serving.clients_max,
            fogwire_ledger::format_coins(serving.price_per_gib)
        );
    }
}

pub async fn peers(home: &Path, args: ReadArgs) -> anyhow::Result<()> {
    let peers = client(home)?.peers().await?;
    if args.json {
        return print_json(&peers);
    }
    if peers.is_empty() {
        println!("no peers; link one with: fogwire connect <node id>@<host>:<port>");
        return Ok(());
    }
    print_peer_table(&peers);
    Ok(())
}

fn state_text(peer: &Peer) -> String {
    match peer.state {
        PeerState::Linked => "linked".into(),
        PeerState::Connecting => "connecting".into(),
        PeerState::Waiting => match peer.retry_in_ms {
            Some(ms) => format!("retry in {:.0}s", (ms as f64 / 1000.0).ceil()),
            None => "waiting".into(),
        },
    }
}

fn print_peer_table(peers: &[Peer]) {
    let mut table = Table::new(
        &[
            "peer",
            "state",
            "pays",
            "direction",
            "via",
            "address",
            "rtt",
            "in",
            "out",
            "since",
        ],
        &[6, 7, 8, 9],
    );
    for peer in peers {
        table.row([
            named(&peer.node_id),
            state_text(peer),
            if peer.pays { "yes" } else { "-" }.into(),
            peer.direction.clone().unwrap_or_else(|| "-".into()),
            peer.transport.clone().unwrap_or_else(|| "-".into()),
            peer.address.clone().unwrap_or_else(|| "-".into()),
            peer.rtt_ms
                .map_or_else(|| "-".into(), |ms| format!("{ms:.2} ms")),
            format_bytes(peer.bytes_in),
            format_bytes(peer.bytes_out),
            peer.linked_since_unix
                .map_or_else(|| "-".into(), format_age),
        ]);
    }
    table.print();
    for peer in peers.iter().filter(|p| p.last_error.is_some()) {
        if let Some(error) = &peer.last_error {
            println!("\n{}: last attempt failed: {error}", named(&peer.node_id));
        }
    }
}

pub async fn connect(home: &Path, args: ConnectArgs) -> anyhow::Result<()> {
    let peer = client(home)?.connect(&args.peer).await?;
    if args.json {
        return print_json(&peer);
    }
    if peer.wanted {
        println!(
            "linked to {} at {} ({}, {}); the node keeps this link up until `fogwire disconnect`",
            peer.node_id,
            peer.address.as_deref().unwrap_or("?"),
            peer.direction.as_deref().unwrap_or("?"),
            peer.transport.as_deref().unwrap_or("?"),
        );
    } else {
        println!(
            "linked directly to {} at {} ({}, {}); routes to it use this link while it lasts",
            peer.node_id,
            peer.address.as_deref().unwrap_or("?"),
            peer.direction.as_deref().unwrap_or("?"),
            peer.transport.as_deref().unwrap_or("?"),
        );
    }
    Ok(())
}

pub async fn disconnect(home: &Path, args: DisconnectArgs) -> anyhow::Result<()> {
    let result = client(home)?.disconnect(&args.node_id).await?;
    if args.json {
        return print_json(&result);
    }
    if result.was_linked {
        println!(
            "closed the link to {} and stopped redialing it",
            result.node_id
        );
    } else {
        println!("stopped redialing {} (it was not linked)", result.node_id);
    }
    Ok(())
}

pub fn dashboard(home: &Path, args: ReadArgs) -> anyhow::Result<()> {
    let (config, addr, token) = running_api(home)?;
    let link = format!("http://{addr}/dash/login?token={}", token.as_str());
    let web = config
        .web
        .listen
        .filter(|_| config.web.dashboard)
        .map(|listen| format!("http://{listen}/dash/"));
    if args.json {
        return print_json(&serde_json::json!({ "link": link, "web": web }));
    }
    println!("{link}");
    eprintln!(
        "Open it in a browser on this machine; it carries the API token, so do not share it."
    );
    if let Some(web) = web {
        eprintln!("Read-only, with no token, for others who can reach it: {web}");
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct NameArgs {
    /// The name: a-z, 0-9, '-', '_' and '.', up to 63, not starting with
    /// fw1 (ids do).
    name: String,
    /// The node it names: its id, the unique start of a known node's id,
    /// or another name. Omit it with --remove.
    #[arg(required_unless_present = "remove")]
    node: Option<String>,
    /// Forget the name.
    #[arg(long, conflicts_with = "node")]
    remove: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn name(home: &Path, args: NameArgs) -> anyhow::Result<()> {
    fogwire_control::names::check_name(&args.name)?;
    let client = client(home)?;
    let named_now = match (&args.node, args.remove) {
        (_, true) => client.unname(&args.name).await?,
        (Some(node), false) => client.name(&args.name, node).await?,
        (None, false) => anyhow::bail!("name which node: fogwire name {} <node id>", args.name),
    };
    if args.json {
        return print_json(&named_now);
    }
    if args.remove {
        println!("forgot {} (it named {})", named_now.name, named_now.node_id);
    } else {
        println!(
            "{} now names {}; every command takes it where it takes a node id",
            named_now.name, named_now.node_id
        );
    }
    Ok(())
}

pub async fn names(home: &Path, args: ReadArgs) -> anyhow::Result<()> {
    let names = client(home)?.names().await?;
    if args.json {
        return print_json(&names);
    }
    if names.is_empty() {
        println!("no names yet: fogwire name <name> <node id>");
        return Ok(());
    }
    let mut table = Table::new(&["name", "node"], &[]);
    for entry in &names {
        table.row([entry.name.clone(), entry.node_id.clone()]);
    }
    table.print();
    Ok(())
}

pub async fn metrics(home: &Path, args: ReadArgs) -> anyhow::Result<()> {
    let text = client(home)?.metrics().await?;
    if !args.json {
        print!("{text}");
        return Ok(());
    }
    let samples: Vec<serde_json::Value> = metric_samples(&text)
        .into_iter()
        .map(|(name, labels, value)| {
            serde_json::json!({"name": name, "labels": labels, "value": value})
        })
        .collect();
    print_json(&samples)
}

/// The samples of an OpenMetrics text: name, labels and value of each.
fn metric_samples(text: &str) -> Vec<(String, std::collections::BTreeMap<String, String>, f64)> {
    let lines = text.lines().map(|line| Ok(line.to_owned()));
    let Ok(scrape) = prometheus_parse::Scrape::parse(lines) else {
        return Vec::new();
    };
    scrape
        .samples
        .into_iter()
        .filter_map(|sample| {
            let value = match sample.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            let labels = sample
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Some((sample.metric, labels, value))
        })
        .collect()
}
