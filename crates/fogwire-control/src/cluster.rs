//! The control API's cluster endpoints: this board's view of its cluster,
//! making a cluster, joining one, peering with another by its id.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fogwire_api::{
    ClusterApply, ClusterCreated, ClusterJoin, ClusterPeer, ClusterPeering, ClusterPeerings,
};
use fogwire_cluster::ClusterError;
use fogwire_cluster::proto::JoinCode;
use fogwire_identity::NodeId;
use fogwire_msg::{MsgError, Peering, PeeringError, PeeringState};

use crate::server::{ApiState, error};

fn refused(failure: ClusterError) -> Response {
    let status = match failure {
        ClusterError::AlreadyJoined { .. } => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, failure.to_string())
}

/// `GET /v1/cluster`.
pub(crate) async fn status(State(state): State<Arc<ApiState>>) -> Response {
    axum::Json(state.node.cluster().status()).into_response()
}

/// `POST /v1/cluster/init`: a new cluster, with this board in it.
pub(crate) async fn init(State(state): State<Arc<ApiState>>) -> Response {
    match state.node.cluster().init().await {
        Ok(code) => axum::Json(ClusterCreated {
            cluster: code.cluster.to_string(),
            join_code: code.to_string(),
        })
        .into_response(),
        Err(failure) => refused(failure),
    }
}

/// `GET /v1/cluster/join-code`: the code other boards join with.
pub(crate) async fn join_code(State(state): State<Arc<ApiState>>) -> Response {
    match state.node.cluster().join_code() {
        Some(code) => axum::Json(ClusterCreated {
            cluster: code.cluster.to_string(),
            join_code: code.to_string(),
        })
        .into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "this board is in no cluster: `fogwire cluster init` makes one",
        ),
    }
}

/// `POST /v1/cluster/apply`: publishes a manifest version (on the board
/// that made the cluster).
pub(crate) async fn apply(
    State(state): State<Arc<ApiState>>,
    axum::Json(request): axum::Json<ClusterApply>,
) -> Response {
    use fogwire_cluster::manifest::ApplyError;
    match state
        .node
        .cluster()
        .apply(request.manifest.into_bytes())
        .await
    {
        Ok(_) => axum::Json(state.node.cluster().status()).into_response(),
        Err(failure) => {
            let status = match failure {
                ApplyError::Invalid(_) | ApplyError::NotText => StatusCode::BAD_REQUEST,
                ApplyError::NotOwner => StatusCode::FORBIDDEN,
                ApplyError::NoCluster => StatusCode::CONFLICT,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(status, failure.to_string())
        }
    }
}

/// `POST /v1/cluster/join`.
pub(crate) async fn join(
    State(state): State<Arc<ApiState>>,
    axum::Json(request): axum::Json<ClusterJoin>,
) -> Response {
    let code = match request.code.parse::<JoinCode>() {
        Ok(code) => code,
        Err(failure) => return error(StatusCode::BAD_REQUEST, failure.to_string()),
    };
    match state.node.cluster().join(code).await {
        Ok(()) => axum::Json(state.node.cluster().status()).into_response(),
        Err(failure) => refused(failure),
    }
}

fn peering_view(linked: &[String], cluster: NodeId, peering: &Peering) -> ClusterPeering {
    let boards = peering.their_boards();
    ClusterPeering {
        cluster: fogwire_cluster::proto::ClusterId::from_key(cluster).to_string(),
        state: match peering.state {
            PeeringState::Requested => "requested",
            PeeringState::Asked => "asked",
            PeeringState::Peered => "peered",
        }
        .to_owned(),
        requester: peering
            .requester
            .and_then(|node| NodeId::from_bytes(&node).ok())
            .map(|node| node.to_string()),
        linked: boards
            .iter()
            .filter(|board| linked.contains(&board.node.to_string()))
            .count(),
        boards: boards.iter().map(|board| board.node.to_string()).collect(),
        since_unix_ms: peering.at_ms,
    }
}

/// The nodes this one has a link to.
fn linked(state: &ApiState) -> Vec<String> {
    state
        .node
        .peers()
        .into_iter()
        .filter(|peer| matches!(peer.state, fogwire_api::PeerState::Linked))
        .map(|peer| peer.node_id)
        .collect()
}

fn peering_refused(failure: MsgError) -> Response {
    let status = match &failure {
        MsgError::Peering(PeeringError::NoCluster | PeeringError::Full) => StatusCode::CONFLICT,
        MsgError::Peering(PeeringError::NotOwner) => StatusCode::FORBIDDEN,
        MsgError::Peering(PeeringError::Itself) => StatusCode::BAD_REQUEST,
        MsgError::Peering(PeeringError::NotFound(_) | PeeringError::NotAsked(_)) => {
            StatusCode::NOT_FOUND
        }
        MsgError::Peering(PeeringError::Unreachable { .. }) => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, failure.to_string())
}

/// The messenger and the other cluster a peering request names.
fn peer_target<'a>(
    state: &'a ApiState,
    request: &ClusterPeer,
) -> Result<(&'a fogwire_msg::Messenger, NodeId), Box<Response>> {
    let messenger = state.node.messenger().ok_or_else(|| {
        Box::new(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node runs no messenger",
        ))
    })?;
    let cluster: fogwire_cluster::proto::ClusterId = request.cluster.trim().parse().map_err(
        |failure: fogwire_cluster::proto::ParseClusterError| {
            Box::new(error(StatusCode::BAD_REQUEST, failure.to_string()))
        },
    )?;
    Ok((messenger, cluster.key()))
}

/// `POST /v1/cluster/peer`: asks another cluster's owner to peer.
pub(crate) async fn peer(
    State(state): State<Arc<ApiState>>,
    axum::Json(request): axum::Json<ClusterPeer>,
) -> Response {
    peering(&state, &request, false).await
}

/// `POST /v1/cluster/peer/accept`: agrees to another cluster's request.
pub(crate) async fn accept(
    State(state): State<Arc<ApiState>>,
    axum::Json(request): axum::Json<ClusterPeer>,
) -> Response {
    peering(&state, &request, true).await
}

async fn peering(state: &ApiState, request: &ClusterPeer, accept: bool) -> Response {
    let (messenger, cluster) = match peer_target(state, request) {
        Ok(target) => target,
        Err(response) => return *response,
    };
    let result = if accept {
        messenger.peer_accept(cluster).await
    } else {
        messenger.peer_request(cluster).await
    };
    match result {
        Ok(peering) => axum::Json(peering_view(&linked(state), cluster, &peering)).into_response(),
        Err(failure) => peering_refused(failure),
    }
}

/// `GET /v1/cluster/peers`.
pub(crate) async fn peers(State(state): State<Arc<ApiState>>) -> Response {
    let Some(messenger) = state.node.messenger() else {
        return axum::Json(ClusterPeerings {
            peerings: Vec::new(),
        })
        .into_response();
    };
    match messenger.peerings().await {
        Ok(peerings) => axum::Json(ClusterPeerings {
            peerings: peerings
                .iter()
                .map(|(cluster, peering)| peering_view(&linked(&state), *cluster, peering))
                .collect(),
        })
        .into_response(),
        Err(failure) => peering_refused(failure),
    }
}
