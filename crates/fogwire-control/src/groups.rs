//! The control API's endpoints for the messenger's small groups.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use bytes::Bytes;
use fogwire_api::{
    GroupCreateRequest, GroupEntryView, GroupMemberRequest, GroupSendRequest, GroupView,
};
use fogwire_identity::NodeId;
use fogwire_msg::{Group, GroupEntry, GroupError, GroupEvent, GroupId, MsgError, Standing};

use crate::jobs::query_number;
use crate::msg::{messenger, peer_named};
use crate::server::{ApiState, Refusal};

/// Entries one history returns at most.
const HISTORY_MAX: usize = 10_000;

fn node_text(node: &[u8; 32]) -> String {
    NodeId::from_bytes(node)
        .map(|node| node.to_string())
        .unwrap_or_default()
}

fn group_view(group: &Group) -> GroupView {
    GroupView {
        id: group.id.to_string(),
        name: group.name.clone(),
        owner: node_text(&group.owner),
        members: group.members.iter().map(node_text).collect(),
        standing: match group.standing {
            Standing::Member => "member",
            Standing::Left => "left",
            Standing::Removed => "removed",
        }
        .to_owned(),
        created_unix_ms: group.created_ms,
        last_unix_ms: group.last_ms,
        entries: group.entries,
    }
}

fn entry_view(entry: &GroupEntry, delivered: usize) -> GroupEntryView {
    let (kind, text, members) = match &entry.event {
        GroupEvent::Joined => ("joined", None, Vec::new()),
        GroupEvent::Text(text) => ("text", Some(text.clone()), Vec::new()),
        GroupEvent::Added(nodes) => ("added", None, nodes.iter().map(node_text).collect()),
        GroupEvent::Removed(nodes) => ("removed", None, nodes.iter().map(node_text).collect()),
    };
    GroupEntryView {
        position: entry.position,
        from: node_text(&entry.from),
        kind: kind.to_owned(),
        text,
        members,
        sent_unix_ms: entry.sent_ms,
        at_unix_ms: entry.at_ms,
        sent_to: entry.carried_by.len() as u64,
        delivered_to: delivered as u64,
    }
}

impl From<GroupError> for Refusal {
    fn from(failure: GroupError) -> Self {
        let status = match failure {
            GroupError::NotFound(_) | GroupError::NotMember(_) => StatusCode::NOT_FOUND,
            GroupError::Db(_) | GroupError::Mls(_) => StatusCode::INTERNAL_SERVER_ERROR,
            GroupError::NotOwner(_) | GroupError::NotIn(_) | GroupError::OwnerLeaving => {
                StatusCode::FORBIDDEN
            }
            _ => StatusCode::BAD_REQUEST,
        };
        Refusal(status, failure.to_string())
    }
}

fn refusal(failure: MsgError) -> Refusal {
    match failure {
        MsgError::Group(group) => group.into(),
        MsgError::NoKeyPackage { .. } => Refusal(StatusCode::BAD_GATEWAY, failure.to_string()),
        other => other.into(),
    }
}

/// A group by its name, its id or the start of its id.
async fn group_named(state: &ApiState, name: &str) -> Result<GroupId, Refusal> {
    let groups = messenger(state)?.groups().await.map_err(refusal)?;
    let named: Vec<GroupId> = groups
        .iter()
        .filter(|group| group.name == name)
        .map(|group| group.id)
        .collect();
    match named.len() {
        1 => return Ok(named[0]),
        0 => {}
        many => {
            return Err(Refusal(
                StatusCode::BAD_REQUEST,
                format!("{many} groups are named `{name}`: give its id (`fogwire msg groups`)"),
            ));
        }
    }
    let ids = groups.iter().map(|group| (group.id.to_string(), group.id));
    crate::prefix::unique(name, ids, "group", "fogwire msg groups")
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes, expected: &str) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|parse_error| {
        Refusal(
            StatusCode::BAD_REQUEST,
            format!("expected {expected}: {parse_error}"),
        )
    })
}

/// `GET /v1/msg/groups`
pub(crate) async fn list(
    State(state): State<Arc<ApiState>>,
) -> Result<Json<Vec<GroupView>>, Refusal> {
    let mut groups = messenger(&state)?.groups().await.map_err(refusal)?;
    groups.sort_by_key(|group| std::cmp::Reverse(group.last_ms));
    Ok(Json(groups.iter().map(group_view).collect()))
}

/// `POST /v1/msg/groups`
pub(crate) async fn create(
    State(state): State<Arc<ApiState>>,
    body: Bytes,
) -> Result<Json<GroupView>, Refusal> {
    let request: GroupCreateRequest = parse(&body, "{\"name\": \"…\"}")?;
    let group = messenger(&state)?
        .group_create(request.name)
        .await
        .map_err(refusal)?;
    Ok(Json(group_view(&group)))
}

/// `POST /v1/msg/groups/{group}/add`
pub(crate) async fn add(
    State(state): State<Arc<ApiState>>,
    Path(group): Path<String>,
    body: Bytes,
) -> Result<Json<GroupView>, Refusal> {
    change_member(&state, &group, &body, true).await
}

/// `POST /v1/msg/groups/{group}/remove`
pub(crate) async fn remove(
    State(state): State<Arc<ApiState>>,
    Path(group): Path<String>,
    body: Bytes,
) -> Result<Json<GroupView>, Refusal> {
    change_member(&state, &group, &body, false).await
}

async fn change_member(
    state: &ApiState,
    group: &str,
    body: &Bytes,
    add: bool,
) -> Result<Json<GroupView>, Refusal> {
    let request: GroupMemberRequest = parse(body, "{\"node\": \"<node>\"}")?;
    let group = group_named(state, group).await?;
    let node = peer_named(state, &request.node).await?;
    let messenger = messenger(state)?;
    let changed = if add {
        messenger.group_add(group, node).await
    } else {
        messenger.group_remove(group, node).await
    };
    Ok(Json(group_view(&changed.map_err(refusal)?)))
}

/// `POST /v1/msg/groups/{group}/leave`
pub(crate) async fn leave(
    State(state): State<Arc<ApiState>>,
    Path(group): Path<String>,
) -> Result<Json<GroupView>, Refusal> {
    let group = group_named(&state, &group).await?;
    let left = messenger(&state)?
        .group_leave(group)
        .await
        .map_err(refusal)?;
    Ok(Json(group_view(&left)))
}

/// `POST /v1/msg/groups/{group}/send`
pub(crate) async fn send(
    State(state): State<Arc<ApiState>>,
    Path(group): Path<String>,
    body: Bytes,
) -> Result<Json<GroupEntryView>, Refusal> {
    let request: GroupSendRequest = parse(&body, "{\"text\": \"…\"}")?;
    let group = group_named(&state, &group).await?;
    let entry = messenger(&state)?
        .group_send(group, request.text)
        .await
        .map_err(refusal)?;
    Ok(Json(entry_view(&entry, 0)))
}

/// `GET /v1/msg/groups/{group}/history[?limit=]`
pub(crate) async fn history(
    State(state): State<Arc<ApiState>>,
    Path(group): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Vec<GroupEntryView>>, Refusal> {
    let group = group_named(&state, &group).await?;
    let limit = query_number(&raw, "limit", 100)?.min(HISTORY_MAX);
    let entries = messenger(&state)?
        .group_history(group, limit)
        .await
        .map_err(refusal)?;
    Ok(Json(
        entries
            .iter()
            .map(|(entry, delivered)| entry_view(entry, *delivered))
            .collect(),
    ))
}
