use std::fmt::Write;
use std::time::Duration;

use fogwire_route::Listing;

use crate::Network;
use crate::routes::RouteStage;
use crate::traffic::Traffic;

/// What the routing part of the table shows, read from the nodes just
/// before drawing.
#[derive(Debug, Default)]
pub struct RouteView {
    /// The source's routes.
    pub source: Option<Listing>,
    /// Bytes each node relayed for others (forward + backward).
    pub relayed: Vec<u64>,
}

/// `1536` → `1.5 KiB`.
pub fn format_bytes(bytes: u64) -> String {
    bytesize::ByteSize(bytes).display().iec().to_string()
}

fn format_rtt(rtt: Option<Duration>) -> String {
    rtt.map_or_else(
        || "-".into(),
        |rtt| format!("{:.2} ms", rtt.as_secs_f64() * 1000.0),
    )
}

/// The live table: nodes, then links with byte counters in each direction.
pub fn render_table(
    network: &Network,
    traffic: &Traffic,
    stage: Option<&RouteStage>,
    view: &RouteView,
    elapsed: Duration,
    duration: Option<Duration>,
) -> String {
    let mut out = String::new();
    let nodes = network.nodes();
    let time = match duration {
        Some(total) => format!("{}s of {}s", elapsed.as_secs(), total.as_secs()),
        None => format!("{}s", elapsed.as_secs()),
    };
    let _ = writeln!(
        out,
        "fogwire demo — {} nodes, {} links on 127.0.0.1 — {time} — Ctrl-C stops\n",
        nodes.len(),
        network.topology().len()
    );
    let _ = writeln!(
        out,
        "{:<5} {:<15} {:<22} {:>5} {:>11} {:>11} {:>11}",
        "NODE", "ID", "LISTEN", "LINKS", "SENT", "RECEIVED", "RELAYED"
    );
    for (index, demo_node) in nodes.iter().enumerate() {
        if network.is_killed(index) {
            let _ = writeln!(
                out,
                "{:<5} {:<15} {:<22} killed",
                demo_node.name,
                demo_node.id().short(),
                demo_node.node.local_addr().to_string(),
            );
            continue;
        }
        let links = demo_node.node.links();
        let (sent, received) = links.iter().fold((0, 0), |(sent, received), link| {
            let snapshot = link.snapshot();
            (sent + snapshot.bytes_out, received + snapshot.bytes_in)
        });
        let _ = writeln!(
            out,
            "{:<5} {:<15} {:<22} {:>5} {:>11} {:>11} {:>11}",
            demo_node.name,
            demo_node.id().short(),
            demo_node.node.local_addr().to_string(),
            links.len(),
            format_bytes(sent),
            format_bytes(received),
            view.relayed
                .get(index)
                .map_or_else(|| "-".into(), |bytes| format_bytes(*bytes)),
        );
    }
    let _ = writeln!(
        out,
        "\n{:<10} {:<9} {:>9} {:>12} {:>12} {:>9} {:>9}",
        "LINK", "STATE", "RTT", "A→B", "B→A", "FRAMES→", "FRAMES←"
    );
    for &(a, b) in network.topology() {
        let name = format!("{}↔{}", nodes[a].name, nodes[b].name);
        match network.link(a, b) {
            Some(link) => {
                let snapshot = link.snapshot();
                let _ = writeln!(
                    out,
                    "{:<10} {:<9} {:>9} {:>12} {:>12} {:>9} {:>9}",
                    name,
                    "up",
                    format_rtt(snapshot.rtt),
                    format_bytes(snapshot.bytes_out),
                    format_bytes(snapshot.bytes_in),
                    snapshot.records_out,
                    snapshot.records_in,
                );
            }
            None if network.is_killed(a) || network.is_killed(b) => {
                let _ = writeln!(out, "{name:<10} {:<9}", "down (node killed)");
            }
            None => {
                let _ = writeln!(out, "{name:<10} {:<9}", "down");
            }
        }
    }
    let _ = writeln!(
        out,
        "\ndelivered to applications: {}  (every byte authenticated and encrypted: \
         Noise XX, ChaCha20-Poly1305)",
        format_bytes(traffic.bytes_delivered())
    );
    // The stages' stories stay above the table (it is redrawn in place
    // below them), so the table holds only what changes.
    if let Some(stage) = stage {
        render_routes(&mut out, network, stage, view);
    }
    out
}

fn render_routes(out: &mut String, network: &Network, stage: &RouteStage, view: &RouteView) {
    let _ = writeln!(out, "\nROUTES");
    let Some(listing) = &view.source else {
        return;
    };
    let source = &network.nodes()[stage.source].name;
    let _ = writeln!(
        out,
        "\n{:<6} {:<30} {:<9} {:>11} {:>11} {:>8}",
        "ROUTE", "PATH", "STATUS", "SENT", "RECEIVED", "REPAIRS"
    );
    for route in &listing.routes {
        let path = std::iter::once(source.clone())
            .chain(route.path.iter().map(|id| network.name_of(id)))
            .collect::<Vec<_>>()
            .join(" → ");
        let status = match route.status {
            fogwire_route::proto::router::RouteStatus::Up => "up",
            fogwire_route::proto::router::RouteStatus::SettingUp => "setting",
            fogwire_route::proto::router::RouteStatus::Repairing => "repairing",
        };
        let _ = writeln!(
            out,
            "{:<6} {:<30} {:<9} {:>11} {:>11} {:>8}",
            route.id,
            path,
            status,
            format_bytes(route.counters.bytes_forward),
            format_bytes(route.counters.bytes_backward),
            route.repairs,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_shown_in_binary_units() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(5 * 1024 * 1024), "5.0 MiB");
    }
}
