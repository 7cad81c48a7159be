//! The control API's messenger endpoints.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use fogwire_api::{ContactView, MessageView, MsgSendRequest};
use fogwire_identity::NodeId;
use fogwire_msg::{Messenger, MsgError, Record, Status};
use tokio::sync::broadcast::error::RecvError;

use crate::jobs::{query, query_number};
use crate::ndjson;
use crate::server::{ApiState, Refusal};

/// Messages one listing returns at most.
const LIST_MAX: usize = 10_000;

pub(crate) fn view(record: &Record) -> MessageView {
    MessageView {
        id: record.id.to_string(),
        peer: record
            .peer()
            .map(|peer| peer.to_string())
            .unwrap_or_default(),
        direction: if record.outgoing { "out" } else { "in" }.to_owned(),
        text: record.text.clone(),
        status: match record.status {
            Status::Queued => "queued",
            Status::Delivered => "delivered",
            Status::Read => "read",
            Status::Failed => "failed",
            Status::Held => "held",
            Status::Unread => "unread",
            Status::Stored => "stored",
        }
        .to_owned(),
        sent_unix_ms: record.sent_ms,
        received_unix_ms: record.received_ms,
        delivered_unix_ms: record.delivered_ms,
        read_unix_ms: record.read_ms,
        seq: record.seq,
        error: record.error.clone(),
    }
}

pub(crate) fn messenger(state: &ApiState) -> Result<&Messenger, Refusal> {
    state.node.messenger().ok_or_else(|| {
        Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node runs no messenger".to_owned(),
        )
    })
}

impl From<MsgError> for Refusal {
    fn from(failure: MsgError) -> Self {
        let status = match failure {
            MsgError::TooLong { .. } | MsgError::Empty | MsgError::ToSelf => {
                StatusCode::BAD_REQUEST
            }
            MsgError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Refusal(status, failure.to_string())
    }
}

/// A node by the name the operator gave it, its id, or a prefix of a
/// known node's id or of a contact's (which may be offline, its advert
/// gone).
pub(crate) async fn peer_named(state: &ApiState, name: &str) -> Result<NodeId, Refusal> {
    let contacts = messenger(state)?.contacts().await?;
    let nodes = state.node.routing().nodes().await?;
    let mut known: Vec<NodeId> = nodes.iter().map(|node| node.advert.origin).collect();
    known.extend(contacts.into_iter().map(|(peer, _)| peer));
    known.sort();
    known.dedup();
    let what = ("known node or contact", "fogwire msg contacts");
    crate::routes::resolve_among(&state.names, known, name, what)
}

fn flag(raw: &Option<String>, key: &str) -> bool {
    query(raw, key).is_some_and(|value| value == "true" || value == "1")
}

/// `POST /v1/msg/send`
pub(crate) async fn send(
    State(state): State<Arc<ApiState>>,
    body: Bytes,
) -> Result<Json<MessageView>, Refusal> {
    let request: MsgSendRequest = serde_json::from_slice(&body).map_err(|parse_error| {
        Refusal(
            StatusCode::BAD_REQUEST,
            format!("expected {{\"to\": \"<node>\", \"text\": \"…\"}}: {parse_error}"),
        )
    })?;
    let peer = peer_named(&state, &request.to).await?;
    let record = messenger(&state)?.send(peer, request.text).await?;
    Ok(Json(view(&record)))
}

/// `GET /v1/msg/inbox[?limit=&peek=true]`
pub(crate) async fn inbox(
    State(state): State<Arc<ApiState>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Vec<MessageView>>, Refusal> {
    let limit = query_number(&raw, "limit", LIST_MAX)?.min(LIST_MAX);
    let records = messenger(&state)?.inbox(limit, !flag(&raw, "peek")).await?;
    Ok(Json(records.iter().map(view).collect()))
}

/// `GET /v1/msg/history/{peer}[?search=&limit=&peek=true]`
pub(crate) async fn history(
    State(state): State<Arc<ApiState>>,
    Path(peer): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Vec<MessageView>>, Refusal> {
    let peer = peer_named(&state, &peer).await?;
    let limit = query_number(&raw, "limit", 100)?.min(LIST_MAX);
    let search = query(&raw, "search").map(|text| {
        percent_encoding::percent_decode_str(&text.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    });
    let records = messenger(&state)?
        .history(peer, search, limit, !flag(&raw, "peek"))
        .await?;
    Ok(Json(records.iter().map(view).collect()))
}

/// `GET /v1/msg/contacts`
pub(crate) async fn contacts(
    State(state): State<Arc<ApiState>>,
) -> Result<Json<Vec<ContactView>>, Refusal> {
    let mut contacts = messenger(&state)?.contacts().await?;
    contacts.sort_by_key(|(_, contact)| std::cmp::Reverse(contact.last_ms));
    Ok(Json(
        contacts
            .into_iter()
            .map(|(peer, contact)| ContactView {
                peer: peer.to_string(),
                messages: contact.messages,
                unread: contact.unread,
                held: contact.held,
                last_unix_ms: contact.last_ms,
                last_text: contact.last_text,
                written_to: contact.out_stream.is_some(),
            })
            .collect(),
    ))
}

/// `GET /v1/msg/follow`: NDJSON — first `{"following": "<node id>"}`,
/// once the stream is listening, then one [`MessageView`] per line
/// whenever a message arrives or changes status (or `{"missed": n}` when
/// the caller was too slow), until the caller leaves.
pub(crate) async fn follow(State(state): State<Arc<ApiState>>) -> Response {
    let mut events = match messenger(&state) {
        Ok(messenger) => messenger.follow(),
        Err(refusal) => return refusal.into_response(),
    };
    let (lines, response) = ndjson::streamed();
    let shutdown = state.shutdown.clone();
    let me = state.node.node_id().to_string();
    let _ = lines.try_send(Ok(ndjson::line(&serde_json::json!({ "following": me }))));
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                event = events.recv() => event,
                () = lines.closed() => return,
                () = shutdown.cancelled() => return,
            };
            let line = match event {
                Ok(record) => ndjson::line(&view(&record)),
                Err(RecvError::Lagged(missed)) => ndjson::line(&serde_json::json!({
                    "missed": missed,
                })),
                Err(RecvError::Closed) => return,
            };
            if lines.send(Ok(line)).await.is_err() {
                return;
            }
        }
    });
    response
}
