//! The routing stage of the demo: routes of 1, 2 and 3 hops from one node,
//! pings through them, a stream over the 3-hop route, a relay killed in
//! the middle of it, and the route repaired with the stream intact.

use std::time::{Duration, Instant};

use fogwire_identity::NodeId;
use fogwire_route::proto::router::RouteId;
use fogwire_route::services::{SINK, send_to_sink};
use fogwire_route::{Constraints, Routing};

use crate::{Network, format_bytes};

/// What the routing stage left running, for the live table.
#[derive(Debug, Default)]
pub struct RouteStage {
    /// The node the routes start at.
    pub source: usize,
    /// (hops, route) of the routes kept open.
    pub routes: Vec<(usize, RouteId)>,
    /// The relay killed, if one was.
    pub killed: Option<usize>,
    /// What happened, line by line.
    pub story: Vec<String>,
    /// The stream arrived intact across the relay's death.
    pub stream_intact: Option<bool>,
}

/// Where the stage says what happens, as it happens.
pub type Narrator<'a> = &'a mut (dyn FnMut(&str) + Send);

impl RouteStage {
    fn say(&mut self, narrator: &mut Narrator<'_>, line: String) {
        narrator(&line);
        self.story.push(line);
    }
}

fn names(network: &Network, source: usize, path: &[NodeId]) -> String {
    std::iter::once(network.nodes()[source].name.clone())
        .chain(path.iter().map(|id| network.name_of(id)))
        .collect::<Vec<_>>()
        .join(" → ")
}

/// Waits until `routing` knows every node of the network and every link.
pub(crate) async fn converge(network: &Network, timeout: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let wanted_links = network.topology().len();
    loop {
        let mut done = true;
        for demo_node in network.nodes() {
            let nodes = demo_node
                .node
                .routing()
                .nodes()
                .await
                .map_err(|e| e.to_string())?;
            let links: usize = nodes.iter().map(|n| n.advert.links.len()).sum();
            if nodes.len() < network.nodes().len() || links < 2 * wanted_links {
                done = false;
                break;
            }
        }
        if done {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            return Err(format!(
                "the nodes did not learn the whole graph within {} s",
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A destination with `alternatives` node-disjoint paths of exactly
/// `hops` links from `routing`, other than `not`.
async fn destination(
    network: &Network,
    routing: &Routing,
    hops: usize,
    alternatives: usize,
    not: &[NodeId],
) -> Option<NodeId> {
    for candidate in network.nodes().iter().map(|n| n.id()) {
        if candidate == routing.node_id() || not.contains(&candidate) {
            continue;
        }
        if let Ok(paths) = routing
            .find(candidate, constraints(network, hops), alternatives)
            .await
            && paths.len() >= alternatives
        {
            return Some(candidate);
        }
    }
    None
}

/// Exactly `hops` links; the 3-hop route, whose first relay is killed
/// later, never passes through the ledger's board (the ledger must live,
/// and in a box linked as a full mesh the best path often starts there).
fn constraints(network: &Network, hops: usize) -> Constraints {
    let keeper = network
        .nodes()
        .get(crate::economy::LEDGER_NODE)
        .map(|node| node.id());
    Constraints {
        avoid: keeper.filter(|_| hops == 3).into_iter().collect(),
        ..Constraints::hops(hops)
    }
}

/// Runs the stage from node `source`: opens the routes, pings through
/// them, streams `stream_bytes` over the 3-hop one and kills its first
/// relay a quarter of the way in.
pub async fn run(
    network: &mut Network,
    source: usize,
    stream_bytes: u64,
    mut narrator: Narrator<'_>,
) -> RouteStage {
    let mut stage = RouteStage {
        source,
        ..RouteStage::default()
    };
    let routing = network.nodes()[source].node.routing().clone();
    match converge(network, Duration::from_secs(10)).await {
        Ok(took) => stage.say(
            &mut narrator,
            format!(
                "every node learned the whole graph from signed adverts in {:.0} ms",
                took.as_secs_f64() * 1e3
            ),
        ),
        Err(error) => {
            stage.say(&mut narrator, format!("routing stage skipped: {error}"));
            return stage;
        }
    }
    stage.say(
        &mut narrator,
        format!(
            "routes from {}, each set up in one round trip:",
            network.nodes()[source].name
        ),
    );
    let mut used = Vec::new();
    let mut three_hop = None;
    // Whether the 3-hop route has a disjoint alternative to move to.
    let mut survivable = true;
    for hops in 1..=3 {
        // The 3-hop route needs a second, disjoint path to survive its relay.
        let alternatives = if hops == 3 { 2 } else { 1 };
        let mut target = destination(network, &routing, hops, alternatives, &used).await;
        if target.is_none() && hops == 3 {
            survivable = false;
            target = destination(network, &routing, hops, 1, &used).await;
        }
        let Some(target) = target else {
            stage.say(
                &mut narrator,
                format!("  {hops} hop(s): no path of that length here"),
            );
            continue;
        };
        used.push(target);
        let opened = match routing.open(target, constraints(network, hops)).await {
            Ok(opened) => opened,
            Err(error) => {
                stage.say(&mut narrator, format!("  {hops} hop(s): {error}"));
                continue;
            }
        };
        let rtt = routing.ping(opened.route, Duration::from_secs(2)).await;
        stage.say(
            &mut narrator,
            format!(
                "  {hops} hop{} {:<28} up in {:.2} ms, ping {}",
                if hops == 1 { " " } else { "s" },
                names(network, source, &opened.path),
                opened.setup_time.as_secs_f64() * 1e3,
                rtt.map_or_else(
                    |e| format!("failed: {e}"),
                    |rtt| format!("{:.2} ms", rtt.as_secs_f64() * 1e3)
                ),
            ),
        );
        stage.routes.push((hops, opened.route));
        if hops == 3 {
            three_hop = Some(opened);
        }
    }
    let Some(route) = three_hop else {
        return stage;
    };
    let destination_name = network.name_of(route.path.last().unwrap_or(&routing.node_id()));
    let relay_id = route.path[0];
    let Some(relay) = network.index_of(&relay_id) else {
        return stage;
    };
    let stream = match routing.connect(route.route, SINK).await {
        Ok(stream) => stream,
        Err(error) => {
            stage.say(&mut narrator, format!("cannot open a stream: {error}"));
            return stage;
        }
    };
    stage.say(
        &mut narrator,
        format!(
            "streaming {} over the 3-hop route to {destination_name}'s sink; relay {} will die \
         a quarter of the way in",
            format_bytes(stream_bytes),
            network.nodes()[relay].name
        ),
    );
    let (progress_sender, mut progress) = tokio::sync::watch::channel(0u64);
    let transfer = tokio::spawn(send_to_sink(stream, stream_bytes, move |sent| {
        let _ = progress_sender.send(sent);
    }));
    let quarter = stream_bytes / 4;
    let _ = progress.wait_for(|sent| *sent >= quarter).await;
    if !survivable {
        return finish_stream(stage, transfer, &destination_name, &mut narrator).await;
    }
    let killed_at = *progress.borrow();
    let killed = Instant::now();
    network.kill(relay).await;
    stage.killed = Some(relay);
    stage.say(
        &mut narrator,
        format!(
            "  killed {} at {} sent",
            network.nodes()[relay].name,
            format_bytes(killed_at)
        ),
    );
    // Report the repair as the source saw it.
    for _ in 0..100 {
        if let Ok(listing) = routing.routes().await
            && let Some(info) = listing.routes.iter().find(|r| r.id == route.route)
            && info.repairs > 0
        {
            stage.say(
                &mut narrator,
                format!(
                    "  {} noticed and moved the route to {} within {:.0} ms",
                    network.nodes()[source].name,
                    names(network, source, &info.path),
                    killed.elapsed().as_secs_f64() * 1e3
                ),
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    finish_stream(stage, transfer, &destination_name, &mut narrator).await
}

async fn finish_stream(
    mut stage: RouteStage,
    transfer: tokio::task::JoinHandle<
        Result<fogwire_route::services::Transfer, fogwire_route::RouteError>,
    >,
    destination_name: &str,
    narrator: &mut Narrator<'_>,
) -> RouteStage {
    match transfer.await {
        Ok(Ok(done)) => {
            stage.stream_intact = Some(done.intact());
            stage.say(
                narrator,
                format!(
                    "  {} sent in {:.2} s ({:.0} Mbit/s); {destination_name} {}",
                    format_bytes(done.bytes),
                    done.elapsed.as_secs_f64(),
                    done.bytes_per_second() * 8.0 / 1e6,
                    if done.intact() {
                        "got every byte, in order, once (BLAKE3 of both ends match)"
                    } else {
                        "did NOT get the same bytes"
                    }
                ),
            );
        }
        Ok(Err(error)) => {
            stage.stream_intact = Some(false);
            stage.say(narrator, format!("  the stream failed: {error}"));
        }
        Err(error) => stage.say(narrator, format!("  the stream task failed: {error}")),
    }
    stage
}
