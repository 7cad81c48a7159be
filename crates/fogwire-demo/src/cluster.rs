//! The cluster stage: the demo's nodes become one box, and the box's
//! roles come from one manifest rather than from each node's settings.
//!
//! First ([`assemble`]): the first node makes a cluster, the others join
//! it with its join code, membership runs over their links, and the first
//! publishes a manifest naming every role the later stages use — the
//! ledger (pinned to its board: a ledger cannot move its log yet), a hub,
//! workers (one of them a cheat, for the compute stage to catch), an exit
//! — each with its settings in a config blob the boards fetch from the
//! cluster. Every board computes the same placement and starts its part.
//!
//! Last ([`switch_off`]): a board running a service is switched off, the
//! others declare it failed, and its service moves to a spare board.

use std::time::{Duration, Instant};

use fogwire_api::ClusterStatus;
use fogwire_identity::NodeId;

use crate::economy::{LEDGER_NODE, START_COINS};
use crate::network::Network;
use crate::routes::Narrator;

/// How long the stage may wait for any one step.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

/// Where the manifest put each role, as indices into the network.
#[derive(Debug, Clone, Default)]
pub struct BoxRoles {
    pub ledger: usize,
    pub hub: usize,
    pub exit: usize,
    /// Every worker, the cheat among them.
    pub workers: Vec<usize>,
    pub cheat: Option<usize>,
}

/// What the cluster stage showed.
#[derive(Debug, Clone, Default)]
pub struct ClusterStage {
    /// From the last join to every live board seeing all others alive.
    pub formed: Option<Duration>,
    /// Where the manifest's services run, once every one runs.
    pub roles: Option<BoxRoles>,
    /// From switching a board off to every other declaring it failed, and
    /// to its service running elsewhere.
    pub failure_known: Option<Duration>,
    pub service_moved: Option<Duration>,
    /// Whether a board was switched off (not when no spare board was left
    /// to take its service).
    pub switched_off: bool,
}

/// The services of the manifest, and how many boards each takes.
struct Plan {
    workers: usize,
    cheat: bool,
}

impl Plan {
    /// For a box of `boards`: the ledger, a hub and an exit take a board
    /// each, workers most of the rest, and one or two boards stay spare
    /// for services that must move (the routing stage kills a relay, and
    /// [`switch_off`] a board).
    fn for_boards(boards: usize) -> Plan {
        let spare = match boards {
            0..6 => 0,
            6..8 => 1,
            _ => 2,
        };
        let workers = boards.saturating_sub(3 + spare).max(1);
        Plan {
            workers,
            // A cheat is caught only when honest workers outvote it.
            cheat: workers >= 3,
        }
    }
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

/// Every instance the manifest asks for, each running on a live board.
fn all_running(network: &Network, plan: &Plan) -> bool {
    let wanted = [
        ("ledger", 1),
        ("hub", 1),
        ("exit", 1),
        ("workers", plan.workers - usize::from(plan.cheat)),
        ("cheat", usize::from(plan.cheat)),
    ];
    wanted
        .iter()
        .all(|(service, count)| running(network, service).len() == *count)
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

/// The services' settings, each a config blob added to `owner`'s store
/// (the boards that run them fetch them from the cluster); the manifest
/// naming them.
fn manifest(network: &Network, owner: usize, plan: &Plan) -> Result<String, String> {
    let nodes = network.nodes();
    let keeper = LEDGER_NODE.min(nodes.len() - 1);
    let store = nodes[owner].node.store();
    let add = |text: String| {
        store
            .import_bytes(text.as_bytes(), Some("demo/cluster"))
            .map(|hash| hash.to_string())
            .map_err(|e| format!("cannot add a config blob: {e}"))
    };
    // Every node starts with the same coins; prices dear enough that a
    // demo's megabytes show.
    let accounts: String = nodes
        .iter()
        .map(|node| {
            format!(
                "  {{ account = \"{}\", coins = {START_COINS} }},\n",
                node.id()
            )
        })
        .collect();
    let ledger = add(format!(
        "[ledger]\nprice_per_gib_forwarded = 4\nprice_per_gib_served = 400\ngenesis = [\n{accounts}]\n"
    ))?;
    // The hub charges by its default terms: buyers pay into escrow, and
    // workers bond deposits with it.
    let hub = add("[compute]\ncharge = true\ndocker = false\n".into())?;
    let workers = add("[compute]\nslots = 2\ndocker = false\n".into())?;
    let cheat = add("[compute]\nslots = 2\ndocker = false\ncheat = true\n".into())?;
    // The demo's web server is on this machine's loopback, which an exit
    // refuses by default.
    let exit = add("[exit]\nallow = [\"127.0.0.0/8\"]\n".into())?;
    let mut text = format!(
        "[[service]]\nname = \"ledger\"\nkind = \"ledger\"\npin = \"{}\"\nconfig = \"{ledger}\"\n\n\
         [[service]]\nname = \"hub\"\nkind = \"hub\"\nconfig = \"{hub}\"\n\n\
         [[service]]\nname = \"exit\"\nkind = \"exit\"\nconfig = \"{exit}\"\n\n\
         [[service]]\nname = \"workers\"\nkind = \"worker\"\ncount = {}\nconfig = \"{workers}\"\n",
        nodes[keeper].id(),
        plan.workers - usize::from(plan.cheat),
    );
    if plan.cheat {
        text.push_str(&format!(
            "\n[[service]]\nname = \"cheat\"\nkind = \"worker\"\nconfig = \"{cheat}\"\n"
        ));
    }

    Ok(text)
}

/// Where each service runs, as every board computed it.
fn roles(network: &Network, owner: usize) -> Option<BoxRoles> {
    let placement = status(network, owner).placement;
    let on = |service: &str| -> Vec<usize> {
        placement
            .iter()
            .filter(|placed| placed.service == service)
            .filter_map(|placed| network.index_of(&placed.board.parse().ok()?))
            .collect()
    };
    let cheat = on("cheat").first().copied();
    let mut workers = on("workers");
    workers.extend(cheat);
    workers.sort_unstable();
    Some(BoxRoles {
        ledger: *on("ledger").first()?,
        hub: *on("hub").first()?,
        exit: *on("exit").first()?,
        workers,
        cheat,
    })
}

/// Runs the first part; node `owner` makes the cluster and publishes the
/// manifest. The roles are in the stage once every service runs.
pub async fn assemble(network: &Network, owner: usize, narrate: Narrator<'_>) -> ClusterStage {
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
    let plan = Plan::for_boards(nodes.len());
    let manifest = match manifest(network, owner, &plan) {
        Ok(manifest) => manifest,
        Err(error) => {
            narrate(&format!("  {error}"));
            return stage;
        }
    };
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
        "  {} published the manifest (signed with the cluster key): the ledger pinned to {}, a hub, an exit, {} worker(s){}; each service's settings in a blob the boards fetch from the cluster",
        nodes[owner].name,
        nodes[LEDGER_NODE.min(nodes.len() - 1)].name,
        plan.workers,
        if plan.cheat { " (one a cheat)" } else { "" }
    ));
    let started = Instant::now();
    if until(|| all_running(network, &plan)).await.is_none() {
        let failed: Vec<String> = live(network)
            .into_iter()
            .flat_map(|index| {
                status(network, index)
                    .services
                    .into_iter()
                    .filter_map(|held| held.error.map(|e| format!("{}: {e}", held.name)))
                    .collect::<Vec<_>>()
            })
            .collect();
        narrate(&format!(
            "  the manifest's services did not all start in time{}",
            if failed.is_empty() {
                String::new()
            } else {
                format!(": {}", failed.join("; "))
            }
        ));
        return stage;
    }
    let Some(roles) = roles(network, owner) else {
        narrate("  the placement names no board for a service");
        return stage;
    };
    let name = |index: usize| network.nodes()[index].name.clone();
    let workers: Vec<String> = roles.workers.iter().map(|index| name(*index)).collect();
    narrate(&format!(
        "  every board computed the same placement, with no leader; all run within {} ms: ledger {}, hub {}, exit {}, workers {}{}",
        started.elapsed().as_millis(),
        name(roles.ledger),
        name(roles.hub),
        name(roles.exit),
        workers.join(", "),
        roles
            .cheat
            .map(|cheat| format!(" ({} the cheat)", name(cheat)))
            .unwrap_or_default()
    ));
    stage.roles = Some(roles);
    stage
}

/// The board running `index`'s service, by the owner's placement.
fn service_on(network: &Network, owner: usize, index: usize) -> Option<String> {
    let id = network.nodes()[index].id().to_string();
    status(network, owner)
        .placement
        .into_iter()
        .find(|placed| placed.board == id)
        .map(|placed| placed.service)
}

/// Whether every live board sees exactly the live boards alive, and every
/// instance of the placement runs on a live board: what a board killed
/// earlier (the routing stage kills a relay) leaves once it has settled.
fn settled(network: &Network, owner: usize) -> bool {
    formed(network)
        && status(network, owner).placement.iter().all(|placed| {
            placed
                .board
                .parse()
                .ok()
                .and_then(|id| network.index_of(&id))
                .is_some_and(|index| {
                    !network.is_killed(index)
                        && status(network, index)
                            .services
                            .iter()
                            .any(|held| held.name == placed.service && held.state == "running")
                })
        })
}

/// Runs the last part: switches off a board that runs a service and is
/// neither the owner nor the ledger's (the other stages' ends need them),
/// if a spare board is left to take its service, and waits for the service
/// to run there.
pub async fn switch_off(
    network: &mut Network,
    owner: usize,
    stage: &mut ClusterStage,
    narrate: Narrator<'_>,
) {
    let Some(roles) = stage.roles.clone() else {
        return;
    };
    if until(|| settled(network, owner)).await.is_none() {
        narrate("  the box did not settle after the routing stage's relay was killed");
        return;
    }
    let live = live(network);
    let busy: Vec<usize> = live
        .iter()
        .copied()
        .filter(|index| service_on(network, owner, *index).is_some())
        .collect();
    if busy.len() == live.len() {
        narrate(
            "  every live board runs a service: no spare is left to take one, so none is switched off",
        );
        return;
    }
    // The exit first: the service a user of the box would miss.
    let Some(victim) = std::iter::once(roles.exit)
        .chain(busy.iter().copied())
        .find(|index| *index != owner && *index != roles.ledger && busy.contains(index))
    else {
        return;
    };
    let Some(service) = service_on(network, owner, victim) else {
        return;
    };
    let victim_name = network.nodes()[victim].name.clone();
    narrate(&format!(
        "  switching {victim_name} off (it runs {service})…"
    ));
    stage.switched_off = true;
    let instances = running(network, &service).len();
    let killed_at = Instant::now();
    network.kill(victim).await;
    let victim_id = network.nodes()[victim].id().to_string();
    let live_now: Vec<usize> = self::live(network);
    stage.failure_known = until(|| {
        live_now.iter().all(|index| {
            status(network, *index)
                .members
                .iter()
                .any(|member| member.node_id == victim_id && member.state == "dead")
        })
    })
    .await
    .map(|_| killed_at.elapsed());
    stage.service_moved = until(|| running(network, &service).len() == instances)
        .await
        .map(|_| killed_at.elapsed());
    match (stage.failure_known, stage.service_moved) {
        (Some(known), Some(moved)) => {
            let now_on: Vec<String> = running(network, &service)
                .iter()
                .map(|index| network.nodes()[*index].name.clone())
                .collect();
            narrate(&format!(
                "  every board declared {victim_name} failed after {} ms; its {service} runs on {} after {} ms, its config fetched from the cluster",
                known.as_millis(),
                now_on.join(", "),
                moved.as_millis()
            ));
        }
        _ => narrate(&format!("  {victim_name}'s {service} did not move in time")),
    }
}
