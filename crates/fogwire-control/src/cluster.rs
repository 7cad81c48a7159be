//! The control API's cluster endpoints: this board's view of its cluster,
//! making a cluster, joining one.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fogwire_api::{ClusterApply, ClusterCreated, ClusterJoin};
use fogwire_cluster::ClusterError;
use fogwire_cluster::proto::JoinCode;

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
