//! The control API's routing endpoints: the graph, paths, routes, pings
//! and transfer checks.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use fogwire_identity::NodeId;
use fogwire_route::proto::router::{self, Counters};
use fogwire_route::services::{SINK, send_to_sink};
use fogwire_route::{Constraints, NodeInfo, Opened, RouteError, Routing};

use crate::ndjson;
use crate::server::{ApiState, Refusal, error};
use fogwire_api::{
    ClosedRoute, FoundPath, GraphLink, GraphNode, OpenedRoute, PingReport, RouteCounters,
    RouteEntry, RouteRequest, RouteStatus, Routes, RoutingStats, SendLine, SendReport,
    TransitEntry,
};

/// Most node-disjoint paths one find returns.
const ALTERNATIVES_MAX: usize = 8;
/// Most pings per request.
const PINGS_MAX: u32 = 100;
/// How long a ping waits for its pong.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Default bytes of a transfer check.
const SEND_DEFAULT: u64 = 64 * 1024 * 1024;
/// Largest transfer check.
const SEND_MAX: u64 = 1 << 40;

fn status_of(route_error: &RouteError) -> StatusCode {
    match route_error {
        RouteError::NoPath(_) | RouteError::NoRoute | RouteError::Unknown(_) => {
            StatusCode::NOT_FOUND
        }
        RouteError::UnknownRoute => StatusCode::NOT_FOUND,
        RouteError::Setup(_) | RouteError::Timeout(_) | RouteError::Down(_) => {
            StatusCode::BAD_GATEWAY
        }
        RouteError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn route_error(route_error: RouteError) -> Response {
    error(status_of(&route_error), route_error.to_string())
}

impl From<RouteError> for Refusal {
    fn from(route_error: RouteError) -> Self {
        Refusal(status_of(&route_error), route_error.to_string())
    }
}

fn parse_request(body: &Bytes) -> Result<RouteRequest, Refusal> {
    serde_json::from_slice(body).map_err(|parse_error| {
        Refusal(
            StatusCode::BAD_REQUEST,
            format!("expected {{\"node\": \"<node id>\", …}}: {parse_error}"),
        )
    })
}

/// A node named by a name the operator gave it, by its full id, or by a
/// prefix of it that only one known node has.
pub(crate) fn resolve(
    names: &crate::names::Names,
    nodes: &[NodeInfo],
    name: &str,
) -> Result<NodeId, Refusal> {
    let known = nodes.iter().map(|node| node.advert.origin);
    resolve_among(names, known, name, ("known node", "fogwire nodes"))
}

/// [`resolve`], the prefix taken among `known`; `what` names them and the
/// command that lists them.
pub(crate) fn resolve_among(
    names: &crate::names::Names,
    known: impl IntoIterator<Item = NodeId>,
    name: &str,
    (what, listed_by): (&str, &str),
) -> Result<NodeId, Refusal> {
    if let Some(id) = names.get(name) {
        return Ok(id);
    }
    if let Ok(id) = name.trim().parse::<NodeId>() {
        return Ok(id);
    }
    let known = known.into_iter().map(|id| (id.to_string(), id));
    crate::prefix::unique(name, known, what, listed_by)
}

/// The destination and constraints a request names.
async fn target(
    names: &crate::names::Names,
    routing: &Routing,
    request: &RouteRequest,
) -> Result<(NodeId, Constraints), Refusal> {
    let nodes = routing.nodes().await?;
    let destination = resolve(names, &nodes, &request.node)?;
    let mut constraints = Constraints::default();
    if let Some(hops) = request.hops {
        constraints.min_hops = hops;
        constraints.max_hops = hops;
    }
    if let Some(min) = request.min_hops {
        constraints.min_hops = min;
    }
    if let Some(max) = request.max_hops {
        constraints.max_hops = max;
    }
    for avoided in &request.avoid {
        constraints.avoid.push(resolve(names, &nodes, avoided)?);
    }
    if let Some(exit) = &request.exit {
        constraints.exit = Some(resolve(names, &nodes, exit)?);
    }
    Ok((destination, constraints))
}

/// The request in `body`, with the destination and constraints it names.
async fn parse_target(
    names: &crate::names::Names,
    routing: &Routing,
    body: &Bytes,
) -> Result<(RouteRequest, NodeId, Constraints), Refusal> {
    let request = parse_request(body)?;
    let (destination, constraints) = target(names, routing, &request).await?;
    Ok((request, destination, constraints))
}

fn counters(counters: Counters) -> RouteCounters {
    RouteCounters {
        bytes_forward: counters.bytes_forward,
        bytes_backward: counters.bytes_backward,
        packets_forward: counters.packets_forward,
        packets_backward: counters.packets_backward,
    }
}

fn ids(nodes: &[NodeId]) -> Vec<String> {
    nodes.iter().map(ToString::to_string).collect()
}

fn opened(opened: &Opened) -> OpenedRoute {
    OpenedRoute {
        id: opened.route,
        path: ids(&opened.path),
        setup_ms: opened.setup_time.as_secs_f64() * 1e3,
        latency_ms: opened.latency_us as f64 / 1e3,
    }
}

pub(crate) async fn nodes(State(state): State<Arc<ApiState>>) -> Response {
    match state.node.routing().nodes().await {
        Ok(nodes) => axum::Json(
            nodes
                .into_iter()
                .map(|node| GraphNode {
                    node_id: node.advert.origin.to_string(),
                    this_node: node.this_node,
                    neighbour: node.neighbour,
                    seq: node.advert.seq,
                    issued_at_unix_ms: node.advert.issued_at_ms,
                    expires_at_unix_ms: node.advert.expires_at_ms(),
                    addresses: node.advert.addresses.clone(),
                    services: node.advert.services.clone(),
                    links: node
                        .advert
                        .links
                        .iter()
                        .map(|link| GraphLink {
                            node_id: link.neighbour.to_string(),
                            latency_ms: f64::from(link.latency_us) / 1e3,
                            capacity_kbps: link.capacity_kbps,
                        })
                        .collect(),
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(failure) => route_error(failure),
    }
}

pub(crate) async fn find(State(state): State<Arc<ApiState>>, body: Bytes) -> Response {
    let routing = state.node.routing();
    let (request, destination, constraints) = match parse_target(&state.names, routing, &body).await
    {
        Ok(parsed) => parsed,
        Err(refusal) => return refusal.into_response(),
    };
    let alternatives = request.alternatives.unwrap_or(1).clamp(1, ALTERNATIVES_MAX);
    match routing.find(destination, constraints, alternatives).await {
        Ok(paths) => axum::Json(
            paths
                .iter()
                .map(|path| FoundPath {
                    nodes: ids(&path.nodes),
                    hops: path.hops(),
                    latency_ms: path.latency_us as f64 / 1e3,
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(failure) => route_error(failure),
    }
}

pub(crate) async fn open(State(state): State<Arc<ApiState>>, body: Bytes) -> Response {
    let routing = state.node.routing();
    let (_, destination, constraints) = match parse_target(&state.names, routing, &body).await {
        Ok(parsed) => parsed,
        Err(refusal) => return refusal.into_response(),
    };
    match routing.open(destination, constraints).await {
        Ok(route) => axum::Json(opened(&route)).into_response(),
        Err(failure) => route_error(failure),
    }
}

pub(crate) async fn list(State(state): State<Arc<ApiState>>) -> Response {
    let listing = match state.node.routing().routes().await {
        Ok(listing) => listing,
        Err(failure) => return route_error(failure),
    };
    let stats = &listing.stats;
    axum::Json(Routes {
        routes: listing
            .routes
            .iter()
            .map(|route| RouteEntry {
                id: route.id,
                path: ids(&route.path),
                status: match route.status {
                    router::RouteStatus::SettingUp => RouteStatus::SettingUp,
                    router::RouteStatus::Up => RouteStatus::Up,
                    router::RouteStatus::Repairing => RouteStatus::Repairing,
                },
                counters: counters(route.counters),
                repairs: route.repairs,
                setup_ms: route.setup_time.map(|t| t.as_secs_f64() * 1e3),
                streams: route.streams,
            })
            .collect(),
        transit: listing
            .transit
            .iter()
            .map(|rule| TransitEntry {
                label: rule.label,
                prev: rule.prev.map(|id| id.to_string()),
                next: rule.next.map(|id| id.to_string()),
                counters: counters(rule.counters),
            })
            .collect(),
        stats: RoutingStats {
            adverts_sent: stats.adverts_sent,
            adverts_accepted: stats.adverts_accepted,
            adverts_refused: stats.adverts_refused,
            adverts_dropped: stats.adverts_dropped,
            data_dropped: stats.data_dropped,
            control_dropped: stats.control_dropped,
            routes_broken: stats.routes_broken,
            routes_repaired: stats.routes_repaired,
            routes_moved: stats.routes_moved,
            receipts_received: stats.receipts_received,
            receipts_stored: stats.receipts_stored,
            datagrams_dropped: stats.datagrams_dropped,
            session_packets_rejected: stats.session_packets_rejected,
        },
    })
    .into_response()
}

pub(crate) async fn close(State(state): State<Arc<ApiState>>, Path(id): Path<u64>) -> Response {
    match state.node.routing().close(id).await {
        Ok(true) => axum::Json(ClosedRoute { id }).into_response(),
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            format!("no route {id} opened by this node; `fogwire route list` shows them"),
        ),
        Err(failure) => route_error(failure),
    }
}

pub(crate) async fn ping(State(state): State<Arc<ApiState>>, body: Bytes) -> Response {
    let routing = state.node.routing();
    let (request, destination, constraints) = match parse_target(&state.names, routing, &body).await
    {
        Ok(parsed) => parsed,
        Err(refusal) => return refusal.into_response(),
    };
    let count = request.count.unwrap_or(4).clamp(1, PINGS_MAX);
    let interval = Duration::from_millis(request.interval_ms.unwrap_or(200).min(10_000));
    let route = match routing.open(destination, constraints).await {
        Ok(route) => route,
        Err(failure) => return route_error(failure),
    };
    let mut rtts_ms = Vec::with_capacity(count as usize);
    for index in 0..count {
        if index > 0 {
            tokio::time::sleep(interval).await;
        }
        match routing.ping(route.route, PING_TIMEOUT).await {
            Ok(rtt) => rtts_ms.push(Some(rtt.as_secs_f64() * 1e3)),
            Err(RouteError::Timeout(_)) => rtts_ms.push(None),
            Err(failure) => {
                let _ = routing.close(route.route).await;
                return route_error(failure);
            }
        }
    }
    let _ = routing.close(route.route).await;
    axum::Json(PingReport {
        path: ids(&route.path),
        setup_ms: route.setup_time.as_secs_f64() * 1e3,
        rtts_ms,
    })
    .into_response()
}

pub(crate) async fn send(State(state): State<Arc<ApiState>>, body: Bytes) -> Response {
    let routing = state.node.routing().clone();
    let (request, destination, constraints) =
        match parse_target(&state.names, &routing, &body).await {
            Ok(parsed) => parsed,
            Err(refusal) => return refusal.into_response(),
        };
    let bytes = request.bytes.unwrap_or(SEND_DEFAULT).min(SEND_MAX);
    let route = match routing.open(destination, constraints).await {
        Ok(route) => route,
        Err(failure) => return route_error(failure),
    };
    let (lines, response) = ndjson::streamed();
    let _ = lines.try_send(Ok(ndjson::line(&SendLine::Route(opened(&route)))));
    tokio::spawn(async move {
        // A client that hangs up stops the transfer.
        let outcome = tokio::select! {
            outcome = transfer(&routing, route.route, bytes, &lines) => Some(outcome),
            () = lines.closed() => None,
        };
        let _ = routing.close(route.route).await;
        let last = match outcome {
            Some(Ok(report)) => SendLine::Result(report),
            Some(Err(failure)) => SendLine::Error(failure.to_string()),
            None => return,
        };
        let _ = lines.send(Ok(ndjson::line(&last))).await;
    });
    response
}

async fn transfer(
    routing: &Routing,
    route: u64,
    bytes: u64,
    lines: &ndjson::Lines,
) -> Result<SendReport, RouteError> {
    let stream = routing.connect(route, SINK).await?;
    let mut reported = 0u64;
    let done = send_to_sink(stream, bytes, |sent| {
        // A line per 1 % or so; dropped if the reader is slow.
        if sent - reported >= (bytes / 100).max(1) || sent == bytes {
            reported = sent;
            let _ = lines.try_send(Ok(ndjson::line(&SendLine::Progress(sent))));
        }
    })
    .await?;
    let listing = routing.routes().await?;
    let info = listing.routes.iter().find(|r| r.id == route);
    Ok(SendReport {
        path: info.map(|r| ids(&r.path)).unwrap_or_default(),
        bytes: done.bytes,
        secs: done.elapsed.as_secs_f64(),
        mbit_per_sec: done.bytes_per_second() * 8.0 / 1e6,
        intact: done.intact(),
        sent_blake3: hex::encode(done.sent_hash),
        received_blake3: hex::encode(done.received_hash),
        received_bytes: done.received_bytes,
        repairs: info.map_or(0, |r| r.repairs),
    })
}
