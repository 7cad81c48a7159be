//! The control API's store endpoints, and the read-only gateway
//! `GET /blobs/<hash>` with HTTP Range support.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use fogwire_store::{Entry, Hash, Location, RestoreLimits, Store, StoreError};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::NodeApi;
use crate::ndjson;
use crate::server::{ApiState, Refusal, error};
use fogwire_replicate::FetchProgress;

use fogwire_api::{
    BlobInfo, DirectoryInfo, FetchInfo, GcRequest, GcResult, PeerBytes, PinRequest,
    ProvidersReport, SilentKeeper, StoreAddRequest, StoreGetRequest, StoreLine, StorePeer,
    StoreRouteInfo, StoreStat, TagChange, UnpinRequest,
};

/// Chunks of a blob queued to a slow HTTP reader.
const GATEWAY_QUEUE: usize = 8;
/// Bytes of a blob the gateway reads (and verifies) at a time, for one
/// reader: what it holds for that reader beyond the queue.
const GATEWAY_WINDOW: u64 = 256 * 1024;
/// Gateway windows read at once, over all readers: the blocking threads
/// the gateway may hold.
pub(crate) const GATEWAY_READS_AT_ONCE: usize = 16;
/// A gateway reader, or a client of a streamed answer, that takes nothing
/// for this long is cut off.
const GATEWAY_STALL: std::time::Duration = std::time::Duration::from_secs(30);

fn status_of(store_error: &StoreError) -> StatusCode {
    match store_error {
        StoreError::NotFound(_) | StoreError::NoTag(_) => StatusCode::NOT_FOUND,
        StoreError::BadTag { .. } | StoreError::BadRange { .. } => StatusCode::BAD_REQUEST,
        StoreError::Corrupt { .. } | StoreError::ExternalChanged { .. } => StatusCode::CONFLICT,
        StoreError::Feed(_) => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<StoreError> for Refusal {
    fn from(store_error: StoreError) -> Self {
        Refusal(status_of(&store_error), store_error.to_string())
    }
}

fn parse<T: DeserializeOwned>(body: &Bytes, shape: &str) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|parse_error| {
        Refusal(
            StatusCode::BAD_REQUEST,
            format!("expected {shape}: {parse_error}"),
        )
    })
}

/// A blob named by its hash, or by a prefix of it (its short form, say)
/// that only one blob here has.
async fn resolve_hash(store: &Arc<Store>, text: &str) -> Result<Hash, Refusal> {
    if let Ok(hash) = text.trim().parse::<Hash>() {
        return Ok(hash);
    }
    let prefix = fogwire_identity::prefix_of(text).to_ascii_lowercase();
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            format!(
                "`{}` is neither a hash (64 hex digits, what `b3sum` prints) nor the start of one",
                text.trim()
            ),
        ));
    }
    let text = text.to_owned();
    blocking(store, move |store| {
        let entries = store.entries()?;
        Ok(crate::prefix::unique(
            &text,
            entries
                .into_iter()
                .map(|(hash, _)| (hash.to_string(), hash)),
            "blob",
            "fogwire store ls",
        ))
    })
    .await?
}

fn absolute(path: &str) -> Result<PathBuf, Refusal> {
    let path = PathBuf::from(path);
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(Refusal(
            StatusCode::BAD_REQUEST,
            format!(
                "`{}` is not an absolute path: the node may run in another directory",
                path.display()
            ),
        ))
    }
}

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    work: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Refusal> {
    let store = store.clone();
    Ok(tokio::task::spawn_blocking(move || work(&store))
        .await
        .map_err(|join| Refusal(StatusCode::INTERNAL_SERVER_ERROR, join.to_string()))??)
}

fn location(location: Location) -> &'static str {
    match location {
        Location::Inline => "inline",
        Location::File => "file",
        Location::External => "reference",
    }
}

fn info(hash: Hash, entry: &Entry, tags: &HashMap<Hash, Vec<String>>) -> BlobInfo {
    BlobInfo {
        hash: hash.to_string(),
        size: entry.size,
        location: location(entry.location).to_owned(),
        tags: tags.get(&hash).cloned().unwrap_or_default(),
        last_used_unix_ms: entry.last_used_ms,
    }
}

fn tags_by_hash(store: &Store) -> Result<HashMap<Hash, Vec<String>>, StoreError> {
    let mut by_hash: HashMap<Hash, Vec<String>> = HashMap::new();
    for (name, hash) in store.tags()? {
        by_hash.entry(hash).or_default().push(name);
    }
    Ok(by_hash)
}

fn directory_info(report: &fogwire_store::DirReport) -> StoreLine {
    StoreLine::Directory(DirectoryInfo {
        root: report.root.map(|r| r.to_string()).unwrap_or_default(),
        files: report.files,
        directories: report.directories,
        bytes: report.bytes,
        skipped: report
            .skipped
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
    })
}

/// Bytes of the regular files below `path`, for a progress total.
fn tree_bytes(path: &std::path::Path) -> u64 {
    walkdir::WalkDir::new(path)
        .into_iter()
        .flatten()
        .filter(|entry| entry.file_type().is_file())
        .filter_map(|entry| entry.metadata().ok())
        .map(|metadata| metadata.len())
        .sum()
}

/// Runs a long store operation in a blocking thread, streaming progress
/// lines and then its result.
fn with_progress(
    store: &Arc<Store>,
    work: impl FnOnce(&Store, &mut dyn FnMut(u64, u64)) -> Result<StoreLine, StoreError>
    + Send
    + 'static,
) -> Response {
    let (lines, response) = ndjson::streamed();
    progress_into(lines, store, work);
    response
}

/// Runs `work` in a blocking thread, sending its progress and result as
/// lines.
fn progress_into(
    lines: ndjson::Lines,
    store: &Arc<Store>,
    work: impl FnOnce(&Store, &mut dyn FnMut(u64, u64)) -> Result<StoreLine, StoreError>
    + Send
    + 'static,
) {
    progress_into_stoppable(lines, store, None, move |store, report, _| {
        work(store, report)
    });
}

/// [`progress_into`] for work that can stop: it is handed a check that
/// says to stop once the client has gone (the answer's reader dropped) or
/// `shutdown` is cancelled.
fn progress_into_stoppable(
    lines: ndjson::Lines,
    store: &Arc<Store>,
    shutdown: Option<CancellationToken>,
    work: impl FnOnce(
        &Store,
        &mut dyn FnMut(u64, u64),
        &dyn Fn() -> bool,
    ) -> Result<StoreLine, StoreError>
    + Send
    + 'static,
) {
    let store = store.clone();
    let answer = lines.clone();
    let working = tokio::task::spawn_blocking(move || {
        let stop = {
            let lines = lines.clone();
            move || lines.is_closed() || shutdown.as_ref().is_some_and(|s| s.is_cancelled())
        };
        let mut last_sent = 0u64;
        let mut report = |done: u64, total: u64| {
            // A line per 1 % or so; dropped if the reader is slow.
            if done == total || done - last_sent >= (total / 100).max(1 << 20) {
                last_sent = done;
                let _ = lines.try_send(Ok(ndjson::line(&StoreLine::Progress { done, total })));
            }
        };
        let last = match work(&store, &mut report, &stop) {
            Ok(line) => line,
            Err(failure @ StoreError::Stopped(_)) => {
                tracing::info!(
                    client_left = lines.is_closed(),
                    "an export stopped before it was done: its client left, or the node is shutting down (files it finished stay; the one being written was removed)"
                );
                StoreLine::Error(failure.to_string())
            }
            Err(failure) => StoreLine::Error(failure.to_string()),
        };
        ndjson::line(&last)
    });
    // The last line waits for a slow client in a task, not on a blocking
    // thread, and not for ever.
    tokio::spawn(async move {
        if let Ok(last) = working.await {
            let sent = tokio::time::timeout(GATEWAY_STALL, answer.send(Ok(last))).await;
            if sent.is_err() {
                tracing::debug!("a client took no answer for {} s", GATEWAY_STALL.as_secs());
            }
        }
    });
}

pub(crate) async fn add(State(state): State<Arc<ApiState>>, body: Bytes) -> Response {
    let request: StoreAddRequest = match parse(
        &body,
        "{\"path\": \"/absolute/path\", \"tag\"?, \"reference\"?}",
    ) {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(),
    };
    let path = match absolute(&request.path) {
        Ok(path) => path,
        Err(refusal) => return refusal.into_response(),
    };
    let (total, directory) = match std::fs::metadata(&path) {
        Ok(metadata) if metadata.is_file() => (metadata.len(), false),
        Ok(metadata) if metadata.is_dir() => (0, true),
        Ok(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("{} is neither a file nor a directory", path.display()),
            );
        }
        Err(io_error) => {
            return error(
                StatusCode::NOT_FOUND,
                format!("{}: {io_error}", path.display()),
            );
        }
    };
    with_progress(state.node.store(), move |store, report| {
        let tag = request.tag.as_deref();
        if directory {
            let total = tree_bytes(&path);
            let done = store.import_dir(&path, tag, request.reference, &mut |done| {
                report(done, total)
            })?;
            return Ok(directory_info(&done));
        }
        let mut progress = |done| report(done, total);
        let hash = if request.reference {
            store.import_reference(&path, tag, &mut progress)?
        } else {
            store.import_file(&path, tag, &mut progress)?
        };
        let entry = store.entry(&hash)?.ok_or(StoreError::NotFound(hash))?;
        Ok(StoreLine::Done(info(hash, &entry, &tags_by_hash(store)?)))
    })
}

pub(crate) async fn get(State(state): State<Arc<ApiState>>, body: Bytes) -> Response {
    let request: StoreGetRequest = match parse(
        &body,
        "{\"hash\": \"<64 hex digits>\", \"path\": \"/absolute/path\"}",
    ) {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(),
    };
    let path = match absolute(&request.path) {
        Ok(path) => path,
        Err(refusal) => return refusal.into_response(),
    };
    let data_dir = state.node.status().data_dir.map(PathBuf::from);
    if let Err(refusal) = writable(&path, data_dir.as_deref(), request.force) {
        return refusal.into_response();
    }
    let hash = match resolve_hash(state.node.store(), &request.hash).await {
        Ok(hash) => hash,
        Err(refusal) => return refusal.into_response(),
    };
    // A far node to fetch from over a route, named by (the start of) its id.
    let from = match &request.from {
        None => None,
        Some(name) => {
            let nodes = match state.node.routing().nodes().await {
                Ok(nodes) => nodes,
                Err(failure) => return error(StatusCode::SERVICE_UNAVAILABLE, failure.to_string()),
            };
            match crate::routes::resolve(&state.names, &nodes, name) {
                Ok(id) => Some(id),
                Err(refusal) => return refusal.into_response(),
            }
        }
    };
    let (lines, response) = ndjson::streamed();
    let node = state.node.clone();
    let shutdown = state.shutdown.clone();
    let limits = restore_limits(&request);
    tokio::spawn(async move {
        let store_route = match from {
            None => None,
            Some(id) => match node.replication().open_route(id).await {
                Ok(Some(route)) => {
                    let info = StoreRouteInfo {
                        node: id.to_string(),
                        path: route.route.path.iter().map(ToString::to_string).collect(),
                        setup_ms: route.route.setup_time.as_secs_f64() * 1e3,
                    };
                    let _ = lines.send(Ok(ndjson::line(&StoreLine::Route(info)))).await;
                    Some(route)
                }
                // A neighbour: its link serves.
                Ok(None) => None,
                Err(route_error) => {
                    let _ = lines
                        .send(Ok(ndjson::line(&StoreLine::Error(route_error.to_string()))))
                        .await;
                    return;
                }
            },
        };
        // The fetch stops with its client, and with the node.
        let fetched = tokio::select! {
            fetched = fetch_for_get(node.as_ref(), hash, &limits, &lines) => fetched,
            () = lines.closed() => false,
            () = shutdown.cancelled() => false,
        };
        if let Some(route) = store_route {
            route.close().await;
        }
        if !fetched {
            return;
        }
        progress_into_stoppable(
            lines,
            node.store(),
            Some(shutdown),
            move |store, report, stop| {
                let entry = store.entry(&hash)?.ok_or(StoreError::NotFound(hash))?;
                if store.object(&hash)?.is_some() {
                    // Counted (and bounded) before anything is written.
                    let done = store.export_dir_bounded(&hash, &path, &limits, stop, report)?;
                    return Ok(directory_info(&done));
                }
                store.export_stoppable(&hash, &path, stop, &mut |done| report(done, entry.size))?;
                Ok(StoreLine::Done(info(hash, &entry, &tags_by_hash(store)?)))
            },
        );
    });
    response
}

/// What a `store get` of a directory may write.
fn restore_limits(request: &StoreGetRequest) -> RestoreLimits {
    let defaults = RestoreLimits::default();
    RestoreLimits {
        entries_max: request.max_files.unwrap_or(defaults.entries_max),
        bytes_max: request.max_bytes.unwrap_or(defaults.bytes_max),
    }
}

/// Fetches from peers what the node lacks of `hash` (or of the tree
/// below it), with progress lines; false (after an error line) if that
/// failed. What is here is only checked.
async fn fetch_for_get(
    node: &dyn NodeApi,
    hash: Hash,
    limits: &RestoreLimits,
    lines: &ndjson::Lines,
) -> bool {
    {
        let progress_lines = lines.clone();
        let last_sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let progress: fogwire_replicate::ProgressFn = Arc::new(move |p: FetchProgress| {
            let sent = last_sent.load(std::sync::atomic::Ordering::Relaxed);
            if p.done_bytes == p.total_bytes
                || p.done_bytes.saturating_sub(sent) >= (p.total_bytes / 100).max(1 << 20)
            {
                last_sent.store(p.done_bytes, std::sync::atomic::Ordering::Relaxed);
                let _ = progress_lines.try_send(Ok(ndjson::line(&StoreLine::Fetching {
                    done: p.done_bytes,
                    total: p.total_bytes,
                })));
            }
        });
        match node
            .replication()
            .fetch_bounded(hash, None, Some(progress), limits)
            .await
        {
            Ok(report) if report.fetched_blobs > 0 => {
                let info = FetchInfo {
                    hash: hash.to_string(),
                    blobs: report.blobs,
                    bytes: report.bytes,
                    fetched_blobs: report.fetched_blobs,
                    fetched_bytes: report.fetched_bytes,
                    from: report
                        .from
                        .iter()
                        .map(|(peer, bytes)| PeerBytes {
                            peer: peer.to_string(),
                            bytes: *bytes,
                        })
                        .collect(),
                };
                let _ = lines
                    .send(Ok(ndjson::line(&StoreLine::Fetched(info))))
                    .await;
            }
            Ok(_) => {}
            Err(fetch_error) => {
                let _ = lines
                    .send(Ok(ndjson::line(&StoreLine::Error(fetch_error.to_string()))))
                    .await;
                return false;
            }
        }
    }
    true
}

/// `GET /v1/store/providers/{hash}`: asks the keepers of the blob's
/// provider records who holds it.
pub(crate) async fn providers(
    State(state): State<Arc<ApiState>>,
    Path(text): Path<String>,
) -> Response {
    let hash = match text.trim().parse::<Hash>() {
        Ok(hash) => hash,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("`{text}` is not a hash (64 hex digits, what `b3sum` prints): {e}"),
            );
        }
    };
    let lookup = state.node.replication().find_providers(hash).await;
    axum::Json(ProvidersReport {
        hash: hash.to_string(),
        keepers: lookup.keepers.iter().map(ToString::to_string).collect(),
        silent: lookup
            .silent
            .iter()
            .map(|(node, why)| SilentKeeper {
                node: node.to_string(),
                why: why.clone(),
            })
            .collect(),
        holders: lookup.holders.iter().map(ToString::to_string).collect(),
    })
    .into_response()
}

/// `GET /v1/store/peers`: bytes served to and fetched from each peer.
pub(crate) async fn peers(State(state): State<Arc<ApiState>>) -> Response {
    let list: Vec<StorePeer> = state
        .node
        .replication()
        .peers()
        .into_iter()
        .map(|stats| StorePeer {
            peer: stats.peer.to_string(),
            linked: stats.linked,
            served_bytes: stats.served_bytes,
            served_requests: stats.served_requests,
            fetched_bytes: stats.fetched_bytes,
            corrupt: stats.corrupt,
        })
        .collect();
    axum::Json(list).into_response()
}

pub(crate) async fn blobs(State(state): State<Arc<ApiState>>) -> Response {
    match blocking(state.node.store(), |store| {
        let tags = tags_by_hash(store)?;
        let mut list: Vec<BlobInfo> = store
            .entries()?
            .iter()
            .map(|(hash, entry)| info(*hash, entry, &tags))
            .collect();
        list.sort_by_key(|blob| std::cmp::Reverse(blob.last_used_unix_ms));
        Ok(list)
    })
    .await
    {
        Ok(list) => axum::Json(list).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

pub(crate) async fn stat(State(state): State<Arc<ApiState>>) -> Response {
    match blocking(state.node.store(), |store| {
        let stat = store.stat()?;
        Ok(StoreStat {
            blobs: stat.blobs,
            bytes: stat.bytes,
            pinned_blobs: stat.pinned_blobs,
            pinned_bytes: stat.pinned_bytes,
            tags: stat.tags,
            cache_bytes_max: stat.cache_bytes_max,
            path: store.root().display().to_string(),
        })
    })
    .await
    {
        Ok(stat) => axum::Json(stat).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

pub(crate) async fn pin(State(state): State<Arc<ApiState>>, body: Bytes) -> Response {
    let request: PinRequest = match parse(&body, "{\"hash\": \"<64 hex digits>\", \"tag\"?}") {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(),
    };
    let hash = match resolve_hash(state.node.store(), &request.hash).await {
        Ok(hash) => hash,
        Err(refusal) => return refusal.into_response(),
    };
    let tag = request.tag.unwrap_or_else(|| hash.to_string());
    match blocking(state.node.store(), move |store| {
        store.set_tag(&tag, &hash)?;
        Ok(TagChange {
            tags: vec![tag],
            hash: hash.to_string(),
        })
    })
    .await
    {
        Ok(change) => axum::Json(change).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

pub(crate) async fn unpin(State(state): State<Arc<ApiState>>, body: Bytes) -> Response {
    let request: UnpinRequest = match parse(&body, "{\"name\": \"<tag or hash>\"}") {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(),
    };
    match blocking(state.node.store(), move |store| {
        let tags = store.tags()?;
        if let Some((name, hash)) = tags.iter().find(|(name, _)| *name == request.name) {
            store.remove_tag(name)?;
            return Ok(TagChange {
                tags: vec![name.clone()],
                hash: hash.to_string(),
            });
        }
        // A hash, or the start of one, that tags name.
        let prefix = fogwire_identity::prefix_of(&request.name).to_ascii_lowercase();
        let tagged: Vec<Hash> = tags
            .iter()
            .map(|(_, hash)| *hash)
            .filter(|hash| !prefix.is_empty() && hash.to_string().starts_with(&prefix))
            .collect();
        let hash = match tagged.first() {
            Some(first) if tagged.iter().all(|hash| hash == first) => *first,
            _ => return Err(StoreError::NoTag(request.name.clone())),
        };
        let named: Vec<String> = tags
            .into_iter()
            .filter(|(_, tagged)| *tagged == hash)
            .map(|(name, _)| name)
            .collect();
        if named.is_empty() {
            return Err(StoreError::NoTag(request.name.clone()));
        }
        for name in &named {
            store.remove_tag(name)?;
        }
        Ok(TagChange {
            tags: named,
            hash: hash.to_string(),
        })
    })
    .await
    {
        Ok(change) => axum::Json(change).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

pub(crate) async fn gc(State(state): State<Arc<ApiState>>, body: Bytes) -> Response {
    let request: GcRequest = if body.is_empty() {
        GcRequest::default()
    } else {
        match parse(&body, "{\"all\": true|false}") {
            Ok(request) => request,
            Err(refusal) => return refusal.into_response(),
        }
    };
    match blocking(state.node.store(), move |store| {
        store.gc(request.all.then_some(0))
    })
    .await
    {
        Ok(report) => axum::Json(GcResult {
            removed_blobs: report.removed_blobs,
            removed_bytes: report.removed_bytes,
            kept_blobs: report.kept_blobs,
            kept_bytes: report.kept_bytes,
        })
        .into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

/// A single byte range from a `Range` header, as `start..end`; `Err` when
/// it cannot be satisfied. A malformed header, or several ranges, are
/// answered with the whole blob (allowed by RFC 9110). Parsed by
/// `http-range-header`.
fn byte_range(headers: &HeaderMap, size: u64) -> Option<Result<(u64, u64), ()>> {
    parse_byte_range(headers.get(header::RANGE)?.to_str().ok()?, size)
}

/// [`byte_range`] of a `Range` header's value, for a blob of `size`
/// bytes: `start..end` with `start < end <= size` (fuzzed: no value
/// overflows it).
pub fn parse_byte_range(value: &str, size: u64) -> Option<Result<(u64, u64), ()>> {
    use http_range_header::RangeUnsatisfiableError;
    let parsed = http_range_header::parse_range_header(value).ok()?;
    if parsed.len() != 1 {
        return None;
    }
    match parsed.validate(size) {
        Ok(ranges) => Some(
            ranges
                .first()
                .map(|range| (*range.start(), *range.end() + 1))
                .ok_or(()),
        ),
        Err(RangeUnsatisfiableError::Unsatisfiable) => Some(Err(())),
        Err(_) => None,
    }
}

pub(crate) async fn gateway(
    State(state): State<Arc<ApiState>>,
    Path(hash): Path<String>,
    headers: HeaderMap,
) -> Response {
    let hash = match resolve_hash(state.node.store(), &hash).await {
        Ok(hash) => hash,
        Err(refusal) => return refusal.into_response(),
    };
    // A blob this node lacks is fetched from its peers first (that blob
    // alone: a tree's root is its directory node, not the tree).
    let store = state.node.store().clone();
    let object = match tokio::task::spawn_blocking(move || store.object(&hash)).await {
        Ok(Ok(object)) => object,
        Ok(Err(StoreError::NotFound(_))) => {
            if let Err(refusal) = crate::site::fetch(&state, hash, "the blob asked for").await {
                return refusal.into_response();
            }
            let store = state.node.store().clone();
            tokio::task::spawn_blocking(move || store.object(&hash))
                .await
                .ok()
                .and_then(Result::ok)
                .flatten()
        }
        Ok(Err(failure)) => return error(StatusCode::CONFLICT, failure.to_string()),
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "the lookup stopped"),
    };
    let mut response = serve_blob(&state, hash, &headers, "application/octet-stream").await;
    // Says that these bytes are a tree's directory node, so that a client
    // asking for a file's bytes can tell (`store get -o -`).
    if object.is_some() {
        response.headers_mut().insert(
            OBJECT_HEADER,
            axum::http::HeaderValue::from_static("directory"),
        );
    }
    response
}

/// Set on a `/blobs` answer whose bytes are a directory node of a tree.
pub(crate) const OBJECT_HEADER: &str = "x-fogwire-object";

/// Serves blob `hash` (or the range `headers` ask for) as `content_type`.
pub(crate) async fn serve_blob(
    state: &Arc<ApiState>,
    hash: Hash,
    headers: &HeaderMap,
    content_type: &str,
) -> Response {
    let store = state.node.store().clone();
    let entry = match blocking(&store, move |store| store.entry(&hash)).await {
        Ok(Some(entry)) => entry,
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                format!("no blob {hash} in this node's store"),
            );
        }
        Err(refusal) => return refusal.into_response(),
    };
    let size = entry.size;
    let (status, start, end) = match byte_range(headers, size) {
        None => (StatusCode::OK, 0, size),
        Some(Ok((start, end))) => (StatusCode::PARTIAL_CONTENT, start, end),
        Some(Err(())) => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{size}"))],
            )
                .into_response();
        }
    };
    // The first chunk group is verified before any header goes out, so a
    // corrupt start is an error status rather than a cut body.
    let (chunks, mut receiver) = mpsc::channel::<Result<Bytes, std::io::Error>>(GATEWAY_QUEUE);
    let reads = state.gateway_reads.clone();
    tokio::spawn(serve_range(store, reads, hash, start, end, chunks));
    let first = if start < end {
        match receiver.recv().await {
            Some(Ok(first)) => Some(first),
            Some(Err(failure)) => return error(StatusCode::CONFLICT, failure.to_string()),
            None => return error(StatusCode::INTERNAL_SERVER_ERROR, "the read stopped"),
        }
    } else {
        None
    };
    let mut first = first;
    let stream = futures_util::stream::poll_fn(move |cx| {
        if let Some(chunk) = first.take() {
            return std::task::Poll::Ready(Some(Ok(chunk)));
        }
        receiver.poll_recv(cx)
    });
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_LENGTH, end - start)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_TYPE, content_type)
        .header(header::ETAG, format!("\"{hash}\""));
    if status == StatusCode::PARTIAL_CONTENT {
        response = response.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", end - 1),
        );
    }
    response
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot build the response",
            )
        })
}

/// Reads `start..end` of a blob into `chunks`, one window at a time: a
/// blocking thread only while a window is read and verified (at most
/// [`GATEWAY_READS_AT_ONCE`] over all readers), never while the client is
/// slow to take it, so stalled readers cannot hold the blocking pool (and
/// with it `store add` and `store stat`). A reader that
/// takes nothing for [`GATEWAY_STALL`] is cut off.
async fn serve_range(
    store: Arc<Store>,
    reads: Arc<tokio::sync::Semaphore>,
    hash: Hash,
    start: u64,
    end: u64,
    chunks: mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    // Kept from collection between windows.
    let _held = store.protect(hash);
    let mut at = start;
    while at < end {
        // Windows end on multiples of the window, so after the first each
        // starts on a chunk-group boundary and is verified once.
        let to = end.min((at / GATEWAY_WINDOW + 1) * GATEWAY_WINDOW);
        let Ok(permit) = reads.clone().acquire_owned().await else {
            return;
        };
        let reading = store.clone();
        let read = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut window = Vec::new();
            reading
                .read_range(&hash, at, to, &mut |bytes| {
                    window.push(Bytes::copy_from_slice(bytes));
                    Ok(())
                })
                .map(|()| window)
        })
        .await;
        let window = match read {
            Ok(Ok(window)) => window,
            Ok(Err(failure)) => {
                tracing::warn!("serving blob {hash}: {failure}");
                let _ = chunks
                    .send(Err(std::io::Error::other(failure.to_string())))
                    .await;
                return;
            }
            Err(_) => return,
        };
        for chunk in window {
            match tokio::time::timeout(GATEWAY_STALL, chunks.send(Ok(chunk))).await {
                Ok(Ok(())) => {}
                // The client went away.
                Ok(Err(_)) => return,
                Err(_) => {
                    tracing::debug!(
                        "a reader of blob {hash} took nothing for {} s: cut off",
                        GATEWAY_STALL.as_secs()
                    );
                    return;
                }
            }
        }
        at = to;
    }
}

/// `path` as the file system resolves it: its nearest existing ancestor
/// with links followed, then the rest.
fn resolved(path: &std::path::Path) -> PathBuf {
    let mut existing = path;
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            return rest.iter().rev().fold(real, |path, part| path.join(part));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return path.to_owned(),
        }
    }
}

/// Whether an export may write `path`: never inside the node's data
/// directory (its key, token and databases), and over an existing file or
/// directory only when forced.
fn writable(
    path: &std::path::Path,
    data_dir: Option<&std::path::Path>,
    force: bool,
) -> Result<(), Refusal> {
    if let Some(data_dir) = data_dir {
        let data_dir = resolved(data_dir);
        if resolved(path).starts_with(&data_dir) {
            return Err(Refusal(
                StatusCode::FORBIDDEN,
                format!(
                    "refusing to write {} inside the node's data directory {}: choose a path \
                     outside it",
                    path.display(),
                    data_dir.display()
                ),
            ));
        }
    }
    if !force && path.symlink_metadata().is_ok() {
        return Err(Refusal(
            StatusCode::CONFLICT,
            format!(
                "{} exists: add --force to overwrite it, or choose another path with -o",
                path.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn range(value: &str, size: u64) -> Option<Result<(u64, u64), ()>> {
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, HeaderValue::from_str(value).unwrap());
        byte_range(&headers, size)
    }

    #[test]
    fn ranges_read_as_rfc_9110_says() {
        assert_eq!(range("bytes=0-9", 100), Some(Ok((0, 10))));
        assert_eq!(range("bytes=90-", 100), Some(Ok((90, 100))));
        assert_eq!(range("bytes=-10", 100), Some(Ok((90, 100))));
        assert_eq!(range("bytes=-1000", 100), Some(Ok((0, 100))));
        assert_eq!(range("bytes=50-5000", 100), Some(Ok((50, 100))));
        assert_eq!(range("bytes=100-", 100), Some(Err(())));
        assert_eq!(range("bytes=-0", 100), Some(Err(())));
        assert_eq!(range("bytes=9-3", 100), None);
        assert_eq!(range("bytes=0-1,5-6", 100), None);
        assert_eq!(range("items=0-1", 100), None);
        assert_eq!(byte_range(&HeaderMap::new(), 100), None);
        // An end past u64's range is the end of the blob, not an overflow.
        assert_eq!(
            range("bytes=0-18446744073709551615", 100),
            Some(Ok((0, 100)))
        );
        assert_eq!(range("bytes=0-0", 0), Some(Err(())));
    }
}

#[cfg(test)]
mod range_tests {
    use super::parse_byte_range;

    /// What a header gives: a range, 416, or the whole blob.
    type Parsed = Option<Result<(u64, u64), ()>>;

    /// Range headers of every odd shape, for a blob of 100 bytes: a
    /// satisfiable one is `start..end`; one past the end (or of an empty
    /// blob) is `Err` (416); anything malformed, several ranges or another
    /// unit is `None`, answered with the whole blob (RFC 9110 allows it).
    #[test]
    fn range_headers_of_every_odd_shape() {
        let cases: [(&str, Parsed); 15] = [
            ("bytes=0-0", Some(Ok((0, 1)))),
            ("bytes=99-99", Some(Ok((99, 100)))),
            ("bytes= 1-2", Some(Ok((1, 3)))),
            ("BYTES=0-1", Some(Ok((0, 2)))),
            ("bytes=-1000", Some(Ok((0, 100)))),
            ("bytes=0-18446744073709551615", Some(Ok((0, 100)))),
            ("bytes=-0", Some(Err(()))),
            ("bytes=100-", Some(Err(()))),
            ("bytes=18446744073709551616-", Some(Err(()))),
            ("bytes=5-2", None),
            ("bytes=0-1,5-6", None),
            ("items=0-5", None),
            ("bytes=", None),
            ("bytes=-", None),
            ("bytes=1-2-3", None),
        ];
        for (value, expected) in cases {
            assert_eq!(parse_byte_range(value, 100), expected, "{value}");
        }
        assert_eq!(parse_byte_range("bytes=0-", 0), Some(Err(())));
    }
}
