//! A worker's agent: every few seconds it looks at the hubs the network
//! advertises (their signed terms), checks each one's wallet and its
//! payments to this worker in the ledger (unverified, verified,
//! reliable), reads the bids resting in their books, chooses which to
//! take by `fogwire-compute-proto`'s knapsack, and takes them by posting
//! matching asks. What it saw and did is in [`Node::hubs`].

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use fogwire_api::HubView;
use fogwire_compute::market::{AskRequest, BidView, MARKET, method};
use fogwire_compute::{Fabric, HUB};
use fogwire_compute_proto::agent::{HubRecord, Offer, Policy, Trust, choose, classify};
use fogwire_compute_proto::to_value;
use fogwire_identity::NodeId;
use fogwire_ledger::proto::{Id, Op, Transaction, WalletState};
use fogwire_market_proto::{PriceUnit, RUNTIME_DOCKER, RUNTIME_WASM, Resources};

use crate::Node;
use crate::node::Inner;

/// How often the agent looks.
const EVERY: Duration = Duration::from_secs(3);
const CALL: Duration = Duration::from_secs(5);
/// How long the asks it posts rest.
const ASK_TTL_MS: u64 = 30_000;

/// The hub's terms from its advert's `terms:<task>:<gfuel>:<fee>`.
pub fn terms_of(services: &[String]) -> Option<(u64, u64, u8)> {
    let text = services.iter().find_map(|s| s.strip_prefix("terms:"))?;
    let mut parts = text.split(':');
    Some((
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    ))
}

/// The advert entry of a hub's terms, if it fits an advert.
pub fn terms_advert(terms: &fogwire_compute_proto::pay::Terms) -> Option<String> {
    let text = format!(
        "terms:{}:{}:{}",
        terms.price_per_task, terms.price_per_gfuel, terms.fee_percent
    );
    (text.len() <= 32).then_some(text)
}

pub(crate) struct Agent {
    pub(crate) policy: Policy,
    pub(crate) hubs: Mutex<Vec<HubView>>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").finish_non_exhaustive()
    }
}

fn trust_name(trust: Trust) -> &'static str {
    match trust {
        Trust::Avoided => "avoided",
        Trust::Unverified => "unverified",
        Trust::Verified => "verified",
        Trust::Reliable => "reliable",
    }
}

/// Runs the agent until the node stops.
pub(crate) async fn run(weak: Weak<Inner>, agent: Arc<Agent>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let node = Node { inner };
        let shutdown = node.inner.shutdown.clone();
        if let Err(error) = look(&node, &agent).await {
            tracing::debug!(%error, "the agent's look failed");
        }
        drop(node);
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// What this worker offers, as the market counts it.
fn my_resources(node: &Node) -> Option<Resources> {
    let worker = node.worker()?;
    let resources = worker.resources();
    let mut runtimes = 0;
    for runtime in &resources.runtimes {
        runtimes |= match runtime {
            fogwire_compute_proto::Runtime::Wasm => RUNTIME_WASM,
            fogwire_compute_proto::Runtime::Docker => RUNTIME_DOCKER,
        };
    }
    Some(Resources {
        cores: resources.cores,
        memory_mib: resources.memory_bytes >> 20,
        gpus: resources.gpus,
        runtimes,
    })
}

async fn look(node: &Node, agent: &Agent) -> Result<(), String> {
    let Some(mine) = my_resources(node) else {
        return Ok(());
    };
    let me = *node.node_id().as_bytes();
    let fabric: Arc<dyn Fabric> = node.fabric();
    let mut hubs = fabric.locate(HUB).await;
    hubs.retain(|hub| *hub != node.node_id());
    let adverts = node.routing().nodes().await.map_err(|e| e.to_string())?;
    // Payments to this worker, by payer, from its ledger history.
    let mut paid_by: Vec<([u8; 32], u32)> = Vec::new();
    if let Some(client) = node.ledger()
        && let Ok(history) = client.history(&Id(me), 0, 256).await
    {
        for entry in history {
            if let Ok(tx) = Transaction::decode(&entry.signed.body)
                && matches!(tx.op, Op::Release { .. } | Op::WalletPay { .. })
            {
                match paid_by.iter_mut().find(|(payer, _)| *payer == tx.from.0) {
                    Some((_, count)) => *count += 1,
                    None => paid_by.push((tx.from.0, 1)),
                }
            }
        }
    }
    let mut offers: Vec<Offer> = Vec::new();
    let mut bids_of: Vec<(NodeId, BidView)> = Vec::new();
    let mut views = Vec::new();
    for hub in &hubs {
        let bytes = *hub.as_bytes();
        let mut record = HubRecord {
            payments_to_me: paid_by
                .iter()
                .find(|(payer, _)| *payer == bytes)
                .map_or(0, |(_, n)| *n),
            ..HubRecord::default()
        };
        if let Some(client) = node.ledger()
            && let Ok(view) = client.account(&Id(bytes)).await
            && let Some(wallet) = view.wallet
        {
            record.registered = wallet.state == WalletState::Registered;
            record.flagged = matches!(wallet.state, WalletState::Suspected | WalletState::Punished);
        }
        let trust = classify(&bytes, &record, &agent.policy);
        let terms = adverts
            .iter()
            .find(|info| info.advert.origin == *hub)
            .and_then(|info| terms_of(&info.advert.services));
        let bids: Vec<BidView> = match fabric.call(*hub, MARKET, method::BIDS, vec![], CALL).await {
            Ok(chunks) => chunks
                .into_iter()
                .next()
                .and_then(|chunk| chunk.into_iter().next())
                .and_then(|value| fogwire_compute::market::decode_answer(value).ok())
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let mut count = 0;
        for view in bids {
            // Priced per task, as the agent weighs them, and not filled by
            // this worker yet.
            if view.bid.unit == PriceUnit::Task
                && mine.meets(&view.bid.need)
                && !view.fills.iter().any(|f| f.worker == me)
            {
                offers.push(Offer {
                    hub: bytes,
                    trust,
                    price: view.bid.max_price,
                    weight: view.bid.need.cores.max(1),
                });
                bids_of.push((*hub, view));
                count += 1;
            }
        }
        views.push(HubView {
            hub: hub.to_string(),
            trust: trust_name(trust).to_owned(),
            terms,
            payments_to_me: record.payments_to_me,
            bids: count,
            taken: 0,
        });
    }
    let chosen = choose(&offers, mine.cores.max(1), &agent.policy);
    for index in chosen {
        let (hub, view) = &bids_of[index];
        let request = AskRequest {
            offer: mine,
            slots: 1,
            price: view.bid.max_price,
            ttl_ms: ASK_TTL_MS,
            unit: PriceUnit::Task,
        };
        let Ok(args) = to_value(&request) else {
            continue;
        };
        match fabric
            .call(*hub, MARKET, method::ASK, vec![args], CALL)
            .await
        {
            Ok(_) => {
                if let Some(v) = views.iter_mut().find(|v| v.hub == hub.to_string()) {
                    v.taken += 1;
                }
                tracing::info!(hub = %hub.short(), bid = view.id, price = view.bid.max_price, "agent: took a bid");
            }
            Err(error) => tracing::debug!(%error, "agent: the ask was refused"),
        }
    }
    if let Ok(mut hubs) = agent.hubs.lock() {
        *hubs = views;
    }
    Ok(())
}

impl Node {
    /// The hubs this worker's agent knows and how it rates them (empty
    /// without an agent).
    pub fn hubs(&self) -> Vec<HubView> {
        self.inner
            .agent
            .get()
            .and_then(|agent| agent.hubs.lock().ok().map(|hubs| hubs.clone()))
            .unwrap_or_default()
    }
}
