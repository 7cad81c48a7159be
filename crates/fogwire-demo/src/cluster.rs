//! The cluster stage: the demo's nodes become one box. The first makes a
//! cluster, the others join it with its join code, membership runs over
//! their links, and the first publishes a manifest: a cache of two
//! seeders holding a blob every board may need. Each board computes the
//! same placement and runs its part; then a board running a seeder is
//! switched off, the others declare it failed, and its seeder moves to
//! another board, which fetches the blob from the cluster.

use std::time::{Duration, Instant};

use fogwire_api::ClusterStatus;
use fogwire_identity::NodeId;

use crate::network::Network;
use crate::routes::Narrator;

/// How long the stage may wait for any one step.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);
/// Boards the cache runs on.
const SEEDERS: usize = 3;

/// What the cluster stage showed.
#[derive(Debug, Clone, Default)]
pub struct ClusterStage {
    /// From the last join to every live board seeing all others alive.
    pub formed: Option<Duration>,
    /// From switching a board off to every other declaring it failed, and
    /// to its seeder running elsewhere.
    pub failure_known: Option<Duration>,
    pub service_moved: Option<Duration>,
    /// Whether a board was switched off (not when every seeder was on a
    /// board the demo needs for more).
    pub switched_off: bool,
}

fn live(network: &Network) -> Vec<usize> {
    (0..network.nodes().len())
        .filter(|index| !network.is_killed(*index))
        .collect()
}

fn status(network: &Network, index: usize) -> ClusterStatus {
    network.nodes()[index].node.cluster().status()
}

/// Whether every live board sees exactly the live boards alive.
fn formed(network: &Network) -> bool {
    let live = live(network);
    let want: Vec<NodeId> = live
        .iter()
        .map(|index| network.nodes()[*index].id())
        .collect();
    live.iter().all(|index| {
        let status = status(network, *index);
        let alive: Vec<&str> = status
            .members
            .iter()
            .filter(|member| member.state == "alive")
            .map(|member| member.node_id.as_str())
            .collect();
        alive.len() == want.len()
            && want
                .iter()
                .all(|id| alive.contains(&id.to_string().as_str()))
    })
}

/// The boards running `service` now (as each reports itself).
fn running(network: &Network, service: &str) -> Vec<usize> {
    live(network)
        .into_iter()
        .filter(|index| {
            status(network, *index)
                .services
                .iter()
                .any(|held| held.name == service && held.state == "running")
        })
        .collect()
}

async fn until(mut done: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > STEP_TIMEOUT {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
    Some(started.elapsed())
}

/// Runs the stage; node `owner` makes the cluster. The boards in `keep`
/// have other roles in the demo (the ledger, the exit): the board
/// switched off is a seeder that is none of them.
pub async fn run(
    network: &mut Network,
    owner: usize,
    keep: &[usize],
    narrate: Narrator<'_>,
) -> ClusterStage {
    let mut stage = ClusterStage::default();
    let nodes = network.nodes();
    let code = match nodes[owner].node.cluster().init().await {
        Ok(code) => code,
        Err(error) => {
            narrate(&format!(
                "  cluster: {} could not make one: {error}",
                nodes[owner].name
            ));
            return stage;
        }
    };
    narrate(&format!(
        "  {} made cluster {}; the others join with its join code",
        nodes[owner].name,
        code.cluster.short()
    ));
    for index in live(network) {
        if index == owner {
            continue;
        }
        if let Err(error) = nodes[index].node.cluster().join(code.clone()).await {
            narrate(&format!("  {} could not join: {error}", nodes[index].name));
            return stage;
        }
    }
    stage.formed = until(|| formed(network)).await;
    let Some(took) = stage.formed else {
        narrate("  the boards did not agree on who is alive in time");
        return stage;
    };
    narrate(&format!(
        "  {} boards see each other alive after {} ms (SWIM, one probe a second; they linked to each other by themselves)",
        live(network).len(),
        took.as_millis()
    ));
    // A blob the cache holds: the owner has it, the seeders fetch it.
    let store = nodes[owner].node.store().clone();
    let blob = tokio::task::spawn_blocking(move || {
        store.import_bytes(
            b"what every board of the box may need\n",
            Some("demo/cluster"),
        )
    })
    .await;
    let Ok(Ok(blob)) = blob else {
        narrate("  cannot add the cache's blob");
        return stage;
    };
    let manifest = format!(
        "[[service]]\nname = \"cache\"\nkind = \"seeder\"\ncount = {SEEDERS}\nshares_board = true\nblobs = [\"{blob}\"]\n"
    );
    if let Err(error) = nodes[owner]
        .node
        .cluster()
        .apply(manifest.into_bytes())
        .await
    {
        narrate(&format!("  the manifest was refused: {error}"));
        return stage;
    }
    narrate(&format!(
        "  {} published the manifest (signed with the cluster key): a cache of {SEEDERS} seeders holding blob {}",
        nodes[owner].name,
        blob.short()
    ));
    if until(|| running(network, "cache").len() == SEEDERS)
        .await
        .is_none()
    {
        narrate("  the cache did not start on its boards in time");
        return stage;
    }
    let seeders = running(network, "cache");
    let names: Vec<String> = seeders
        .iter()
        .map(|index| network.nodes()[*index].name.clone())
        .collect();
    narrate(&format!(
        "  every board computed the same placement: the cache runs on {}",
        names.join(", ")
    ));
    // Switch off a seeder the other stages do not need.
    let Some(&victim) = seeders
        .iter()
        .find(|index| **index != owner && !keep.contains(index))
    else {
        narrate("  every seeder is on a board the demo needs for more; none is switched off");
        return stage;
    };
    let victim_name = network.nodes()[victim].name.clone();
    narrate(&format!("  switching {victim_name} off…"));
    stage.switched_off = true;
    let killed_at = Instant::now();
    network.kill(victim).await;
    let victim_id = network.nodes()[victim].id().to_string();
    stage.failure_known = until(|| {
        live(network).iter().all(|index| {
            status(network, *index)
                .members
                .iter()
                .any(|member| member.node_id == victim_id && member.state == "dead")
        })
    })
    .await
    .map(|_| killed_at.elapsed());
    stage.service_moved = until(|| running(network, "cache").len() == SEEDERS)
        .await
        .map(|_| killed_at.elapsed());
    match (stage.failure_known, stage.service_moved) {
        (Some(known), Some(moved)) => {
            let now_on: Vec<String> = running(network, "cache")
                .iter()
                .map(|index| network.nodes()[*index].name.clone())
                .collect();
            narrate(&format!(
                "  every board declared {victim_name} failed after {} ms; its seeder runs on {} after {} ms, the blob fetched from the cluster",
                known.as_millis(),
                now_on.join(", "),
                moved.as_millis()
            ));
        }
        _ => narrate(&format!("  {victim_name}'s seeder did not move in time")),
    }
    stage
}
