//! Hostile peers on the wire: a real node, linked over a real socket to a
//! peer that plays by the link protocol but abuses what rides on it. Each
//! test names the bound it proves, measures the attack against it, and
//! checks that an honest peer is still served.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fogwire_identity::{Keypair, NodeId};
use fogwire_link::LinkHandle;
use fogwire_link::proto::{ChannelId, Config as LinkConfig, LinkIdentity};
use fogwire_node::Node;
use fogwire_route::proto::advert::Advert;
use fogwire_route::proto::control_plane::{NEIGHBOUR_ADVERT_BURST, NEIGHBOUR_ADVERT_INTERVAL};
use fogwire_route::proto::router::{self, Hop, Router, Transmit};
use fogwire_testkit::{nodes, wait};

/// A peer that links to a node with a self-made identity, announces the
/// routing and store channels (so the node routes and replicates with
/// it), and then sends whatever it likes on them.
struct Hostile {
    identity: Arc<LinkIdentity>,
    link: LinkHandle,
}

impl Hostile {
    async fn link_to(node: &Node) -> Hostile {
        let identity =
            Arc::new(LinkIdentity::generate(Arc::new(Keypair::generate().unwrap())).unwrap());
        let established = fogwire_link::connect(
            node.local_addr(),
            node.node_id(),
            &identity,
            Arc::new(LinkConfig {
                channels: fogwire_route::link_channels()
                    .into_iter()
                    .chain(fogwire_replicate::link_channels())
                    .collect(),
                ..LinkConfig::default()
            }),
        )
        .await
        .unwrap();
        let link = fogwire_link::spawn(established);
        let id = identity.node_id();
        wait::until("the node has the hostile link up", || {
            node.link(&id).is_some()
        })
        .await;
        Hostile { identity, link }
    }

    fn id(&self) -> NodeId {
        self.identity.node_id()
    }

    /// Sends every message on `channel`, as fast as the link takes them.
    async fn send_all(&self, channel: u16, messages: Vec<Bytes>) {
        let sender = self
            .link
            .sender(ChannelId(channel))
            .expect("the node serves the channel");
        for message in messages {
            sender.send(message).await.unwrap();
        }
    }
}

/// An advert of a fresh, self-made origin.
fn fresh_advert() -> Bytes {
    let keypair = Keypair::generate().unwrap();
    let advert = Advert {
        origin: keypair.node_id(),
        seq: 1,
        issued_at_ms: fogwire_env::unix_ms(),
        lifetime_secs: 600,
        link_key: [7; 32],
        addresses: Vec::new(),
        links: Vec::new(),
        services: Vec::new(),
        offers: Vec::new(),
    };
    Bytes::from(advert.sign(&keypair).1)
}

async fn known_nodes(node: &Node) -> usize {
    node.routing().nodes().await.unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_neighbour_flooding_adverts_of_made_up_origins_gets_its_budget_and_no_more() {
    // Bound proven: from one neighbour, a node takes in (and passes on) at
    // most NEIGHBOUR_ADVERT_BURST adverts plus one per
    // NEIGHBOUR_ADVERT_INTERVAL of the flood's duration.
    let victim = nodes::node().await;
    let honest = nodes::node().await;
    nodes::link(&honest, &victim).await;
    wait::until_async("the two nodes know each other", || async {
        (known_nodes(&victim).await == 2 && known_nodes(&honest).await == 2).then_some(())
    })
    .await;
    let hostile = Hostile::link_to(&victim).await;
    let flood = 6_000;
    let adverts: Vec<Bytes> = (0..flood).map(|_| fresh_advert()).collect();
    let started = tokio::time::Instant::now();
    hostile
        .send_all(fogwire_route::CHANNEL_ADVERT, adverts)
        .await;
    // Everything sent has arrived once the refusals stop growing.
    let mut last = None;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let stats = victim.routing().routes().await.unwrap().stats;
        let seen = stats.adverts_accepted + stats.adverts_refused;
        if last == Some(seen) {
            break;
        }
        last = Some(seen);
    }
    let elapsed = started.elapsed();
    let bound = NEIGHBOUR_ADVERT_BURST as usize
        + (elapsed.as_millis() / NEIGHBOUR_ADVERT_INTERVAL.as_millis()) as usize
        + 1;
    // The victim, the honest node, and possibly the hostile node itself.
    let taken = known_nodes(&victim).await - 2;
    println!(
        "{flood} adverts of made-up origins over {elapsed:?}: {taken} taken in (bound {bound})"
    );
    assert!(
        taken >= NEIGHBOUR_ADVERT_BURST as usize,
        "the flood did not reach the node"
    );
    assert!(taken <= bound, "{taken} adverts taken in, bound {bound}");
    let stats = victim.routing().routes().await.unwrap().stats;
    assert!(stats.adverts_refused >= (flood - bound) as u64);
    // Passed on: no more than was taken in.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let passed_on = known_nodes(&honest).await - 2;
    assert!(passed_on <= taken, "{passed_on} passed on, {taken} taken");
    assert!(victim.link(&honest.node_id()).is_some());
}

/// The hop a node advertises, as a route's source needs it.
async fn hop_of(from: &Node, node: NodeId) -> Hop {
    let nodes = from.routing().nodes().await.unwrap();
    let info = nodes
        .iter()
        .find(|info| info.advert.origin == node)
        .expect("the node is known");
    Hop {
        node,
        link_key: info.advert.link_key,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_neighbour_flooding_route_setups_holds_few_rules_and_honest_routes_still_open() {
    // Bound proven: a relay holds at most `setups_per_neighbour_burst`
    // rules plus one per `setups_per_neighbour_interval` of the flood for
    // one neighbour (never more than `rules_per_neighbour_max`), refusing
    // the rest before opening their layers; another neighbour's route
    // through it opens meanwhile.
    let [source, victim, destination] = <[Node; 3]>::try_from(nodes::line(3).await).unwrap();
    nodes::until_routable(&source, &destination).await;
    let hostile = Hostile::link_to(&victim).await;
    // The hostile peer builds valid setups with a router of its own: the
    // victim as relay, the destination at the end.
    let hops = [
        hop_of(&victim, victim.node_id()).await,
        hop_of(&victim, destination.node_id()).await,
    ];
    let mut forger = Router::new(hostile.identity.clone(), router::Config::default());
    forger.link_up(victim.node_id());
    let flood = 3_000;
    let mut setups = Vec::with_capacity(flood);
    for _ in 0..flood {
        forger.open_route(&hops, fogwire_env::now()).unwrap();
        while let Some(transmit) = forger.poll_transmit() {
            if let Transmit::Control { message, .. } = transmit {
                setups.push(message);
            }
        }
    }
    assert_eq!(setups.len(), flood);
    let started = tokio::time::Instant::now();
    hostile.send_all(router::CHANNEL_CONTROL, setups).await;
    let config = router::Config::default();
    let held_by = |victim: &Node, neighbour: NodeId| {
        let routing = victim.routing().clone();
        async move {
            let listing = routing.routes().await.unwrap();
            listing
                .transit
                .iter()
                .filter(|rule| rule.prev == Some(neighbour))
                .count()
        }
    };
    // Sample the rules held for the sender while the victim works through
    // the flood (they would expire 5 s after their setup).
    let mut peak = 0;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        peak = peak.max(held_by(&victim, hostile.id()).await);
    }
    let elapsed = started.elapsed();
    let bound = config.setups_per_neighbour_burst as usize
        + (elapsed.as_millis() / config.setups_per_neighbour_interval.as_millis()) as usize
        + 1;
    println!(
        "{flood} route setups over {elapsed:?}: at most {peak} rules held for the sender \
         (bound {bound}, share {})",
        config.rules_per_neighbour_max
    );
    assert!(
        peak >= config.setups_per_neighbour_burst as usize / 2,
        "the flood did not reach the relay ({peak} rules)"
    );
    assert!(peak <= bound.min(config.rules_per_neighbour_max));
    // An honest neighbour's route through the victim opens meanwhile.
    let opened = source
        .routing()
        .open(destination.node_id(), fogwire_route::Constraints::hops(2))
        .await
        .expect("an honest route opens through the flooded relay");
    assert_eq!(opened.path.last(), Some(&destination.node_id()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_neighbour_flooding_gets_is_served_eight_at_once_and_told_busy_for_the_rest() {
    // Bound proven: a node serves at most 8 GETs per peer at once (each
    // held open by a reader that takes nothing); every GET beyond is
    // answered ERROR busy at once, and another peer's fetch is served
    // meanwhile.
    use fogwire_store_proto::message::{ERROR_BUSY, GetItem, Groups, Message};
    let victim = nodes::node().await;
    let data = fogwire_env::pattern(16 * 1024 * 1024, 7);
    let store = victim.store().clone();
    let hash = tokio::task::spawn_blocking(move || store.import_bytes(&data, Some("t")).unwrap())
        .await
        .unwrap();
    let hostile = Hostile::link_to(&victim).await;
    let mut answers = hostile
        .link
        .take_receiver(fogwire_replicate::CHANNEL_STORE)
        .unwrap();
    let flood: u32 = 50;
    let gets = (0..flood)
        .map(|id| {
            Message::Get {
                id,
                items: vec![GetItem {
                    hash,
                    groups: Groups::from(0..1024u64),
                }],
            }
            .encode()
        })
        .collect();
    hostile.send_all(0x0200, gets).await;
    // Read nothing for a while: the eight served GETs fill the link's
    // window and stay in progress.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut busy = std::collections::BTreeSet::new();
    let mut served = std::collections::BTreeSet::new();
    while let Ok(Some(bytes)) =
        tokio::time::timeout(Duration::from_millis(500), answers.recv()).await
    {
        match Message::decode(&bytes).unwrap() {
            Message::Error { id, code } if code == ERROR_BUSY => {
                busy.insert(id);
            }
            Message::Data { id, .. } | Message::Done { id } => {
                served.insert(id);
            }
            _ => {}
        }
        if busy.len() as u32 + 8 >= flood && served.len() >= 8 {
            break;
        }
    }
    println!(
        "{flood} GETs at once: {} served, {} busy",
        served.len(),
        busy.len()
    );
    assert!(served.len() <= 8, "{} GETs served at once", served.len());
    assert_eq!(busy.len() as u32, flood - served.len() as u32);
    assert!(busy.is_disjoint(&served));
    // An honest peer fetches the same blob meanwhile.
    let honest = nodes::node().await;
    nodes::link(&honest, &victim).await;
    honest
        .replication()
        .fetch(hash, None, None)
        .await
        .expect("another peer is served while one floods");
}
