//! The control API's exit endpoints: the exits the network advertises,
//! this node's own exit and proxy, and proxies that live as long as a
//! request (`fogwire proxy`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use fogwire_api::{
    ExitEntry, ExitServing, ExitsReport, ProxyLine, ProxyRequest, ProxyRoute, ProxyStatus,
};
use fogwire_exit::{Proxy, ProxyConfig};

use crate::ndjson;
use crate::routes::resolve;
use crate::server::{ApiState, Refusal, error};

/// How often a request's proxy reports.
const PROXY_REPORT_EVERY: Duration = Duration::from_secs(1);

fn proxy_status(proxy: &Proxy) -> ProxyStatus {
    let config = proxy.config();
    let stats = proxy.stats();
    ProxyStatus {
        listen: proxy.local_addr(),
        exit: config.exit.map(|exit| exit.to_string()),
        min_hops: config.min_hops,
        connections: stats.connections,
        connected: stats.connected,
        failed: stats.failed,
        turned_away: stats.turned_away,
        bytes_up: stats.bytes_up,
        bytes_down: stats.bytes_down,
        udp_sent: stats.udp_sent,
        udp_received: stats.udp_received,
        udp_dropped: stats.udp_dropped,
        udp_oversized: stats.udp_oversized,
        routes: proxy
            .routes()
            .into_iter()
            .map(|(group, named_exit, exit, route)| ProxyRoute {
                group,
                named_exit,
                exit: exit.to_string(),
                route,
            })
            .collect(),
    }
}

pub(crate) async fn list(State(state): State<Arc<ApiState>>) -> Response {
    let exits = match fogwire_exit::exits(state.node.routing()).await {
        Ok(exits) => exits,
        Err(failure) => return Refusal::from(failure).into_response(),
    };
    let serving = state.node.exit().map(|exit| {
        let config = exit.config();
        let stats = exit.stats();
        ExitServing {
            policy: config.policy.summary(),
            price_per_gib: config.price_per_gib,
            client_kbps: config.client_kbps,
            streams: stats.streams,
            connected: stats.connected,
            refused: stats.refused,
            failed: stats.failed,
            busy: stats.busy,
            bytes_out: stats.bytes_out,
            bytes_in: stats.bytes_in,
            clients_now: stats.clients_now,
            udp_sent: stats.udp_sent,
            udp_received: stats.udp_received,
            udp_refused: stats.udp_refused,
            udp_dropped: stats.udp_dropped,
        }
    });
    axum::Json(ExitsReport {
        exits: exits
            .into_iter()
            .map(|exit| ExitEntry {
                node_id: exit.node.to_string(),
                price_per_gib: exit.price_per_gib,
                policy: exit.policy,
                latency_ms: exit.latency_us.map(|us| us as f64 / 1e3),
                hops: exit.hops,
                vpn: exit.vpn,
            })
            .collect(),
        serving,
        proxy: state.node.proxy().map(proxy_status),
        usage: state
            .node
            .outbound()
            .usage()
            .into_iter()
            .map(|usage| fogwire_api::ExitUsage {
                exit: usage.exit.to_string(),
                bytes: usage.bytes,
                price_per_gib: usage.price_per_gib,
                receipted: usage.receipted,
            })
            .collect(),
    })
    .into_response()
}

/// Starts a SOCKS proxy that serves while the caller reads the answer:
/// a status line at once, then every second; hanging up stops it.
pub(crate) async fn proxy(State(state): State<Arc<ApiState>>, body: Bytes) -> Response {
    let request: ProxyRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(parse_error) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"listen\": \"127.0.0.1:1080\", …}}: {parse_error}"),
            );
        }
    };
    if !request.listen.ip().is_loopback() {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "a proxy started from the CLI listens on this machine only: use 127.0.0.1:{} \
                 (set [socks] listen in fogwire.toml to serve others, knowingly)",
                request.listen.port()
            ),
        );
    }
    let routing = state.node.routing().clone();
    let exit = match &request.exit {
        Some(name) => match routing.nodes().await {
            Ok(nodes) => match resolve(&state.names, &nodes, name) {
                Ok(exit) => Some(exit),
                Err(refusal) => return refusal.into_response(),
            },
            Err(failure) => return Refusal::from(failure).into_response(),
        },
        None => None,
    };
    let config = ProxyConfig {
        exit,
        min_hops: request.min_hops.unwrap_or(1).max(1),
        ..ProxyConfig::new(request.listen)
    };
    let proxy = match Proxy::start(config, state.node.outbound().clone()).await {
        Ok(proxy) => proxy,
        Err(failure) => return error(StatusCode::CONFLICT, failure.to_string()),
    };
    let (lines, response) = ndjson::streamed();
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        loop {
            let line = ndjson::line(&ProxyLine::Status(proxy_status(&proxy)));
            if lines.send(Ok(line)).await.is_err() {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(PROXY_REPORT_EVERY) => {}
                () = lines.closed() => break,
                () = shutdown.cancelled() => {
                    let line = ProxyLine::Error("the node is shutting down".into());
                    let _ = lines.send(Ok(ndjson::line(&line))).await;
                    break;
                }
            }
        }
        tracing::info!(listen = %proxy.local_addr(), "socks: the proxy's caller left; stopped");
        drop(proxy);
    });
    response
}

fn vpn_report(state: &ApiState) -> fogwire_api::VpnStatus {
    let address = fogwire_exit_proto::address::address_of(state.node.node_id().as_bytes());
    let status = state.node.vpn().status();
    let stats = status.as_ref().map(|s| s.stats.clone()).unwrap_or_default();
    fogwire_api::VpnStatus {
        up: status.is_some(),
        device: status.as_ref().map(|s| s.device.clone()),
        address: address.to_string(),
        mtu: status.as_ref().map(|s| s.mtu),
        packets_out: stats.packets_out,
        bytes_out: stats.bytes_out,
        packets_in: stats.packets_in,
        bytes_in: stats.bytes_in,
        dropped_out: stats.dropped_out,
        dropped_in: stats.dropped_in,
        spoofed: stats.spoofed,
        routes: stats.routes,
        ipv4: status
            .as_ref()
            .and_then(|s| s.ipv4)
            .map(|ipv4| ipv4.to_string()),
        exit: status
            .as_ref()
            .and_then(|s| s.exit)
            .map(|(exit, _)| exit.to_string()),
        exit_leased: status
            .as_ref()
            .and_then(|s| s.exit)
            .is_some_and(|(_, leased)| leased),
        gateway: status
            .and_then(|s| s.gateway)
            .map(|gateway| fogwire_api::VpnGateway {
                clients: gateway.clients,
                forwarded: gateway.forwarded,
                answered: gateway.answered,
                refused: gateway.refused,
                dropped: gateway.dropped,
                spoofed: gateway.spoofed,
            }),
    }
}

pub(crate) async fn vpn_status(State(state): State<Arc<ApiState>>) -> Response {
    axum::Json(vpn_report(&state)).into_response()
}

pub(crate) async fn vpn_up(State(state): State<Arc<ApiState>>, body: Bytes) -> Response {
    let request: fogwire_api::VpnUpRequest = if body.is_empty() {
        fogwire_api::VpnUpRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(request) => request,
            Err(parse_error) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("expected {{\"exit\"?: \"<node>\"}}: {parse_error}"),
                );
            }
        }
    };
    let routing = state.node.routing();
    let mode = match &request.exit {
        None => fogwire_vpn::Mode::Direct,
        Some(name) => {
            let exit = match routing.nodes().await {
                Ok(nodes) => match resolve(&state.names, &nodes, name) {
                    Ok(exit) => exit,
                    Err(refusal) => return refusal.into_response(),
                },
                Err(failure) => return Refusal::from(failure).into_response(),
            };
            let exits = match fogwire_exit::exits(routing).await {
                Ok(exits) => exits,
                Err(failure) => return Refusal::from(failure).into_response(),
            };
            let Some(info) = exits.iter().find(|info| info.node == exit) else {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("{name} advertises no exit (fogwire exits lists those that do)"),
                );
            };
            if !info.vpn {
                return error(
                    StatusCode::CONFLICT,
                    format!(
                        "exit {name} does not forward VPN packets (its [exit] vpn is off); \
                         fogwire exits shows which do, or use fogwire proxy through it"
                    ),
                );
            }
            fogwire_vpn::Mode::Through(fogwire_vpn::Through {
                exit,
                price_per_gib: info.price_per_gib,
                outbound: state.node.outbound().clone(),
                constraints: fogwire_route::Constraints {
                    min_hops: request.min_hops.unwrap_or(1).max(1),
                    ..fogwire_route::Constraints::default()
                },
            })
        }
    };
    match state.node.vpn().up(routing, mode).await {
        Ok(_) => axum::Json(vpn_report(&state)).into_response(),
        Err(fogwire_vpn::VpnError::AlreadyUp) => error(
            StatusCode::CONFLICT,
            "the VPN is up already (fogwire vpn status)",
        ),
        Err(failure @ fogwire_vpn::VpnError::Exit { .. }) => {
            error(StatusCode::BAD_GATEWAY, failure.to_string())
        }
        Err(failure) => error(StatusCode::INTERNAL_SERVER_ERROR, failure.to_string()),
    }
}

pub(crate) async fn vpn_down(State(state): State<Arc<ApiState>>) -> Response {
    match state.node.vpn().down().await {
        Ok(()) => axum::Json(vpn_report(&state)).into_response(),
        Err(failure) => error(StatusCode::CONFLICT, failure.to_string()),
    }
}
