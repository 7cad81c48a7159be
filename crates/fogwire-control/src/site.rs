//! The web gateway by path: `/tree/<root>/<path>` and `/feed/<feed>/<path>`
//! serve a published directory as a web server would — a directory by its
//! `index.html` or a listing, a file with the Content-Type its extension
//! names and byte ranges — so a site published to a feed opens in a
//! browser and its video seeks.
//!
//! Paths are resolved in the tree's object graph, one node at a time
//! (`docs/protocol/store.md`): never on a file system, so no path can
//! leave its tree; `.` and `..` segments are refused outright. A node or
//! file this node lacks is fetched from its peers as the request needs
//! it (that blob alone, never the rest of the tree), a bounded number per
//! request and at once.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fogwire_store::object::{self, DirEntry, EntryType, Node};
use fogwire_store::{Hash, Store};

use crate::server::{ApiState, Refusal, error};

/// Most segments a path may have.
const SEGMENTS_MAX: usize = 64;
/// Most index levels above a directory's entries (each level holds 1,024
/// children: far more entries than any directory has).
const INDEX_DEPTH_MAX: usize = 8;
/// The file a directory is served by, when it has one.
const INDEX: &str = "index.html";
/// Most entries a generated listing shows.
const LISTING_MAX: usize = 1000;
/// What a served site may do in the browser: run its scripts and forms,
/// but in an origin of its own, never the API's.
const SANDBOX: &str = "sandbox allow-scripts allow-forms allow-popups allow-downloads";

/// Blobs fetched from peers at once, over all requests.
pub(crate) const FETCHES_AT_ONCE: usize = 8;
/// Blobs one request may fetch: every node on its path, with their index
/// levels, and its file.
const FETCHES_PER_REQUEST: usize = SEGMENTS_MAX * 2 + 16;
/// How long one fetch may take.
const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Why a lookup stopped: refused, or a blob this node must fetch first.
enum Stop {
    Refused(Refusal),
    Missing(Hash),
}

impl From<Refusal> for Stop {
    fn from(refusal: Refusal) -> Self {
        Stop::Refused(refusal)
    }
}

/// What a path names in a tree.
enum Target {
    File { hash: Hash, name: String },
    Directory { hash: Hash },
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal(status, message.into())
}

/// The object node blob `hash` holds, if it is one; a blob this node
/// lacks stops the lookup to be fetched.
fn object(store: &Store, hash: &Hash) -> Result<Option<Node>, Stop> {
    store.object(hash).map_err(|error| match error {
        fogwire_store::StoreError::NotFound(_) => Stop::Missing(*hash),
        other => Stop::Refused(refuse(StatusCode::CONFLICT, other.to_string())),
    })
}

/// A node of the tree, read from this node's store.
fn read_node(store: &Store, hash: &Hash) -> Result<Node, Stop> {
    object(store, hash)?.ok_or_else(|| {
        Stop::Refused(refuse(
            StatusCode::CONFLICT,
            format!("{hash} is not a directory of a tree"),
        ))
    })
}

/// The entry `name` of the directory whose root node is `directory`.
fn find(store: &Store, directory: Hash, name: &str) -> Result<Option<DirEntry>, Stop> {
    let mut node = directory;
    for _ in 0..=INDEX_DEPTH_MAX {
        match read_node(store, &node)? {
            Node::Directory(entries) => {
                return Ok(entries
                    .binary_search_by(|entry| entry.name.as_str().cmp(name))
                    .ok()
                    .map(|at| entries[at].clone()));
            }
            // The child whose run of names would hold `name`.
            Node::Index(children) => {
                let after = children.partition_point(|child| child.first_name.as_str() <= name);
                let Some(child) = after.checked_sub(1).map(|at| &children[at]) else {
                    return Ok(None);
                };
                node = child.hash;
            }
        }
    }
    Err(Stop::Refused(refuse(
        StatusCode::CONFLICT,
        format!("directory {directory} is nested deeper than any directory may be"),
    )))
}

/// Whether `hash` is a directory of a tree (rather than a file).
fn is_directory(store: &Store, hash: &Hash) -> Result<bool, Stop> {
    Ok(object(store, hash)?.is_some())
}

/// Follows `segments` down from `root`.
fn walk(store: &Store, root: Hash, segments: &[String]) -> Result<Target, Stop> {
    let mut target = if is_directory(store, &root)? {
        Target::Directory { hash: root }
    } else {
        Target::File {
            hash: root,
            name: String::new(),
        }
    };
    for (depth, segment) in segments.iter().enumerate() {
        let Target::Directory { hash } = target else {
            let walked = match depth {
                0 => "the root".to_owned(),
                _ => segments[..depth].join("/"),
            };
            return Err(Stop::Refused(refuse(
                StatusCode::NOT_FOUND,
                format!("{walked} is a file, not a directory"),
            )));
        };
        let Some(entry) = find(store, hash, segment)? else {
            return Err(Stop::Refused(refuse(
                StatusCode::NOT_FOUND,
                format!("no {} in this tree", segments[..=depth].join("/")),
            )));
        };
        target = match entry.kind {
            EntryType::File => Target::File {
                hash: entry.hash,
                name: entry.name,
            },
            EntryType::Directory => Target::Directory { hash: entry.hash },
        };
    }
    Ok(target)
}

/// Every entry of a directory, in name order (at most `limit`).
fn entries(store: &Store, directory: Hash, limit: usize) -> Result<Vec<DirEntry>, Stop> {
    let mut out = Vec::new();
    let mut pending = vec![(directory, 0usize)];
    // Depth first, children in reverse so that names come out in order.
    while let Some((node, depth)) = pending.pop() {
        if out.len() >= limit {
            break;
        }
        match read_node(store, &node)? {
            Node::Directory(list) => out.extend(list.into_iter().take(limit - out.len())),
            Node::Index(children) if depth < INDEX_DEPTH_MAX => {
                pending.extend(children.iter().rev().map(|child| (child.hash, depth + 1)));
            }
            Node::Index(_) => {}
        }
    }
    Ok(out)
}

/// The path's segments, or why it is refused.
fn segments(path: &str) -> Result<Vec<String>, Refusal> {
    let parts: Vec<String> = path
        .split('/')
        .filter(|part| !part.is_empty())
        .map(str::to_owned)
        .collect();
    if parts.len() > SEGMENTS_MAX {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("a path of at most {SEGMENTS_MAX} segments"),
        ));
    }
    if let Some(bad) = parts.iter().find(|part| object::check_name(part).is_err()) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "`{}` cannot name anything in a tree: paths stay inside their tree",
                bad.chars().take(80).collect::<String>()
            ),
        ));
    }
    Ok(parts)
}

/// Escapes text for HTML.
fn html(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

fn listing(title: &str, entries: &[DirEntry], cut: bool) -> Response {
    let mut page = format!(
        "<!doctype html>\n<meta charset=\"utf-8\">\n<title>{0}</title>\n<h1>{0}</h1>\n<ul>\n<li><a href=\"../\">../</a></li>\n",
        html(title)
    );
    for entry in entries {
        let slash = if entry.kind == EntryType::Directory {
            "/"
        } else {
            ""
        };
        let href: String = url_escape(&entry.name);
        page.push_str(&format!(
            "<li><a href=\"{href}{slash}\">{}{slash}</a> {} bytes</li>\n",
            html(&entry.name),
            entry.size
        ));
    }
    page.push_str("</ul>\n");
    if cut {
        page.push_str(&format!(
            "<p>only the first {LISTING_MAX} entries are shown</p>\n"
        ));
    }
    let mut response = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response();
    harden(response.headers_mut());
    response
}

/// Percent-escapes a name for a relative link (all but RFC 3986's
/// unreserved characters).
fn url_escape(name: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    utf8_percent_encode(name, ESCAPED).to_string()
}

/// Keeps a served site from acting in the API's origin, and browsers from
/// guessing types.
fn harden(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(SANDBOX),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// The Content-Type a file's name gives.
fn content_type(name: &str) -> String {
    let guess = mime_guess::from_path(name).first_or_octet_stream();
    if guess.type_() == mime_guess::mime::TEXT {
        format!("{guess}; charset=utf-8")
    } else {
        guess.to_string()
    }
}

/// Fetches `hash` alone from the peers, within the gateway's bounds.
pub(crate) async fn fetch(state: &Arc<ApiState>, hash: Hash, what: &str) -> Result<(), Refusal> {
    let Ok(_slot) = state.gateway_fetches.acquire().await else {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the node is stopping",
        ));
    };
    let fetched = tokio::time::timeout(FETCH_TIMEOUT, state.node.replication().fetch_blob(hash));
    match fetched.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(
            failure @ (fogwire_replicate::FetchError::NoPeers { .. }
            | fogwire_replicate::FetchError::NotFound { .. }),
        )) => Err(refuse(
            StatusCode::NOT_FOUND,
            format!("{hash}, {what}, is not here: {failure}"),
        )),
        Ok(Err(failure)) => Err(refuse(
            StatusCode::BAD_GATEWAY,
            format!("cannot fetch {hash}, {what}: {failure}"),
        )),
        Err(_) => Err(refuse(
            StatusCode::GATEWAY_TIMEOUT,
            format!("{hash}, {what}, did not arrive within {FETCH_TIMEOUT:?}"),
        )),
    }
}

/// How a fetch names what it fetched for a tree.
const PART: &str = "a part of the tree";

/// What a request is answered with.
enum Served {
    File {
        hash: Hash,
        name: String,
    },
    Listing(Vec<DirEntry>),
    /// A directory asked for without its trailing slash.
    Redirect,
}

/// Finds what `segments` name below `root`: a file, a directory's index
/// file, or its listing.
fn resolve(store: &Store, root: Hash, segments: &[String], trailing: bool) -> Result<Served, Stop> {
    match walk(store, root, segments)? {
        Target::File { hash, name } => Ok(Served::File { hash, name }),
        // Its relative links need its URL to end in a slash.
        Target::Directory { .. } if !trailing => Ok(Served::Redirect),
        Target::Directory { hash } => match find(store, hash, INDEX)? {
            Some(index) if index.kind == EntryType::File => Ok(Served::File {
                hash: index.hash,
                name: index.name,
            }),
            _ => Ok(Served::Listing(entries(store, hash, LISTING_MAX + 1)?)),
        },
    }
}

/// Serves `path` below `root`; `base` is the URL of the root, for links.
async fn serve(
    state: Arc<ApiState>,
    root: Hash,
    base: String,
    path: String,
    trailing: bool,
    headers: HeaderMap,
) -> Response {
    let segments = match segments(&path) {
        Ok(segments) => segments,
        Err(refusal) => return refusal.into_response(),
    };
    let mut fetches = 0;
    let served = loop {
        let store = state.node.store().clone();
        let names = segments.clone();
        let missing = match tokio::task::spawn_blocking(move || {
            resolve(&store, root, &names, trailing)
        })
        .await
        {
            Ok(Ok(served)) => break served,
            Ok(Err(Stop::Refused(refusal))) => return refusal.into_response(),
            Ok(Err(Stop::Missing(hash))) => hash,
            Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "the lookup stopped"),
        };
        // Fetched, then the lookup goes again from the root (each round
        // gets at least one step further).
        fetches += 1;
        if fetches > FETCHES_PER_REQUEST {
            return error(
                StatusCode::CONFLICT,
                "this path needs more parts of the tree than one request may fetch",
            );
        }
        if let Err(refusal) = fetch(&state, missing, PART).await {
            return refusal.into_response();
        }
    };
    // Where this directory is, as a URL (for a redirect) and as text.
    let at = |part: &dyn Fn(&String) -> String| -> String {
        segments
            .iter()
            .map(|segment| format!("{}/", part(segment)))
            .collect()
    };
    let here = format!("{base}/{}", at(&|segment| url_escape(segment)));
    let title = format!("{base}/{}", at(&|segment| segment.clone()));
    match served {
        Served::File { hash, name } => {
            let store = state.node.store().clone();
            let held = tokio::task::spawn_blocking(move || store.entry(&hash)).await;
            if !matches!(held, Ok(Ok(Some(_))))
                && let Err(refusal) = fetch(&state, hash, PART).await
            {
                return refusal.into_response();
            }
            let kind = content_type(&name);
            let mut response = crate::store::serve_blob(&state, hash, &headers, &kind).await;
            harden(response.headers_mut());
            response
        }
        Served::Redirect => {
            (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, here)]).into_response()
        }
        Served::Listing(list) => {
            let cut = list.len() > LISTING_MAX;
            listing(&title, &list[..list.len().min(LISTING_MAX)], cut)
        }
    }
}

/// Where a request's tree comes from: a root hash, or a feed's newest
/// version this node holds.
enum Source {
    Tree(String),
    Feed(String),
}

/// The root `source` names, and the URL it is served under.
async fn root_of(state: &Arc<ApiState>, source: Source) -> Result<(Hash, String), Refusal> {
    let text = match &source {
        Source::Tree(text) | Source::Feed(text) => text.chars().take(80).collect::<String>(),
    };
    let feed = match source {
        Source::Tree(root) => {
            let hash = root.parse::<Hash>().map_err(|e| {
                refuse(
                    StatusCode::BAD_REQUEST,
                    format!("`{text}` is not a tree's root hash: {e}"),
                )
            })?;
            return Ok((hash, format!("/tree/{hash}")));
        }
        Source::Feed(feed) => feed.parse::<fogwire_store::FeedId>().map_err(|e| {
            refuse(
                StatusCode::BAD_REQUEST,
                format!("`{text}` is not a feed id (fwfeed1…): {e}"),
            )
        })?,
    };
    let store = state.node.store().clone();
    match tokio::task::spawn_blocking(move || store.feed_root(&feed)).await {
        Ok(Ok(Some(root))) => Ok((root.content, format!("/feed/{feed}"))),
        Ok(Ok(None)) => Err(refuse(
            StatusCode::NOT_FOUND,
            format!(
                "no version of feed {feed} is known here: follow it (fogwire feed follow {feed})"
            ),
        )),
        Ok(Err(e)) => Err(refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
        Err(_) => Err(refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the lookup stopped",
        )),
    }
}

/// Serves `path` of `source`'s tree; `trailing`: whether the URL ended
/// in a slash.
async fn answer(
    state: Arc<ApiState>,
    source: Source,
    path: String,
    trailing: bool,
    headers: HeaderMap,
) -> Response {
    match root_of(&state, source).await {
        Ok((root, base)) => serve(state, root, base, path, trailing, headers).await,
        Err(refusal) => refusal.into_response(),
    }
}

/// `GET /tree/<root>`: a directory is redirected to `/tree/<root>/`.
pub(crate) async fn tree_bare(
    State(state): State<Arc<ApiState>>,
    Path(root): Path<String>,
    headers: HeaderMap,
) -> Response {
    answer(state, Source::Tree(root), String::new(), false, headers).await
}

/// `GET /tree/<root>/`.
pub(crate) async fn tree_root(
    State(state): State<Arc<ApiState>>,
    Path(root): Path<String>,
    headers: HeaderMap,
) -> Response {
    answer(state, Source::Tree(root), String::new(), true, headers).await
}

/// `GET /tree/<root>/<path>`.
pub(crate) async fn tree(
    State(state): State<Arc<ApiState>>,
    Path((root, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let trailing = path.ends_with('/');
    answer(state, Source::Tree(root), path, trailing, headers).await
}

/// `GET /feed/<feed>`: the feed's newest version this node holds; a
/// directory is redirected to `/feed/<feed>/`.
pub(crate) async fn feed_bare(
    State(state): State<Arc<ApiState>>,
    Path(feed): Path<String>,
    headers: HeaderMap,
) -> Response {
    answer(state, Source::Feed(feed), String::new(), false, headers).await
}

/// `GET /feed/<feed>/`.
pub(crate) async fn feed_root(
    State(state): State<Arc<ApiState>>,
    Path(feed): Path<String>,
    headers: HeaderMap,
) -> Response {
    answer(state, Source::Feed(feed), String::new(), true, headers).await
}

/// `GET /feed/<feed>/<path>`.
pub(crate) async fn feed_path(
    State(state): State<Arc<ApiState>>,
    Path((feed, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let trailing = path.ends_with('/');
    answer(state, Source::Feed(feed), path, trailing, headers).await
}

/// The gateway's routes: blobs by hash, trees and feeds by path.
pub(crate) fn routes() -> axum::Router<Arc<ApiState>> {
    use axum::routing::get;
    axum::Router::new()
        .route("/blobs/{hash}", get(crate::store::gateway))
        .route("/tree/{root}", get(tree_bare))
        .route("/tree/{root}/", get(tree_root))
        .route("/tree/{root}/{*path}", get(tree))
        .route("/feed/{feed}", get(feed_bare))
        .route("/feed/{feed}/", get(feed_root))
        .route("/feed/{feed}/{*path}", get(feed_path))
}
