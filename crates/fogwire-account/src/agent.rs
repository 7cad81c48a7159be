//! A worker's agent: every few seconds it looks at the hubs the network
//! advertises (their signed terms), checks each one's wallet and its
//! payments to this worker in the ledger (unverified, verified,
//! reliable), reads the bids resting in their books, chooses which to
//! take by `fogwire-compute-proto`'s knapsack, and takes them by posting
//! matching asks. What it saw and did is in [`Agent::hubs`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fogwire_compute::market::{AskRequest, BidView, MARKET, method};
use fogwire_compute::roles::terms_of;
use fogwire_compute::worker::Worker;
use fogwire_compute::{Fabric, HUB};
use fogwire_compute_proto::agent::{HubRecord, Offer, Policy, Trust, choose, classify};
use fogwire_compute_proto::to_value;
use fogwire_identity::NodeId;
use fogwire_ledger::client::LedgerClient;
use fogwire_ledger::proto::{Id, Op, Transaction, WalletState};
use fogwire_market_proto::{PriceUnit, RUNTIME_DOCKER, RUNTIME_WASM, Resources};
use fogwire_route::Routing;
use tokio_util::sync::CancellationToken;

/// How often the agent looks.
const EVERY: Duration = Duration::from_secs(3);
const CALL: Duration = Duration::from_secs(5);
/// How long the asks it posts rest.
const ASK_TTL_MS: u64 = 30_000;

/// A hub as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubView {
    pub hub: NodeId,
    pub trust: Trust,
    /// The terms it advertises: price per task, per 10⁹ fuel, fee %.
    pub terms: Option<(u64, u64, u8)>,
    pub payments_to_me: u32,
    /// Tasks done for it, past the grace, that it has not paid for.
    pub unpaid_tasks: u32,
    /// Bids resting there this worker could serve, and how many it took
    /// on its last look.
    pub bids: usize,
    pub taken: usize,
}

/// A worker's agent: what it is given, and what it saw on its last look.
pub struct Agent {
    policy: Policy,
    me: NodeId,
    offer: Resources,
    /// Its tasks, to count the work each hub owes for.
    worker: Worker,
    fabric: Arc<dyn Fabric>,
    routing: Routing,
    ledger: Option<LedgerClient>,
    hubs: Mutex<Vec<HubView>>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").finish_non_exhaustive()
    }
}

impl Agent {
    /// An agent for `worker` by `policy`, reaching hubs through `fabric`,
    /// reading adverts from `routing` and records from `ledger`.
    pub fn new(
        policy: Policy,
        worker: &Worker,
        fabric: Arc<dyn Fabric>,
        routing: Routing,
        ledger: Option<LedgerClient>,
    ) -> Agent {
        Agent {
            policy,
            me: fabric.node_id(),
            offer: offer_of(worker),
            worker: worker.clone(),
            fabric,
            routing,
            ledger,
            hubs: Mutex::default(),
        }
    }

    /// The hubs this agent knows and how it rates them.
    pub fn hubs(&self) -> Vec<HubView> {
        self.hubs
            .lock()
            .map(|hubs| hubs.clone())
            .unwrap_or_default()
    }

    /// Looks every few seconds until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            if let Err(error) = self.look().await {
                tracing::debug!(%error, "the agent's look failed");
            }
            tokio::select! {
                () = tokio::time::sleep(EVERY) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }
}

/// The tasks this worker finished for `hub` that started after the hub's
/// last payment to it (`last_paid_ms`) and more than the grace ago.
fn unpaid_tasks(
    tasks: &[fogwire_compute::worker::TaskRecord],
    hub: &[u8; 32],
    last_paid_ms: u64,
) -> u32 {
    let due_before =
        fogwire_compute::unix_ms().saturating_sub(fogwire_compute_proto::agent::UNPAID_GRACE_MS);
    tasks
        .iter()
        .filter(|task| {
            task.hub.0 == *hub
                && matches!(
                    task.state,
                    fogwire_compute::worker::TaskRecordState::Done { .. }
                )
                && task.started_ms > last_paid_ms
                && task.started_ms < due_before
        })
        .count() as u32
}

/// A trust level as the API writes it.
pub fn trust_name(trust: Trust) -> &'static str {
    match trust {
        Trust::Avoided => "avoided",
        Trust::Unverified => "unverified",
        Trust::Verified => "verified",
        Trust::Reliable => "reliable",
    }
}

/// What this worker offers, as the market counts it.
fn offer_of(worker: &Worker) -> Resources {
    let resources = worker.resources();
    let mut runtimes = 0;
    for runtime in &resources.runtimes {
        runtimes |= match runtime {
            fogwire_compute_proto::Runtime::Wasm => RUNTIME_WASM,
            fogwire_compute_proto::Runtime::Docker => RUNTIME_DOCKER,
        };
    }
    Resources {
        cores: resources.cores,
        memory_mib: resources.memory_bytes >> 20,
        gpus: resources.gpus,
        runtimes,
    }
}

impl Agent {
    async fn look(&self) -> Result<(), fogwire_route::RouteError> {
        let agent = self;
        let mine = self.offer;
        let me = *self.me.as_bytes();
        let fabric = &self.fabric;
        let mut hubs = fabric.locate(HUB).await;
        hubs.retain(|hub| *hub != self.me);
        let adverts = self.routing.nodes().await?;
        let tasks = self.worker.tasks();
        // Payments to this worker, by payer (how many, and the last one's
        // time), from its ledger history.
        let mut paid_by: Vec<([u8; 32], u32, u64)> = Vec::new();
        if let Some(client) = &self.ledger
            && let Ok(history) = client.history(&Id(me), 0, 256).await
        {
            for entry in history {
                if let Ok(tx) = Transaction::decode(&entry.signed.body)
                    && matches!(tx.op, Op::Release { .. } | Op::WalletPay { .. })
                {
                    match paid_by.iter_mut().find(|(payer, _, _)| *payer == tx.from.0) {
                        Some((_, count, last)) => {
                            *count += 1;
                            *last = (*last).max(entry.time_ms);
                        }
                        None => paid_by.push((tx.from.0, 1, entry.time_ms)),
                    }
                }
            }
        }
        let mut offers: Vec<Offer> = Vec::new();
        let mut bids_of: Vec<(NodeId, BidView)> = Vec::new();
        let mut views = Vec::new();
        for hub in &hubs {
            let bytes = *hub.as_bytes();
            let (payments_to_me, last_paid_ms) = paid_by
                .iter()
                .find(|(payer, _, _)| *payer == bytes)
                .map_or((0, 0), |(_, n, last)| (*n, *last));
            let mut record = HubRecord {
                payments_to_me,
                unpaid_tasks: unpaid_tasks(&tasks, &bytes, last_paid_ms),
                ..HubRecord::default()
            };
            if let Some(client) = &self.ledger
                && let Ok(view) = client.account(&Id(bytes)).await
                && let Some(wallet) = view.wallet
            {
                record.registered = wallet.state == WalletState::Registered;
                record.flagged =
                    matches!(wallet.state, WalletState::Suspected | WalletState::Punished);
            }
            let trust = classify(&bytes, &record, &agent.policy);
            let terms = adverts
                .iter()
                .find(|info| info.advert.origin == *hub)
                .and_then(|info| terms_of(&info.advert.services));
            let bids: Vec<BidView> =
                match fabric.call(*hub, MARKET, method::BIDS, vec![], CALL).await {
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
                hub: *hub,
                trust,
                terms,
                payments_to_me: record.payments_to_me,
                unpaid_tasks: record.unpaid_tasks,
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
                    if let Some(v) = views.iter_mut().find(|v| v.hub == *hub) {
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
}

#[cfg(test)]
mod tests {
    use fogwire_compute::worker::{TaskRecord, TaskRecordState};
    use fogwire_compute_proto::agent::UNPAID_GRACE_MS;
    use fogwire_compute_proto::{Commitment, Digest, ExitStatus, JobId, Outcome, Reveal};

    use super::unpaid_tasks;

    fn task(hub: u8, started_ms: u64, done: bool) -> TaskRecord {
        let outcome = Outcome {
            status: ExitStatus::Exited(0),
            stdout: Digest::of(b""),
            stderr: Digest::of(b""),
            fuel_used: 1,
        };
        let job = JobId(Digest::of(&started_ms.to_le_bytes()));
        let nonce = Digest::of(b"nonce");
        TaskRecord {
            job,
            index: 0,
            hub: Digest([hub; 32]),
            started_ms,
            state: if done {
                TaskRecordState::Done {
                    commitment: Commitment::new(&[1; 32], &job, 0, &outcome.digest(), &nonce),
                    reveal: Reveal { outcome, nonce },
                    wall_time_ms: 1,
                }
            } else {
                TaskRecordState::Cancelled
            },
        }
    }

    #[test]
    fn unpaid_work_is_what_was_done_after_the_last_payment_and_past_the_grace() {
        let now = fogwire_compute::unix_ms();
        let overdue = now - UNPAID_GRACE_MS - 60_000;
        let tasks = [
            task(7, overdue, true),
            task(7, overdue + 1, true),
            // Not done, another hub's, or still within the grace.
            task(7, overdue + 2, false),
            task(8, overdue, true),
            task(7, now - 1_000, true),
        ];
        assert_eq!(unpaid_tasks(&tasks, &[7; 32], 0), 2);
        // A payment after the first task covers it.
        assert_eq!(unpaid_tasks(&tasks, &[7; 32], overdue), 1);
        assert_eq!(unpaid_tasks(&tasks, &[9; 32], 0), 0);
    }
}
