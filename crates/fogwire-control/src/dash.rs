//! The live dashboard: `/dash/` (this board) and `/dash/box` (every board
//! of the cluster side by side), pages compiled into the binary, kept live
//! by one server-sent-events stream each (`/dash/events`).
//!
//! A sampler takes this board's figures once a second and keeps an hour of
//! the charted ones ([`fogwire_dash::History`]: at most 144 KB). Figures
//! that cost a scan or a call (the store's totals, the coins) are read
//! every [`SLOW_EVERY`] instead. Other boards' figures are asked for over
//! RPC (service [`RPC_SERVICE`], answered to members of this board's
//! cluster only) once a second, and only while a box page is open. A
//! stream's first event is the whole view; each later one carries only
//! what changed since that stream's last event.
//!
//! Bounds: [`STREAMS_MAX`] streams at once on each listener (more are
//! refused), [`BOARDS_MAX`] other boards, one [`fogwire_dash::Sample`] kept
//! per board; a stream whose reader stops reading is cut by the server's
//! write-stall guard like any other answer.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use fogwire_dash::host::HostProbe;
use fogwire_dash::{History, Rate, Sample, Series, assets};
use fogwire_identity::NodeId;
use fogwire_rpc::{BoxFuture, Replier, Service};
use fogwire_rpc_proto::{Value, code};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio_util::sync::CancellationToken;

use crate::NodeApi;
use crate::server::{ApiState, ClientAddr, error};

/// Dashboard streams open at once, on each listener.
pub const STREAMS_MAX: usize = 16;
/// Other boards whose figures the box page shows.
pub const BOARDS_MAX: usize = 64;
/// How often the figures that cost a store scan or a ledger call are read.
pub const SLOW_EVERY: Duration = Duration::from_secs(10);
/// A box page keeps other boards' figures coming this long after it last
/// read an event.
const BOX_WATCH: Duration = Duration::from_secs(5);
/// Time one board has to answer with its figures.
const BOARD_CALL_TIMEOUT: Duration = Duration::from_millis(900);
/// Time the ledger has to say what this node holds.
const LEDGER_CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// The RPC service boards of one cluster read each other's figures by.
pub const RPC_SERVICE: &str = "dash";
/// Figures older than this are shown as stale.
const STALE_AFTER: Duration = Duration::from_secs(5);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Figures read every [`SLOW_EVERY`].
#[derive(Debug, Clone, Default)]
struct Slow {
    store_bytes: u64,
    store_blobs: u64,
    balance: Option<u64>,
    earned: Option<fogwire_api::EarnedBySource>,
    earned_per_hour: Option<u64>,
}

/// Another board, as this one last heard of it.
#[derive(Debug, Clone, Default)]
struct Board {
    state: String,
    sample: Option<Sample>,
    received: Option<Instant>,
    error: Option<String>,
}

#[derive(Debug, Default)]
struct Figures {
    own: Option<Sample>,
    history: History,
    slow: Slow,
    boards: BTreeMap<String, Board>,
}

/// The dashboard's state, shared by the sampler, the streams and both
/// listeners.
#[derive(Debug)]
pub(crate) struct Dashboard {
    figures: Mutex<Figures>,
    /// Counts the samples taken: streams wake on each.
    ticks: watch::Sender<u64>,
    box_watched: Mutex<Option<Instant>>,
}

impl Dashboard {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            figures: Mutex::default(),
            ticks: watch::Sender::new(0),
            box_watched: Mutex::default(),
        })
    }

    /// This board's latest figures.
    fn own(&self) -> Option<Sample> {
        lock(&self.figures).own.clone()
    }

    fn box_is_watched(&self) -> bool {
        lock(&self.box_watched).is_some_and(|at| at.elapsed() < BOX_WATCH)
    }

    fn watch_box(&self) {
        *lock(&self.box_watched) = Some(Instant::now());
    }

    /// What a page of `view` shows now: this board first.
    fn views(&self, view: View, names: &crate::names::Names) -> Vec<BoardView> {
        let by_id: HashMap<String, String> = names
            .list()
            .into_iter()
            .map(|(name, id)| (id.to_string(), name))
            .collect();
        let name_of = |id: &str| by_id.get(id).cloned();
        let figures = lock(&self.figures);
        let mut views = Vec::new();
        if let Some(own) = &figures.own {
            views.push(BoardView {
                node_id: own.node_id.clone(),
                name: name_of(&own.node_id),
                state: "alive".into(),
                age_secs: 0,
                error: None,
                sample: Some(own.clone()),
            });
        }
        if view == View::Box {
            for (node_id, board) in &figures.boards {
                let age = board.received.map_or(Duration::MAX, |at| at.elapsed());
                views.push(BoardView {
                    node_id: node_id.clone(),
                    name: name_of(node_id),
                    state: board.state.clone(),
                    // Whole seconds once stale: a fresh board's age
                    // does not change what its row says.
                    age_secs: if age >= STALE_AFTER {
                        age.as_secs().min(u64::from(u32::MAX))
                    } else {
                        0
                    },
                    error: board.error.clone(),
                    sample: board.sample.clone(),
                });
            }
        }
        views
    }
}

/// Which page a stream serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum View {
    Board,
    Box,
}

/// A board as a page shows it.
#[derive(Debug, Clone, Serialize)]
struct BoardView {
    node_id: String,
    /// The name the operator gave it (`fogwire name`), if any.
    name: Option<String>,
    /// `alive`, `suspect` or `dead` (membership's word).
    state: String,
    /// Seconds since its figures came, once they are stale; else 0.
    age_secs: u64,
    /// Why its figures could not be read, if they could not.
    error: Option<String>,
    sample: Option<Sample>,
}

/// A stream's first event.
#[derive(Debug, Serialize)]
struct Snapshot {
    view: View,
    this: String,
    boards: Vec<BoardView>,
    /// The last hour of this board's charted figures (board view only).
    history: Option<Series>,
}

impl Serialize for View {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(match self {
            View::Board => "board",
            View::Box => "box",
        })
    }
}

/// What one stream last sent about each board.
#[derive(Debug, Default)]
struct Sent {
    name: Option<String>,
    state: String,
    age_secs: u64,
    error: Option<String>,
    sample: Option<Sample>,
}

/// An update: what changed on each board since the stream's last event,
/// and the boards gone.
fn update(views: Vec<BoardView>, sent: &mut HashMap<String, Sent>) -> Option<serde_json::Value> {
    let mut boards = serde_json::Map::new();
    let mut seen = Vec::with_capacity(views.len());
    for view in views {
        seen.push(view.node_id.clone());
        let last = sent.entry(view.node_id.clone()).or_default();
        let mut change = serde_json::Map::new();
        if last.name != view.name {
            change.insert("name".into(), serde_json::json!(view.name));
            last.name = view.name;
        }
        if last.state != view.state {
            change.insert("state".into(), view.state.clone().into());
            last.state = view.state;
        }
        if last.age_secs != view.age_secs {
            change.insert("age_secs".into(), view.age_secs.into());
            last.age_secs = view.age_secs;
        }
        if last.error != view.error {
            change.insert("error".into(), serde_json::json!(view.error));
            last.error = view.error;
        }
        if let Some(sample) = view.sample {
            let fields = fogwire_dash::changes(last.sample.as_ref(), &sample);
            if !fields.is_empty() {
                change.insert("sample".into(), fields.into());
            }
            last.sample = Some(sample);
        }
        if !change.is_empty() {
            boards.insert(view.node_id, change.into());
        }
    }
    let gone: Vec<String> = sent
        .keys()
        .filter(|id| !seen.contains(id))
        .cloned()
        .collect();
    for id in &gone {
        sent.remove(id);
    }
    (!boards.is_empty() || !gone.is_empty())
        .then(|| serde_json::json!({ "boards": boards, "gone": gone }))
}

// ---- the sampler ------------------------------------------------------------

/// Takes this board's figures every second until `shutdown`, reads the
/// slow ones every [`SLOW_EVERY`], and other boards' while a box page is
/// open; serves this board's figures to its cluster over RPC meanwhile.
pub(crate) fn start(
    node: Arc<dyn NodeApi>,
    dashboard: Arc<Dashboard>,
    shutdown: CancellationToken,
) {
    node.rpc().serve(
        RPC_SERVICE,
        Arc::new(DashService {
            node: Arc::downgrade(&node),
            dashboard: Arc::downgrade(&dashboard),
        }),
    );
    tokio::spawn(slow_figures(
        node.clone(),
        dashboard.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(other_boards(
        node.clone(),
        dashboard.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(async move {
        let mut probe = HostProbe::new();
        let (mut rx, mut tx) = (Rate::default(), Rate::default());
        let mut every_second = tokio::time::interval(Duration::from_secs(1));
        every_second.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = every_second.tick() => {}
                () = shutdown.cancelled() => break,
            }
            let sample = take_sample(node.as_ref(), &dashboard, &mut probe, &mut rx, &mut tx).await;
            {
                let mut figures = lock(&dashboard.figures);
                figures.history.push(&sample);
                figures.own = Some(sample);
            }
            dashboard.ticks.send_modify(|tick| *tick += 1);
        }
        node.rpc().unserve(RPC_SERVICE);
    });
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

async fn take_sample(
    node: &dyn NodeApi,
    dashboard: &Dashboard,
    probe: &mut HostProbe,
    rx: &mut Rate,
    tx: &mut Rate,
) -> Sample {
    let status = node.status();
    let now = unix_ms();
    // /proc and statvfs answer from memory: quick enough for this task.
    let host = probe.read(status.data_dir.as_deref().map(std::path::Path::new));
    let peers = node.peers();
    let bytes_in: u64 = peers.iter().map(|peer| peer.bytes_in).sum();
    let bytes_out: u64 = peers.iter().map(|peer| peer.bytes_out).sum();
    let (transit_routes, relayed_bytes) = match node.routing().routes().await {
        Ok(listing) => {
            let total = listing.transit_total();
            (
                listing.transit.len() as u64,
                total.bytes_forward + total.bytes_backward,
            )
        }
        Err(_) => (0, 0),
    };
    let slow = lock(&dashboard.figures).slow.clone();
    let services = node
        .cluster()
        .status()
        .services
        .into_iter()
        .filter(|service| service.state == "running")
        .map(|service| service.name)
        .collect();
    Sample {
        unix_ms: now,
        node_id: status.node_id,
        version: status.version,
        uptime_secs: status.uptime_secs,
        cpu_percent: host.cpu_percent,
        memory_used_bytes: host.memory_used_bytes,
        memory_total_bytes: host.memory_total_bytes,
        disk_used_bytes: host.disk_used_bytes,
        disk_total_bytes: host.disk_total_bytes,
        rx_bytes_per_sec: rx.update(bytes_in, now),
        tx_bytes_per_sec: tx.update(bytes_out, now),
        links: status.links as u64,
        transit_routes,
        relayed_bytes,
        store_bytes: slow.store_bytes,
        store_blobs: slow.store_blobs,
        tasks_run: node
            .compute_roles()
            .worker
            .map_or(0, |worker| worker.task_count() as u64),
        balance: slow.balance,
        earned_per_hour: slow.earned_per_hour,
        earned_forwarding_per_hour: slow.earned.map(|earned| earned.forwarding),
        earned_serving_per_hour: slow.earned.map(|earned| earned.serving),
        earned_computing_per_hour: slow.earned.map(|earned| earned.computing),
        services,
    }
}

/// The store's totals (a scan of its index, on a blocking thread) and the
/// coins (a call to the ledger), every [`SLOW_EVERY`].
async fn slow_figures(
    node: Arc<dyn NodeApi>,
    dashboard: Arc<Dashboard>,
    shutdown: CancellationToken,
) {
    let mut every = tokio::time::interval(SLOW_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let store = node.store().clone();
        let stat = tokio::task::spawn_blocking(move || store.stat()).await;
        let coins = match node.ledger() {
            Some(client) => {
                let id = fogwire_ledger::proto::Id(*node.node_id().as_bytes());
                tokio::time::timeout(LEDGER_CALL_TIMEOUT, client.account(&id))
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            None => None,
        };
        let mut figures = lock(&dashboard.figures);
        if let Ok(Ok(stat)) = stat {
            figures.slow.store_bytes = stat.bytes;
            figures.slow.store_blobs = stat.blobs;
        }
        // No answer keeps the last one: a page should not flicker to
        // nothing while the ledger is slow.
        if let Some(view) = coins {
            figures.slow.balance = Some(view.account.balance);
            figures.slow.earned_per_hour = Some(view.flow.earned_per_hour);
            let by = view.flow.per_hour_by_source;
            figures.slow.earned = Some(fogwire_api::EarnedBySource {
                forwarding: by.forwarding,
                serving: by.serving,
                computing: by.computing,
            });
        }
    }
}

/// Other boards' figures, once a second while a box page is open.
async fn other_boards(
    node: Arc<dyn NodeApi>,
    dashboard: Arc<Dashboard>,
    shutdown: CancellationToken,
) {
    let mut every_second = tokio::time::interval(Duration::from_secs(1));
    every_second.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = every_second.tick() => {}
            () = shutdown.cancelled() => return,
        }
        if !dashboard.box_is_watched() {
            continue;
        }
        let members: Vec<(String, String)> = node
            .cluster()
            .status()
            .members
            .into_iter()
            .filter(|member| !member.this_board)
            .take(BOARDS_MAX)
            .map(|member| (member.node_id, member.state))
            .collect();
        let asks = members.iter().map(|(node_id, state)| {
            let node = node.clone();
            async move {
                if state == "dead" {
                    return None;
                }
                Some(ask_board(node.as_ref(), node_id).await)
            }
        });
        let answers = futures_util::future::join_all(asks).await;
        let mut figures = lock(&dashboard.figures);
        figures
            .boards
            .retain(|id, _| members.iter().any(|(member, _)| member == id));
        for ((node_id, state), answer) in members.into_iter().zip(answers) {
            let board = figures.boards.entry(node_id).or_default();
            board.state = state;
            match answer {
                Some(Ok(sample)) => {
                    board.sample = Some(sample);
                    board.received = Some(Instant::now());
                    board.error = None;
                }
                Some(Err(why)) => board.error = Some(why),
                None => board.error = Some("failed (membership)".into()),
            }
        }
    }
}

/// One board's figures over RPC.
async fn ask_board(node: &dyn NodeApi, node_id: &str) -> Result<Sample, String> {
    let peer: NodeId = node_id.parse().map_err(|_| "no such node id".to_owned())?;
    let call = node
        .rpc()
        .request(peer, RPC_SERVICE, 0, Vec::new(), Some(BOARD_CALL_TIMEOUT));
    let chunks = match tokio::time::timeout(BOARD_CALL_TIMEOUT, call).await {
        Err(_) => return Err("no answer".into()),
        Ok(Err(fogwire_rpc::RpcError::NotLinked(_))) => return Err("no link to it".into()),
        Ok(Err(call_error)) => return Err(call_error.to_string()),
        Ok(Ok(chunks)) => chunks,
    };
    match chunks.first().and_then(|chunk| chunk.first()) {
        Some(Value::Binary(bytes)) => {
            fogwire_dash::decode_sample(bytes).map_err(|why| why.to_string())
        }
        _ => Err("its answer holds no figures".into()),
    }
}

/// `dash.sample()` → this board's latest figures (JSON, as bin), to
/// members of its cluster only.
struct DashService {
    node: Weak<dyn NodeApi>,
    dashboard: Weak<Dashboard>,
}

impl Service for DashService {
    fn methods(&self) -> &[&'static str] {
        &["sample"]
    }

    fn call(&self, _method: u64, _args: Vec<Value>, reply: Replier) -> BoxFuture<()> {
        let answer = (|| {
            let node = self.node.upgrade().ok_or("shutting down")?;
            let caller = reply.peer().to_string();
            let member = node
                .cluster()
                .status()
                .members
                .iter()
                .any(|member| member.node_id == caller);
            if !member {
                return Err("only boards of this board's cluster may read its figures");
            }
            let sample = self
                .dashboard
                .upgrade()
                .and_then(|dashboard| dashboard.own())
                .ok_or("no figures yet")?;
            serde_json::to_vec(&sample).map_err(|_| "cannot encode the figures")
        })();
        Box::pin(async move {
            let mut reply = reply;
            match answer {
                Ok(bytes) => {
                    reply.chunk(vec![Value::Binary(bytes)]).await;
                    reply.choke().await;
                }
                Err(why) => reply.error(code::BAD_ARGS, why).await,
            }
        })
    }
}

// ---- the pages --------------------------------------------------------------

fn asset(asset: assets::Asset) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(assets::CONTENT_SECURITY_POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        asset.body,
    )
        .into_response()
}

/// The dashboard's routes.
pub(crate) fn routes() -> axum::Router<Arc<ApiState>> {
    use axum::routing::get;
    axum::Router::new()
        .route("/", get(root))
        .route("/dash", get(root))
        .route("/dash/", get(board_page))
        .route("/dash/box", get(box_page))
        .route("/dash/dash.js", get(script))
        .route("/dash/dash.css", get(style))
        .route("/dash/events", get(events))
}

async fn root() -> Redirect {
    Redirect::to("/dash/")
}

async fn board_page() -> Response {
    asset(assets::BOARD)
}

async fn box_page() -> Response {
    asset(assets::BOX)
}

async fn script() -> Response {
    asset(assets::SCRIPT)
}

async fn style() -> Response {
    asset(assets::STYLE)
}

/// One stream's state.
struct Stream {
    dashboard: Arc<Dashboard>,
    ticks: watch::Receiver<u64>,
    view: View,
    sent: HashMap<String, Sent>,
    first: bool,
    shutdown: CancellationToken,
    names: Arc<crate::names::Names>,
    _permit: OwnedSemaphorePermit,
    _client_stream: Option<crate::web::ClientStream>,
}

async fn events(
    State(state): State<Arc<ApiState>>,
    client: Option<axum::Extension<ClientAddr>>,
    RawQuery(raw): RawQuery,
) -> Response {
    let view = match crate::jobs::query(&raw, "view").as_deref() {
        None | Some("board") => View::Board,
        Some("box") => View::Box,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("no view `{other}`: view=board or view=box"),
            );
        }
    };
    let dashboard = state.dashboard.clone();
    let client_stream = match (&state.client_streams, client) {
        (Some(streams), Some(axum::Extension(ClientAddr(addr)))) => {
            match streams.enter(addr.ip()) {
                Some(place) => Some(place),
                None => {
                    return error(
                        StatusCode::TOO_MANY_REQUESTS,
                        format!(
                            "this address has {} dashboards open already: close one",
                            crate::web::STREAMS_PER_CLIENT
                        ),
                    );
                }
            }
        }
        _ => None,
    };
    let Ok(permit) = state.dash_streams.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{STREAMS_MAX} dashboards are open already: close one and reload"),
        );
    };
    if view == View::Box {
        dashboard.watch_box();
    }
    let stream = Stream {
        ticks: dashboard.ticks.subscribe(),
        dashboard,
        view,
        sent: HashMap::new(),
        first: true,
        shutdown: state.shutdown.clone(),
        names: state.names.clone(),
        _permit: permit,
        _client_stream: client_stream,
    };
    let events = futures_util::stream::unfold(stream, |mut stream| async move {
        if stream.first {
            stream.first = false;
            let this = stream
                .dashboard
                .own()
                .map(|own| own.node_id)
                .unwrap_or_default();
            let boards = stream.dashboard.views(stream.view, &stream.names);
            // What the snapshot shows is what later updates start from.
            let _ = update(boards.clone(), &mut stream.sent);
            let history = (stream.view == View::Board)
                .then(|| lock(&stream.dashboard.figures).history.series());
            let snapshot = Snapshot {
                view: stream.view,
                this,
                boards,
                history,
            };
            let event = Event::default().event("snapshot").json_data(&snapshot);
            return Some((encoded(event), stream));
        }
        loop {
            tokio::select! {
                changed = stream.ticks.changed() => changed.ok()?,
                () = stream.shutdown.cancelled() => return None,
            }
            if stream.view == View::Box {
                stream.dashboard.watch_box();
            }
            let views = stream.dashboard.views(stream.view, &stream.names);
            if let Some(changes) = update(views, &mut stream.sent) {
                let event = Event::default().event("update").json_data(&changes);
                return Some((encoded(event), stream));
            }
        }
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// An event that could not be encoded becomes a comment, so the stream
/// goes on.
fn encoded(event: Result<Event, axum::Error>) -> Result<Event, Infallible> {
    Ok(event.unwrap_or_else(|_| Event::default().comment("encoding failed")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(node_id: &str, links: u64) -> BoardView {
        BoardView {
            node_id: node_id.into(),
            name: None,
            state: "alive".into(),
            age_secs: 0,
            error: None,
            sample: Some(Sample {
                node_id: node_id.into(),
                links,
                ..Sample::default()
            }),
        }
    }

    #[test]
    fn an_update_carries_only_what_changed_and_the_boards_gone() {
        let mut sent = HashMap::new();
        let first = update(vec![view("a", 1), view("b", 1)], &mut sent).unwrap();
        assert_eq!(first["boards"].as_object().unwrap().len(), 2);
        assert!(update(vec![view("a", 1), view("b", 1)], &mut sent).is_none());
        let next = update(vec![view("a", 2)], &mut sent).unwrap();
        assert_eq!(
            next["boards"]["a"],
            serde_json::json!({"sample": {"links": 2}})
        );
        assert_eq!(next["gone"], serde_json::json!(["b"]));
        let mut stale = view("a", 2);
        stale.age_secs = 7;
        stale.error = Some("no answer".into());
        let next = update(vec![stale], &mut sent).unwrap();
        assert_eq!(
            next["boards"]["a"],
            serde_json::json!({"age_secs": 7, "error": "no answer"})
        );
    }
}
