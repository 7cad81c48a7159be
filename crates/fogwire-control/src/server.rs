use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use fogwire_api::{ConnectRequest, DisconnectResponse, ErrorBody};
use fogwire_identity::NodeId;
use fogwire_link::PeerAddr;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::stall::{Watched, WriteWatch};
use crate::{ApiToken, ConnectError, NodeApi};

/// Largest request body the API reads.
const REQUEST_BODY_MAX: usize = 16 * 1024;
/// Requests served at once; more wait. The API is for one operator's CLI.
const CONCURRENT_REQUESTS_MAX: usize = 32;
/// Connections held at once. Each costs a file descriptor; past this bound
/// the oldest connection that never sent a request is closed to make room,
/// so idle sockets cannot lock the operator out.
pub const CONNECTIONS_MAX: usize = 256;
/// A connection must send a request's whole header within this.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection whose answer the client stops reading is closed after its
/// writes made no progress for this long.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long open requests may run on at shutdown before they are cut.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the control API could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    #[error("the control API must listen on a loopback address (127.0.0.1 or ::1), not {addr}")]
    NotLoopback { addr: SocketAddr },
    #[error("cannot listen for the control API on {addr}: {source}{hint}",
        hint = if source.kind() == std::io::ErrorKind::AddrInUse {
            " (another node may use this port: set [api] listen to another)"
        } else { "" })]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen for [web] on {addr}: {source}{hint}",
        hint = if source.kind() == std::io::ErrorKind::AddrInUse {
            " (another program uses this port: set [web] listen to another)"
        } else if source.kind() == std::io::ErrorKind::AddrNotAvailable {
            " (no interface of this machine has that address)"
        } else { "" })]
    WebListen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Binds the control API's listener, refusing anything but loopback.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ControlError> {
    if !addr.ip().is_loopback() {
        return Err(ControlError::NotLoopback { addr });
    }
    TcpListener::bind(addr)
        .await
        .map_err(|source| ControlError::Listen { addr, source })
}

pub(crate) struct ApiState {
    pub(crate) node: Arc<dyn NodeApi>,
    pub(crate) token: ApiToken,
    /// Cancelled when the node shuts down: long work a request started
    /// (an export) stops with it.
    pub(crate) shutdown: CancellationToken,
    /// Gateway windows being read at once, over all readers.
    pub(crate) gateway_reads: Arc<tokio::sync::Semaphore>,
    /// Blobs the gateway fetches from peers at once, over all requests.
    pub(crate) gateway_fetches: Arc<tokio::sync::Semaphore>,
    pub(crate) dashboard: Arc<crate::dash::Dashboard>,
    /// Dashboard streams open at once on this listener: each listener has
    /// its own, so others on `[web]` cannot take the operator's.
    pub(crate) dash_streams: Arc<tokio::sync::Semaphore>,
    /// The names the operator gave nodes.
    pub(crate) names: Arc<crate::names::Names>,
    /// On `[web]`: the streams each client address holds.
    pub(crate) client_streams: Option<Arc<crate::web::ClientStreams>>,
}

/// The address a request came from, as the connection's socket says.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(pub(crate) SocketAddr);

/// Serves the control API on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    node: Arc<dyn NodeApi>,
    token: ApiToken,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with_web(listener, None, node, token, shutdown).await
}

/// Serves the control API on `api`, and `[web]`'s read-only listener on
/// `web` if one is given, until `shutdown`; samples the dashboard's
/// figures meanwhile.
pub async fn serve_with_web(
    api: TcpListener,
    web: Option<(TcpListener, crate::config::WebSection)>,
    node: Arc<dyn NodeApi>,
    token: ApiToken,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let dashboard = crate::dash::Dashboard::new();
    crate::dash::start(node.clone(), dashboard.clone(), shutdown.clone());
    let gateway_reads = Arc::new(tokio::sync::Semaphore::new(
        crate::store::GATEWAY_READS_AT_ONCE,
    ));
    let gateway_fetches = Arc::new(tokio::sync::Semaphore::new(crate::site::FETCHES_AT_ONCE));
    let data_dir = node.status().data_dir.map(std::path::PathBuf::from);
    let names = Arc::new(crate::names::Names::load(data_dir.as_deref()));
    let state = |client_streams: Option<Arc<crate::web::ClientStreams>>| {
        Arc::new(ApiState {
            client_streams,
            names: names.clone(),
            node: node.clone(),
            token: token.clone(),
            shutdown: shutdown.clone(),
            gateway_reads: gateway_reads.clone(),
            gateway_fetches: gateway_fetches.clone(),
            dashboard: dashboard.clone(),
            dash_streams: Arc::new(tokio::sync::Semaphore::new(crate::dash::STREAMS_MAX)),
        })
    };
    let web = web.map(|(listener, section)| {
        let app = crate::web::router(state(Some(Arc::default())), &section);
        tokio::spawn(serve_connections(
            listener,
            app,
            "web listener",
            shutdown.clone(),
        ))
    });
    let state = state(None);
    let app = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/peers", get(peers).post(connect))
        .route("/v1/peers/{node_id}", axum::routing::delete(disconnect))
        .route("/v1/nodes", get(crate::routes::nodes))
        .route("/v1/names", get(crate::names::list).post(crate::names::set))
        .route(
            "/v1/names/{name}",
            axum::routing::delete(crate::names::remove),
        )
        .route("/v1/routes/find", post(crate::routes::find))
        .route(
            "/v1/routes",
            get(crate::routes::list).post(crate::routes::open),
        )
        .route(
            "/v1/routes/{id}",
            axum::routing::delete(crate::routes::close),
        )
        .route("/v1/routes/send", post(crate::routes::send))
        .route("/v1/ping", post(crate::routes::ping))
        .route("/v1/cluster", get(crate::cluster::status))
        .route("/v1/cluster/init", post(crate::cluster::init))
        .route("/v1/cluster/join", post(crate::cluster::join))
        .route(
            "/v1/cluster/apply",
            // A manifest may be 256 KiB, more once escaped in JSON.
            post(crate::cluster::apply).layer(DefaultBodyLimit::max(640 * 1024)),
        )
        .route("/v1/cluster/join-code", get(crate::cluster::join_code))
        .route("/v1/cluster/peer", post(crate::cluster::peer))
        .route("/v1/cluster/peer/accept", post(crate::cluster::accept))
        .route("/v1/cluster/peers", get(crate::cluster::peers))
        .route("/v1/exits", get(crate::exits::list))
        .route("/v1/proxy", post(crate::exits::proxy))
        .route("/v1/vpn", get(crate::exits::vpn_status))
        .route("/v1/vpn/up", post(crate::exits::vpn_up))
        .route("/v1/vpn/down", post(crate::exits::vpn_down))
        .route("/v1/store/add", post(crate::store::add))
        .route("/v1/store/get", post(crate::store::get))
        .route("/v1/store/blobs", get(crate::store::blobs))
        .route("/v1/store/stat", get(crate::store::stat))
        .route("/v1/store/peers", get(crate::store::peers))
        .route("/v1/store/providers/{hash}", get(crate::store::providers))
        .route("/v1/store/pin", post(crate::store::pin))
        .route("/v1/store/unpin", post(crate::store::unpin))
        .route("/v1/store/gc", post(crate::store::gc))
        .route("/v1/feeds", get(crate::feeds::list).post(crate::feeds::new))
        .route("/v1/feeds/publish", post(crate::feeds::publish))
        .route("/v1/feeds/follow", post(crate::feeds::follow))
        .route("/v1/feeds/{feed}", get(crate::feeds::show))
        .route("/v1/rpc/call", post(crate::rpc::call))
        .route("/v1/jobs", get(crate::jobs::list).post(crate::jobs::submit))
        .route("/v1/jobs/{job}", get(crate::jobs::status))
        .route("/v1/jobs/{job}/logs", get(crate::jobs::logs))
        .route("/v1/jobs/{job}/result", get(crate::jobs::result))
        .route("/v1/jobs/{job}/fetch", post(crate::jobs::fetch))
        .route("/v1/jobs/{job}/cancel", post(crate::jobs::cancel))
        .route("/v1/workers", get(crate::jobs::workers))
        .route("/v1/ledger", get(crate::ledger::info))
        .route("/v1/ledger/accounts/{who}", get(crate::ledger::account))
        .route(
            "/v1/ledger/accounts/{who}/history",
            get(crate::ledger::history),
        )
        .route("/v1/ledger/ops", post(crate::ledger::op))
        .route("/v1/ledger/submit", post(crate::ledger::submit))
        .route("/v1/hubs", get(crate::market::hubs))
        .route("/v1/market/asks", get(crate::market::asks))
        .route("/v1/market/bids", get(crate::market::bids))
        .route("/v1/market/deals", get(crate::market::deals))
        .route("/v1/market/events", get(crate::market::events))
        .route("/v1/market/ask", post(crate::market::ask))
        .route("/v1/market/bid", post(crate::market::bid))
        .route("/v1/market/cancel", post(crate::market::cancel))
        .route("/v1/msg/send", post(crate::msg::send))
        .route("/v1/msg/inbox", get(crate::msg::inbox))
        .route("/v1/msg/history/{peer}", get(crate::msg::history))
        .route("/v1/msg/contacts", get(crate::msg::contacts))
        .route("/v1/msg/follow", get(crate::msg::follow))
        .route(
            "/v1/msg/groups",
            get(crate::groups::list).post(crate::groups::create),
        )
        .route("/v1/msg/groups/{group}/add", post(crate::groups::add))
        .route("/v1/msg/groups/{group}/remove", post(crate::groups::remove))
        .route("/v1/msg/groups/{group}/leave", post(crate::groups::leave))
        .route("/v1/msg/groups/{group}/send", post(crate::groups::send))
        .route(
            "/v1/msg/groups/{group}/history",
            get(crate::groups::history),
        )
        .route("/metrics", get(crate::metrics::metrics))
        .merge(crate::site::routes())
        .merge(crate::dash::routes())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        // The one page a browser reaches without the token: it trades the
        // token in its link for a cookie.
        .route("/dash/login", get(crate::web::login))
        .layer(DefaultBodyLimit::max(REQUEST_BODY_MAX))
        .layer(tower::limit::ConcurrencyLimitLayer::new(
            CONCURRENT_REQUESTS_MAX,
        ))
        .with_state(state);
    serve_connections(api, app, "control API", shutdown).await;
    if let Some(web) = web {
        let _ = web.await;
    }
    Ok(())
}

/// A connection being served: whether it ever sent a request, and how to
/// close it.
struct Held {
    /// Where it comes from.
    address: IpAddr,
    started: Arc<AtomicBool>,
    close: CancellationToken,
    /// Whether its client is reading its answer.
    watch: WriteWatch,
}

/// A connection whose answer has waited this long for its client to read
/// may be closed to make room when every connection is in use.
const STALLED_EVICTABLE: Duration = Duration::from_secs(1);

/// Connections in the order they came (ids count up).
type HeldConnections = Arc<Mutex<BTreeMap<u64, Held>>>;

fn lock_held(held: &HeldConnections) -> std::sync::MutexGuard<'_, BTreeMap<u64, Held>> {
    held.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether a new connection may be served.
enum Room {
    Free,
    /// The oldest connection that never sent a request was closed for it.
    Evicted,
    /// Every held connection is in use.
    Full,
}

/// Makes room for one more connection, from `newcomer`, if the API holds
/// [`CONNECTIONS_MAX`] already: closes, from the address holding the most
/// connections (never one holding fewer than the newcomer's, unless it is
/// the newcomer's), the oldest that never sent a request, or else the one
/// whose client has left its answer unread the longest (at least
/// [`STALLED_EVICTABLE`]).
fn make_room(held: &HeldConnections, newcomer: IpAddr) -> Room {
    let mut held = lock_held(held);
    if held.len() < CONNECTIONS_MAX {
        return Room::Free;
    }
    // Connections per address: the address holding the most gives way
    // first, and never to a newcomer from an address that would hold more.
    let mut per_address: HashMap<IpAddr, usize> = HashMap::new();
    for connection in held.values() {
        *per_address.entry(connection.address).or_default() += 1;
    }
    let newcomer_holds = per_address.get(&newcomer).copied().unwrap_or(0);
    let weight = |connection: &Held| per_address.get(&connection.address).copied().unwrap_or(0);
    let may_go =
        |connection: &Held| connection.address == newcomer || weight(connection) > newcomer_holds;
    let idle = held
        .iter()
        .filter(|(_, connection)| !connection.started.load(Ordering::Relaxed) && may_go(connection))
        .max_by_key(|(id, connection)| (weight(connection), std::cmp::Reverse(**id)))
        .map(|(id, _)| *id);
    let stalled = || {
        held.iter()
            .filter(|(_, connection)| may_go(connection))
            .filter_map(|(id, connection)| {
                let stalled = connection.watch.stalled_for()?;
                (stalled >= STALLED_EVICTABLE).then_some(((weight(connection), stalled), *id))
            })
            .max()
            .map(|(_, id)| id)
    };
    let victim = idle.or_else(stalled);
    match victim.and_then(|id| held.remove(&id)) {
        Some(evicted) => {
            evicted.close.cancel();
            Room::Evicted
        }
        None => Room::Full,
    }
}

/// Accepts connections until `shutdown` and serves each with `app`
/// (HTTP/1.1), within [`CONNECTIONS_MAX`] and [`HEADER_READ_TIMEOUT`]; at
/// shutdown, open requests get [`SHUTDOWN_GRACE`] to finish.
pub(crate) async fn serve_connections(
    listener: TcpListener,
    app: Router,
    name: &'static str,
    shutdown: CancellationToken,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let held: HeldConnections = Arc::default();
    // Closings are logged like the link listener's refusals: the first of
    // a window one by one, the rest summarised.
    let refusals = fogwire_link::refusals::RefusalLog::default();
    let mut next_id = 0u64;
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(accept_error) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(%accept_error, "{name} cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        match make_room(&held, remote.ip()) {
            Room::Free => {}
            Room::Evicted => refusals.refused(
                remote,
                "api_evicted",
                format_args!(
                    "{name} at its {CONNECTIONS_MAX} connections: closed one that never \
                     sent a request, or whose client stopped reading"
                ),
            ),
            Room::Full => {
                refusals.refused(
                    remote,
                    "api_full",
                    format_args!(
                        "{name} at its {CONNECTIONS_MAX} connections, all in use: refused one"
                    ),
                );
                drop(stream);
                continue;
            }
        }
        next_id += 1;
        let id = next_id;
        let started = Arc::new(AtomicBool::new(false));
        let close = CancellationToken::new();
        let watch = WriteWatch::new();
        lock_held(&held).insert(
            id,
            Held {
                address: remote.ip(),
                started: started.clone(),
                close: close.clone(),
                watch: watch.clone(),
            },
        );
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: Request<_>| {
            started.store(true, Ordering::Relaxed);
            request.extensions_mut().insert(ClientAddr(remote));
            tower::Service::call(&mut app.clone(), request)
        });
        let stream = Watched::new(stream, watch.clone());
        let connection =
            graceful.watch(builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service));
        let held = held.clone();
        let refusals = refusals.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = connection => {}
                () = close.cancelled() => {}
                () = watch.stalled(WRITE_STALL_TIMEOUT) => refusals.refused(
                    remote,
                    "api_write_stalled",
                    format_args!(
                        "{name}: a client read none of its answer for {} s: closed its \
                         connection",
                        WRITE_STALL_TIMEOUT.as_secs()
                    ),
                ),
            }
            lock_held(&held).remove(&id);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "{name}: requests still open {} s after shutdown began were cut",
            SHUTDOWN_GRACE.as_secs()
        );
    }
}

/// The token of an `Authorization` header's value: the scheme `Bearer` in
/// any case (RFC 9110 §11.1), then the token.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(char::is_whitespace)?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// A request that cannot be served: its status and why.
#[derive(Debug)]
pub(crate) struct Refusal(pub StatusCode, pub String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(ErrorBody {
            error: message.into(),
        }),
    )
        .into_response()
}

async fn authenticate(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_token);
    // A browser's cookie (set by /dash/login) reads, never writes: a page
    // of another site cannot make the browser change anything here, and
    // the cookie is SameSite=Strict besides.
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    let cookie = reads
        .then(|| crate::web::cookie_token(request.headers()))
        .flatten();
    match presented.or(cookie.as_deref()) {
        Some(token) if state.token.matches(token) => next.run(request).await,
        _ if reads && crate::web::wants_html(request.headers()) => crate::web::sign_in_page(),
        _ => {
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong API token: send `Authorization: Bearer <token>` with the token \
                 from the node's data directory (file api.token)",
            );
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

async fn status(State(state): State<Arc<ApiState>>) -> Response {
    axum::Json(state.node.status()).into_response()
}

async fn peers(State(state): State<Arc<ApiState>>) -> Response {
    axum::Json(state.node.peers()).into_response()
}

async fn connect(State(state): State<Arc<ApiState>>, body: Bytes) -> Response {
    let request: ConnectRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(parse_error) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"peer\": \"<node id>@<host>:<port>\"}}: {parse_error}"),
            );
        }
    };
    let (peer, linked) = if request.peer.contains('@') {
        let addr: PeerAddr = match request.peer.parse() {
            Ok(addr) => addr,
            Err(parse_error) => return error(StatusCode::BAD_REQUEST, parse_error.to_string()),
        };
        (addr.node_id, state.node.connect(addr).await)
    } else {
        // A node id or a name alone: a direct link to a node reached
        // over routes.
        let named = state.names.get(&request.peer);
        let peer: NodeId = match named.map_or_else(|| request.peer.trim().parse(), Ok) {
            Ok(peer) => peer,
            Err(parse_error) => {
                let hint = "expected <node id>@<host>:<port>, or a node id or name alone for a direct link through NATs";
                return error(StatusCode::BAD_REQUEST, format!("{parse_error}: {hint}"));
            }
        };
        if peer == state.node.node_id() {
            return error(StatusCode::BAD_REQUEST, "that is this node's own id");
        }
        (peer, state.node.direct(peer).await)
    };
    match linked {
        Ok(_) => match state
            .node
            .peers()
            .into_iter()
            .find(|p| p.node_id == peer.to_string())
        {
            Some(info) => axum::Json(info).into_response(),
            None => error(
                StatusCode::BAD_GATEWAY,
                "the link closed right after it opened",
            ),
        },
        Err(ConnectError::SelfConnect) => {
            error(StatusCode::BAD_REQUEST, "that is this node's own id")
        }
        Err(connect_error) => error(StatusCode::BAD_GATEWAY, connect_error.to_string()),
    }
}

async fn disconnect(State(state): State<Arc<ApiState>>, Path(node_id): Path<String>) -> Response {
    // A name, the full id, or the start of a linked or wanted peer's.
    let named = state.names.get(&node_id);
    let peer: NodeId = match named.map_or_else(|| node_id.trim().parse(), Ok) {
        Ok(peer) => peer,
        Err(_) => {
            let peers = state.node.peers();
            let known = peers
                .iter()
                .filter_map(|peer| Some((peer.node_id.clone(), peer.node_id.parse().ok()?)));
            match crate::prefix::unique(&node_id, known, "peer", "fogwire peers") {
                Ok(peer) => peer,
                Err(refusal) => return refusal.into_response(),
            }
        }
    };
    match state.node.disconnect(peer).await {
        Some(was_linked) => axum::Json(DisconnectResponse {
            node_id: peer.to_string(),
            was_linked,
        })
        .into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("{peer} is neither linked nor wanted"),
        ),
    }
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint; see docs/control-api.md",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn held(started: bool, watch: WriteWatch) -> Held {
        Held {
            address: LOCAL,
            started: Arc::new(AtomicBool::new(started)),
            close: CancellationToken::new(),
            watch,
        }
    }

    #[test]
    fn a_full_api_closes_an_unused_connection_then_the_longest_stalled_reader() {
        let connections: HeldConnections = Arc::default();
        {
            let mut map = lock_held(&connections);
            for id in 0..CONNECTIONS_MAX as u64 {
                map.insert(id, held(true, WriteWatch::new()));
            }
        }
        // Every connection busy and reading: no room.
        assert!(matches!(make_room(&connections, LOCAL), Room::Full));
        // One whose client left its answer unread for 5 s, one for 2 s, and
        // one only just now: the longest stalled goes.
        let (long, short, fresh) = (
            held(true, WriteWatch::stalled_since(Duration::from_secs(5))),
            held(true, WriteWatch::stalled_since(Duration::from_secs(2))),
            held(true, WriteWatch::stalled_since(Duration::ZERO)),
        );
        let (long_close, short_close) = (long.close.clone(), short.close.clone());
        {
            let mut map = lock_held(&connections);
            map.insert(10, long);
            map.insert(11, short);
            map.insert(12, fresh);
        }
        assert!(matches!(make_room(&connections, LOCAL), Room::Evicted));
        assert!(long_close.is_cancelled() && !short_close.is_cancelled());
        // Full again; a connection that never sent a request goes before
        // any stalled reader.
        let unused = held(false, WriteWatch::new());
        let unused_close = unused.close.clone();
        lock_held(&connections).insert(1000, unused);
        assert!(matches!(make_room(&connections, LOCAL), Room::Evicted));
        assert!(unused_close.is_cancelled() && !short_close.is_cancelled());
    }

    #[test]
    fn connections_from_one_address_cannot_push_out_another_holding_fewer() {
        let connections: HeldConnections = Arc::default();
        let attacker = IpAddr::V4(std::net::Ipv4Addr::new(127, 4, 0, 2));
        let operator = held(false, WriteWatch::new());
        let operator_close = operator.close.clone();
        {
            let mut map = lock_held(&connections);
            map.insert(0, operator);
            for id in 1..CONNECTIONS_MAX as u64 {
                map.insert(
                    id,
                    Held {
                        address: attacker,
                        ..held(false, WriteWatch::new())
                    },
                );
            }
        }
        // The attacker's next connection takes one of its own, never the
        // operator's (though that one is the oldest unused).
        assert!(matches!(make_room(&connections, attacker), Room::Evicted));
        assert!(!operator_close.is_cancelled());
        assert!(lock_held(&connections).contains_key(&0));
        lock_held(&connections).insert(
            1000,
            Held {
                address: attacker,
                ..held(false, WriteWatch::new())
            },
        );
        // The operator's next connection takes one of the attacker's.
        assert!(matches!(make_room(&connections, LOCAL), Room::Evicted));
        assert!(!operator_close.is_cancelled());
        assert_eq!(lock_held(&connections).len(), CONNECTIONS_MAX - 1);
    }
}
