//! The control API's market endpoints: a hub's order book (asks, bids,
//! deals) and orders this node posts or cancels there, as itself.

use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use bytes::Bytes;
use fogwire_compute::Fabric;
use fogwire_compute::market::{
    self, AskRequest, AskView, BidRequest, BidView, MARKET, Posted, method,
};
use fogwire_compute_proto::to_value;
use fogwire_identity::NodeId;
use fogwire_market_proto::{Deal, Fill, PriceUnit, RUNTIME_DOCKER, RUNTIME_WASM, Resources};
use fogwire_rpc_proto::Value;

use crate::NodeApi;
use crate::jobs::query;
use crate::server::{ApiState, Refusal};
use fogwire_api::{
    MarketAskRequest, MarketBidRequest, MarketCancelRequest, MarketDeal, MarketEvent, MarketFill,
    MarketOrder, MarketPosted, MarketResources,
};

const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn bad(message: impl Into<String>) -> Refusal {
    Refusal(StatusCode::BAD_REQUEST, message.into())
}

fn name(party: &[u8; 32]) -> String {
    fogwire_ledger::name_of(&fogwire_ledger::proto::Id(*party))
}

/// The hub named (an id or the start of one), else the first known
/// (this node first if it is one), as the job endpoints choose.
async fn hub_of(state: &ApiState, name: Option<&str>) -> Result<NodeId, Refusal> {
    let named = crate::jobs::hub_named(state, name).await?;
    Ok(fogwire_compute::client::choose_hub(state.node.fabric().as_ref(), named).await?)
}

async fn call(
    node: &dyn NodeApi,
    hub: NodeId,
    method: u64,
    args: Vec<Value>,
) -> Result<Value, Refusal> {
    let fabric: Arc<dyn Fabric> = node.fabric();
    let chunks = fabric
        .call(hub, MARKET, method, args, TIMEOUT)
        .await
        .map_err(|error| match error.code() {
            Some(fogwire_rpc_proto::code::BAD_ARGS) => {
                Refusal(StatusCode::UNPROCESSABLE_ENTITY, error.to_string())
            }
            _ => Refusal(StatusCode::BAD_GATEWAY, error.to_string()),
        })?;
    chunks
        .into_iter()
        .next()
        .and_then(|chunk| chunk.into_iter().next())
        .ok_or_else(|| Refusal(StatusCode::BAD_GATEWAY, "an empty answer".into()))
}

fn decode<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, Refusal> {
    market::decode_answer(value).map_err(|e| Refusal(StatusCode::BAD_GATEWAY, e.to_string()))
}

fn unit(text: &Option<String>) -> Result<PriceUnit, Refusal> {
    match text {
        None => Ok(PriceUnit::Task),
        Some(text) => PriceUnit::parse(text).ok_or_else(|| {
            bad(format!(
                "unit `{text}`: task, gfuel, cpu_second, gb_stored or gb_served"
            ))
        }),
    }
}

fn resources(r: &MarketResources) -> Result<Resources, Refusal> {
    let mut runtimes = 0;
    for runtime in &r.runtimes {
        runtimes |= match runtime.as_str() {
            "wasm" => RUNTIME_WASM,
            "docker" => RUNTIME_DOCKER,
            other => return Err(bad(format!("runtime `{other}`: wasm or docker"))),
        };
    }
    Ok(Resources {
        cores: r.cores,
        memory_mib: r.memory_mib,
        gpus: r.gpus,
        runtimes,
    })
}

fn resources_json(r: &Resources) -> MarketResources {
    let mut runtimes = Vec::new();
    if r.runtimes & RUNTIME_WASM != 0 {
        runtimes.push("wasm".to_owned());
    }
    if r.runtimes & RUNTIME_DOCKER != 0 {
        runtimes.push("docker".to_owned());
    }
    MarketResources {
        cores: r.cores,
        memory_mib: r.memory_mib,
        gpus: r.gpus,
        runtimes,
    }
}

fn fill_json(fill: &Fill) -> MarketFill {
    MarketFill {
        bid: fill.bid,
        ask: fill.ask,
        worker: name(&fill.worker),
        price: fill.price,
    }
}

fn deal_json(hub: NodeId, deal: &Deal) -> MarketDeal {
    MarketDeal {
        hub: hub.to_string(),
        bid: deal.bid,
        buyer: name(&deal.buyer),
        fills: deal.fills.iter().map(fill_json).collect(),
        price: deal.price(),
        time_ms: deal.time_ms,
    }
}

fn posted_json(hub: NodeId, posted: Posted) -> MarketPosted {
    MarketPosted {
        hub: hub.to_string(),
        id: posted.id,
        fills: posted.fills.iter().map(fill_json).collect(),
        deals: posted.deals.iter().map(|d| deal_json(hub, d)).collect(),
    }
}

pub(crate) async fn asks(
    State(state): State<Arc<ApiState>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Vec<MarketOrder>>, Refusal> {
    let hub = hub_of(&state, query(&raw, "hub").as_deref()).await?;
    let asks: Vec<AskView> = decode(call(state.node.as_ref(), hub, method::ASKS, vec![]).await?)?;
    Ok(Json(
        asks.iter()
            .map(|view| MarketOrder {
                hub: hub.to_string(),
                id: view.id,
                side: "ask".into(),
                party: name(&view.ask.worker),
                resources: resources_json(&view.ask.offer),
                price: view.ask.price,
                unit: view.ask.unit.name().to_owned(),
                size: view.ask.slots,
                filled_or_left: view.slots_left,
                expires_ms: view.ask.expires_ms,
            })
            .collect(),
    ))
}

pub(crate) async fn bids(
    State(state): State<Arc<ApiState>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Vec<MarketOrder>>, Refusal> {
    let hub = hub_of(&state, query(&raw, "hub").as_deref()).await?;
    let bids: Vec<BidView> = decode(call(state.node.as_ref(), hub, method::BIDS, vec![]).await?)?;
    Ok(Json(
        bids.iter()
            .map(|view| MarketOrder {
                hub: hub.to_string(),
                id: view.id,
                side: "bid".into(),
                party: name(&view.bid.buyer),
                resources: resources_json(&view.bid.need),
                price: view.bid.max_price,
                unit: view.bid.unit.name().to_owned(),
                size: u32::from(view.bid.replicas),
                filled_or_left: view.fills.len() as u32,
                expires_ms: view.bid.expires_ms,
            })
            .collect(),
    ))
}

pub(crate) async fn deals(
    State(state): State<Arc<ApiState>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Vec<MarketDeal>>, Refusal> {
    let hub = hub_of(&state, query(&raw, "hub").as_deref()).await?;
    let limit = query(&raw, "limit")
        .and_then(|l| l.parse::<u64>().ok())
        .unwrap_or(50);
    let deals: Vec<Deal> = decode(
        call(
            state.node.as_ref(),
            hub,
            method::DEALS,
            vec![Value::from(limit)],
        )
        .await?,
    )?;
    Ok(Json(deals.iter().map(|d| deal_json(hub, d)).collect()))
}

pub(crate) async fn events(
    State(state): State<Arc<ApiState>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Vec<MarketEvent>>, Refusal> {
    let hub = hub_of(&state, query(&raw, "hub").as_deref()).await?;
    let limit = query(&raw, "limit")
        .and_then(|l| l.parse::<u64>().ok())
        .unwrap_or(50);
    let events: Vec<(u64, fogwire_market_proto::Event)> = decode(
        call(
            state.node.as_ref(),
            hub,
            method::EVENTS,
            vec![Value::from(limit)],
        )
        .await?,
    )?;
    let short = |party: &[u8; 32]| {
        NodeId::from_bytes(party)
            .map(|id| id.short())
            .unwrap_or_default()
    };
    Ok(Json(
        events
            .into_iter()
            .map(|(time_ms, event)| {
                use fogwire_market_proto::Event;
                let (kind, order, text) = match event {
                    Event::Posted { id } => ("posted", id, format!("order {id} posted")),
                    Event::Filled(fill) => (
                        "filled",
                        fill.bid,
                        format!(
                            "bid {} filled by ask {} of {} at {} coins",
                            fill.bid,
                            fill.ask,
                            short(&fill.worker),
                            fogwire_ledger::format_coins(fill.price)
                        ),
                    ),
                    Event::Dealt(deal) => (
                        "dealt",
                        deal.bid,
                        format!(
                            "bid {} of {} dealt: {} worker(s), {} coins per task",
                            deal.bid,
                            short(&deal.buyer),
                            deal.fills.len(),
                            fogwire_ledger::format_coins(deal.price())
                        ),
                    ),
                    Event::Cancelled { id } => ("cancelled", id, format!("order {id} cancelled")),
                    Event::Expired { id } => ("expired", id, format!("order {id} expired")),
                };
                MarketEvent {
                    time_ms,
                    kind: kind.to_owned(),
                    order,
                    text,
                }
            })
            .collect(),
    ))
}

fn encoded<T: serde::Serialize>(value: &T) -> Result<Value, Refusal> {
    to_value(value).map_err(|e| Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

pub(crate) async fn ask(
    State(state): State<Arc<ApiState>>,
    body: Bytes,
) -> Result<Json<MarketPosted>, Refusal> {
    let request: MarketAskRequest =
        serde_json::from_slice(&body).map_err(|e| bad(format!("not an ask: {e}")))?;
    let hub = hub_of(&state, request.hub.as_deref()).await?;
    let ask = AskRequest {
        offer: resources(&request.offer)?,
        slots: request.slots,
        price: request.price,
        ttl_ms: request.ttl_secs.saturating_mul(1000),
        unit: unit(&request.unit)?,
    };
    let posted: Posted =
        decode(call(state.node.as_ref(), hub, method::ASK, vec![encoded(&ask)?]).await?)?;
    Ok(Json(posted_json(hub, posted)))
}

pub(crate) async fn bid(
    State(state): State<Arc<ApiState>>,
    body: Bytes,
) -> Result<Json<MarketPosted>, Refusal> {
    let request: MarketBidRequest =
        serde_json::from_slice(&body).map_err(|e| bad(format!("not a bid: {e}")))?;
    let hub = hub_of(&state, request.hub.as_deref()).await?;
    // A bid the buyer could not pay is refused here, before it rests in
    // a book: its whole price must be in the buyer's account.
    let total = request
        .max_price
        .saturating_mul(u64::from(request.replicas));
    if let Some(client) = state.node.ledger()
        && let Ok(view) = client
            .account(&fogwire_ledger::proto::Id(*state.node.node_id().as_bytes()))
            .await
        && view.account.balance < total
    {
        return Err(Refusal(
            StatusCode::PAYMENT_REQUIRED,
            format!(
                "this bid may cost {} coins per task and you hold {}: the ledger would refuse its escrow",
                fogwire_ledger::format_coins(total),
                fogwire_ledger::format_coins(view.account.balance)
            ),
        ));
    }
    let bid = BidRequest {
        need: resources(&request.need)?,
        max_price: request.max_price,
        replicas: request.replicas,
        ttl_ms: request.ttl_secs.saturating_mul(1000),
        unit: unit(&request.unit)?,
    };
    let posted: Posted =
        decode(call(state.node.as_ref(), hub, method::BID, vec![encoded(&bid)?]).await?)?;
    Ok(Json(posted_json(hub, posted)))
}

pub(crate) async fn cancel(
    State(state): State<Arc<ApiState>>,
    body: Bytes,
) -> Result<Json<bool>, Refusal> {
    let request: MarketCancelRequest =
        serde_json::from_slice(&body).map_err(|e| bad(format!("not a cancellation: {e}")))?;
    let hub = hub_of(&state, request.hub.as_deref()).await?;
    call(
        state.node.as_ref(),
        hub,
        method::CANCEL,
        vec![Value::from(request.id)],
    )
    .await?;
    Ok(Json(true))
}

/// `GET /v1/hubs`: the hubs this worker's agent knows and rates.
pub(crate) async fn hubs(State(state): State<Arc<ApiState>>) -> Json<Vec<fogwire_api::HubView>> {
    Json(state.node.hubs())
}
