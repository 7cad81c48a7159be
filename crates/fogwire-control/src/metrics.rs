//! `GET /metrics`: the node's link metrics, and beside them what every
//! other subsystem counts — routing, reachability and relays, the store,
//! replication, the cluster,
//! compute (worker tasks, hub jobs), the market's book, the ledger (this
//! node's coins; the log when it runs here) — and the build, read at each
//! scrape (nothing kept between scrapes; the ledger asked within 2 s).
//! OpenMetrics text, encoded by prometheus-client.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::server::ApiState;

/// A gauge set once per scrape. Counters the node keeps from its start
/// are shown as gauges of their current value: this registry lives only
/// for one scrape, so it cannot keep a counter's history itself.
fn gauge(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let gauge: Gauge = Gauge::default();
    gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
    registry.register(name, help, gauge);
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabel {
    peer: String,
}

fn by_state<'a>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    states: impl IntoIterator<Item = &'a str>,
) {
    let family = Family::<StateLabel, Gauge>::default();
    for state in states {
        family
            .get_or_create(&StateLabel {
                state: state.to_owned(),
            })
            .inc();
    }
    registry.register(name, help, family);
}

/// The subsystems' metrics, in the OpenMetrics text format (with its
/// closing `# EOF`).
async fn subsystems(state: &ApiState) -> String {
    let mut registry = Registry::with_prefix("fogwire");
    registry.register(
        "build",
        "The fogwire build this node runs",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
    );

    // Routing.
    if let Ok(listing) = state.node.routing().routes().await {
        by_state(
            &mut registry,
            "routes",
            "Routes this node opened, by state",
            listing.routes.iter().map(|route| match route.status {
                fogwire_route::proto::router::RouteStatus::Up => "up",
                fogwire_route::proto::router::RouteStatus::SettingUp => "setting_up",
                fogwire_route::proto::router::RouteStatus::Repairing => "repairing",
            }),
        );
        gauge(
            &mut registry,
            "transit_routes",
            "Routes of others this node relays now",
            listing.transit.len() as u64,
        );
        let relayed = listing.transit_total();
        gauge(
            &mut registry,
            "transit_bytes",
            "Bytes this node relays for others on the routes it carries now",
            relayed.bytes_forward + relayed.bytes_backward,
        );
        let stats = &listing.stats;
        for (name, help, value) in [
            (
                "adverts_accepted",
                "Adverts accepted since start",
                stats.adverts_accepted,
            ),
            (
                "adverts_refused",
                "Adverts refused since start",
                stats.adverts_refused,
            ),
            (
                "routes_broken",
                "Routes broken since start",
                stats.routes_broken,
            ),
            (
                "routes_repaired",
                "Routes repaired since start",
                stats.routes_repaired,
            ),
            (
                "routes_moved",
                "Routes moved onto a shorter path since start",
                stats.routes_moved,
            ),
            (
                "receipts_stored",
                "Forwarding receipts kept since start",
                stats.receipts_stored,
            ),
        ] {
            gauge(&mut registry, name, help, value);
        }
    }
    if let Ok(nodes) = state.node.routing().nodes().await {
        gauge(
            &mut registry,
            "known_nodes",
            "Nodes whose signed adverts this node holds",
            nodes.len() as u64,
        );
    }

    // The store.
    let store = state.node.store().clone();
    if let Ok(Ok(stat)) = tokio::task::spawn_blocking(move || store.stat()).await {
        for (name, help, value) in [
            ("store_blobs", "Blobs in the store", stat.blobs),
            ("store_bytes", "Bytes of the blobs in the store", stat.bytes),
            (
                "store_pinned_blobs",
                "Blobs kept from collection",
                stat.pinned_blobs,
            ),
            (
                "store_pinned_bytes",
                "Bytes kept from collection",
                stat.pinned_bytes,
            ),
            ("store_tags", "Tags", stat.tags),
        ] {
            gauge(&mut registry, name, help, value);
        }
    }

    // Replication: what this node served to and fetched from each peer.
    let served = Family::<PeerLabel, Gauge>::default();
    let fetched = Family::<PeerLabel, Gauge>::default();
    for peer in state.node.replication().peers() {
        let label = PeerLabel {
            peer: peer.peer.to_string(),
        };
        let bytes = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        served.get_or_create(&label).set(bytes(peer.served_bytes));
        fetched.get_or_create(&label).set(bytes(peer.fetched_bytes));
    }
    registry.register(
        "replication_served_bytes",
        "Store bytes served to each peer since start",
        served,
    );
    registry.register(
        "replication_fetched_bytes",
        "Store bytes fetched from each peer since start",
        fetched,
    );

    // Provider records: finding content beyond neighbours.
    let providers = state.node.replication().provider_stats();
    for (name, help, value) in [
        (
            "store_provider_records_kept",
            "Provider records this node keeps for the network",
            providers.records_kept,
        ),
        (
            "store_provider_records_given",
            "Records of this node's pins that their keepers took",
            providers.records_given,
        ),
        (
            "store_provider_routes",
            "Store routes pooled to keepers and holders beyond the neighbours",
            providers.routes,
        ),
    ] {
        gauge(&mut registry, name, help, value);
    }

    // The cluster.
    let cluster = state.node.cluster().status();
    if cluster.cluster.is_some() {
        by_state(
            &mut registry,
            "cluster_members",
            "Members of this board's cluster, by state",
            cluster.members.iter().map(|member| member.state.as_str()),
        );
        by_state(
            &mut registry,
            "cluster_services",
            "Services the cluster runs on this board, by state",
            cluster
                .services
                .iter()
                .map(|service| service.state.as_str()),
        );
    }

    // Reachability and relays (relay.md).
    let reach = state.node.status().reach;
    by_state(
        &mut registry,
        "reachability",
        "Whether others can dial this node: 1 for its state (public, private, local, unknown)",
        [reach.reachability.as_str()],
    );
    by_state(
        &mut registry,
        "relays_kept",
        "Relays this node keeps while others cannot dial it, by state",
        reach.relays.iter().map(|relay| relay.state.as_str()),
    );
    if let Some(relay) = &reach.relay {
        let clients = relay.clients.len() as u64;
        gauge(
            &mut registry,
            "relay_clients",
            "Nodes this relay carries for",
            clients,
        );
    }

    compute_and_market(&mut registry, &state.node.compute_roles());
    ledger(&mut registry, state).await;

    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

/// What this node's worker, hub and market hold now.
fn compute_and_market(registry: &mut Registry, roles: &crate::ComputeRoles) {
    use fogwire_compute::worker::TaskRecordState;
    if let Some(worker) = &roles.worker {
        by_state(
            registry,
            "worker_tasks",
            "Tasks this node's worker has run or runs (its kept records), by state",
            worker.tasks().iter().map(|task| match task.state {
                TaskRecordState::Running => "running",
                TaskRecordState::Interrupted => "interrupted",
                TaskRecordState::Done { .. } => "done",
                TaskRecordState::Failed(_) => "failed",
                TaskRecordState::Cancelled => "cancelled",
            }),
        );
    }
    if let Some(hub) = &roles.hub {
        use fogwire_compute_proto::scheduler::JobState;
        by_state(
            registry,
            "hub_jobs",
            "Jobs this node's hub holds, by state",
            hub.jobs().iter().map(|job| match job.state {
                JobState::Running => "running",
                JobState::Done => "done",
                JobState::Failed(_) => "failed",
                JobState::Cancelled => "cancelled",
            }),
        );
        gauge(
            registry,
            "hub_workers",
            "Workers this node's hub knows",
            hub.workers().len() as u64,
        );
    }
    if let Some(market) = &roles.market {
        gauge(
            registry,
            "market_asks",
            "Open asks in this hub's order book",
            market.asks().len() as u64,
        );
        gauge(
            registry,
            "market_bids",
            "Open bids in this hub's order book",
            market.bids().len() as u64,
        );
        gauge(
            registry,
            "market_deals",
            "Deals this hub's market has made and keeps",
            market.deals(usize::MAX).len() as u64,
        );
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

/// Time a scrape waits for the ledger.
const LEDGER_SCRAPE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// This node's coins, when a ledger answers in time; and the ledger's own
/// figures when it runs here.
async fn ledger(registry: &mut Registry, state: &ApiState) {
    let Some(client) = state.node.ledger() else {
        return;
    };
    let me = state.node.node_id();
    let id = fogwire_ledger::proto::Id(*me.as_bytes());
    if let Ok(Ok(view)) = tokio::time::timeout(LEDGER_SCRAPE_TIMEOUT, client.account(&id)).await {
        gauge(
            registry,
            "ledger_balance_units",
            "This node's coins, in units (10^-6 coin)",
            view.account.balance,
        );
        let earned = Family::<SourceLabel, Gauge>::default();
        let by = view.flow.per_hour_by_source;
        for (source, units) in [
            ("all", view.flow.earned_per_hour),
            ("forwarding", by.forwarding),
            ("serving", by.serving),
            ("computing", by.computing),
        ] {
            earned
                .get_or_create(&SourceLabel {
                    source: source.to_owned(),
                })
                .set(i64::try_from(units).unwrap_or(i64::MAX));
        }
        registry.register(
            "ledger_earned_per_hour_units",
            "What this node earned per hour over the last hour, in units, by kind of work",
            earned,
        );
    }
    if state.node.ledger_node().await == Some(me)
        && let Ok(Ok(info)) = tokio::time::timeout(LEDGER_SCRAPE_TIMEOUT, client.info()).await
    {
        gauge(
            registry,
            "ledger_log_entries",
            "Transactions in the ledger's log (it runs here)",
            info.log_len,
        );
        gauge(
            registry,
            "ledger_accounts",
            "Accounts the ledger holds (it runs here)",
            info.accounts,
        );
        gauge(
            registry,
            "ledger_supply_ok",
            "1 if the ledger's supply check holds (it runs here), else 0",
            u64::from(info.supply_error.is_none()),
        );
    }
}

pub(crate) async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    // The links' registry first, without its closing line; then the rest,
    // which closes the exposition.
    let links = state.node.metrics_text();
    let links = links.trim_end().strip_suffix("# EOF").unwrap_or(&links);
    let text = format!("{}{}", links, subsystems(&state).await);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
