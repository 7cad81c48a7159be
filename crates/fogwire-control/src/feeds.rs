//! The control API's feed endpoints. A feed's key is a 0600 file in the
//! store directory (`feeds/<feed id>.key`), like the node's own key.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use fogwire_identity::Keypair;
use fogwire_store::{ContentKind, FeedId, FeedRoot, Store, StoreError};

use crate::server::{ApiState, Refusal, error};
use fogwire_api::{FeedInfo, FeedRootInfo, FollowRequest, PublishRequest};
use fogwire_env::unix_ms as now_ms;

fn keys_dir(store: &Store) -> PathBuf {
    store.root().join("feeds")
}

fn key_path(store: &Store, feed: &FeedId) -> PathBuf {
    keys_dir(store).join(format!("{feed}.key"))
}

fn owned(store: &Store) -> Vec<FeedId> {
    let Ok(entries) = std::fs::read_dir(keys_dir(store)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            entry
                .file_name()
                .to_str()?
                .strip_suffix(".key")?
                .parse()
                .ok()
        })
        .collect()
}

fn root_info(store: &Store, root: &FeedRoot) -> FeedRootInfo {
    FeedRootInfo {
        seq: root.seq,
        content: root.content.to_string(),
        kind: match root.kind {
            ContentKind::Blob => "blob",
            ContentKind::Directory => "directory",
        }
        .to_owned(),
        size: root.size,
        published_at_unix_ms: root.published_at_ms,
        previous: root.previous.map(|p| p.to_string()),
        held: store.entry(&root.content).ok().flatten().is_some(),
    }
}

fn info(store: &Store, feed: &FeedId) -> Result<FeedInfo, StoreError> {
    Ok(FeedInfo {
        feed: feed.to_string(),
        owned: key_path(store, feed).exists(),
        following: store.following()?.contains(feed),
        root: store.feed_root(feed)?.map(|root| root_info(store, &root)),
    })
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal(status, message.into())
}

/// A feed named by its id, or by a prefix of it (its short form, say)
/// that only one feed this node knows has.
fn parse_feed(store: &Store, text: &str) -> Result<FeedId, Refusal> {
    let error = match text.trim().parse::<FeedId>() {
        Ok(feed) => return Ok(feed),
        Err(error) => error,
    };
    if !fogwire_identity::prefix_of(text).starts_with("fwfeed1") {
        return Err(refuse(StatusCode::BAD_REQUEST, error.to_string()));
    }
    let mut known: Vec<FeedId> = owned(store);
    known.extend(store.following()?);
    known.extend(store.feeds()?.into_iter().map(|root| root.feed));
    known.sort();
    known.dedup();
    crate::prefix::unique(
        text,
        known.into_iter().map(|feed| (feed.to_string(), feed)),
        "feed",
        "fogwire feed show",
    )
}

async fn blocking<T: serde::Serialize + Send + 'static>(
    store: &Arc<Store>,
    work: impl FnOnce(&Store) -> Result<T, Refusal> + Send + 'static,
) -> Response {
    match run_blocking(store, work).await {
        Ok(value) => axum::Json(value).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

async fn run_blocking<T: Send + 'static>(
    store: &Arc<Store>,
    work: impl FnOnce(&Store) -> Result<T, Refusal> + Send + 'static,
) -> Result<T, Refusal> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || work(&store))
        .await
        .map_err(|join| Refusal(StatusCode::INTERNAL_SERVER_ERROR, join.to_string()))?
}

/// `POST /v1/feeds`: makes a feed key.
pub(crate) async fn new(State(state): State<Arc<ApiState>>) -> Response {
    blocking(state.node.store(), |store| {
        let key = Keypair::generate()
            .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let feed = FeedId::from_key(key.node_id());
        std::fs::create_dir_all(keys_dir(store))
            .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        key.save(&key_path(store, &feed))
            .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        info(store, &feed).map_err(Refusal::from)
    })
    .await
}

pub(crate) async fn list(State(state): State<Arc<ApiState>>) -> Response {
    blocking(state.node.store(), |store| {
        let mut feeds: Vec<FeedId> = owned(store);
        feeds.extend(store.following()?);
        feeds.extend(store.feeds()?.into_iter().map(|root| root.feed));
        feeds.sort();
        feeds.dedup();
        feeds
            .iter()
            .map(|feed| info(store, feed).map_err(Refusal::from))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
}

pub(crate) async fn show(State(state): State<Arc<ApiState>>, Path(feed): Path<String>) -> Response {
    blocking(state.node.store(), move |store| {
        let feed = parse_feed(store, &feed)?;
        let info = info(store, &feed)?;
        if !info.owned && !info.following && info.root.is_none() {
            return Err(refuse(
                StatusCode::NOT_FOUND,
                format!("this node knows nothing of {feed}; follow it with `fogwire feed follow`"),
            ));
        }
        Ok(info)
    })
    .await
}

pub(crate) async fn publish(State(state): State<Arc<ApiState>>, body: Bytes) -> Response {
    let request: PublishRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"feed\", \"path\" or \"hash\"}}: {e}"),
            );
        }
    };
    let published = run_blocking(state.node.store(), move |store| {
        let feed = parse_feed(store, &request.feed)?;
        let key = Keypair::load(&key_path(store, &feed)).map_err(|_| {
            refuse(
                StatusCode::FORBIDDEN,
                format!("this node does not hold the key of {feed}: only its owner publishes"),
            )
        })?;
        let tag = fogwire_store::feed_tag(&feed);
        let (content, kind) = match (&request.path, &request.hash) {
            (Some(path), None) => {
                let path = PathBuf::from(path);
                if !path.is_absolute() {
                    return Err(refuse(StatusCode::BAD_REQUEST, "the path must be absolute"));
                }
                if path.is_dir() {
                    let report = store.import_dir(&path, Some(&tag), false, &mut |_| {})?;
                    let root = report
                        .root
                        .ok_or_else(|| refuse(StatusCode::INTERNAL_SERVER_ERROR, "no root"))?;
                    (root, ContentKind::Directory)
                } else {
                    (
                        store.import_file(&path, Some(&tag), &mut |_| {})?,
                        ContentKind::Blob,
                    )
                }
            }
            (None, Some(hash)) => {
                let hash: fogwire_store::Hash =
                    hash.parse().map_err(|e: fogwire_store::ParseHashError| {
                        refuse(StatusCode::BAD_REQUEST, e.to_string())
                    })?;
                let kind = if store.object(&hash)?.is_some() {
                    ContentKind::Directory
                } else {
                    ContentKind::Blob
                };
                (hash, kind)
            }
            _ => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "give either \"path\" (to add and publish) or \"hash\" (already in the store)",
                ));
            }
        };
        store.publish(&key, content, kind, now_ms())?;
        let root = store.feed_root_bytes(&feed)?.unwrap_or_default();
        Ok((info(store, &feed)?, root))
    })
    .await;
    match published {
        Ok((info, root)) => {
            // Neighbours hear of it now; followers fetch from here.
            let holder = Some(state.node.node_id());
            state.node.replication().announce(root, holder).await;
            axum::Json(info).into_response()
        }
        Err(refusal) => refusal.into_response(),
    }
}

pub(crate) async fn follow(State(state): State<Arc<ApiState>>, body: Bytes) -> Response {
    let request: FollowRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"feed\"}}: {e}"),
            );
        }
    };
    let stop = request.stop;
    let followed = run_blocking(state.node.store(), move |store| {
        let feed = parse_feed(store, &request.feed)?;
        store.set_following(&feed, !request.stop)?;
        Ok((feed, info(store, &feed)?))
    })
    .await;
    match followed {
        Ok((feed, info)) => {
            if !stop {
                // Ask the neighbours for its newest root, and fetch.
                state.node.replication().sync_feed(feed);
            }
            axum::Json(info).into_response()
        }
        Err(refusal) => refusal.into_response(),
    }
}
