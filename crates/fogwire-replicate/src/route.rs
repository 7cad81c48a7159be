//! Replication with nodes that are not neighbours, over streams on routes
//! to their `store` service: served here for nodes that reach this one,
//! and opened from here for `store get --from` and a feed's named holder.

use std::sync::Arc;

use fogwire_identity::NodeId;
use fogwire_route::services::BoxFuture;
use fogwire_route::{Constraints, Opened, RouteError, RouteStream, Routing, Service};

use crate::{Replication, ReplicationState, RoutePeer, RouteRefused, STORE_SERVICE};

/// Why a store route to a node could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreRouteError {
    #[error("no route to {node} for the store: {source}")]
    Route {
        node: NodeId,
        #[source]
        source: RouteError,
    },
    #[error(transparent)]
    Refused(#[from] RouteRefused),
}

/// A route to a far node whose store this node replicates with (fetches
/// ask it too) until [`StoreRoute::close`].
#[derive(Debug)]
pub struct StoreRoute {
    pub route: Opened,
    peer: RoutePeer,
    routing: Routing,
}

impl StoreRoute {
    /// Ends replication over the route and closes the route.
    pub async fn close(self) {
        self.peer.close();
        let _ = self.routing.close(self.route.route).await;
    }
}

/// The `store` route service: nodes that reach this one over routes
/// replicate over each stream as over a link.
pub(crate) struct StoreService(pub(crate) Replication);

impl Service for StoreService {
    fn accept(&self, stream: RouteStream) -> BoxFuture<()> {
        let peer = stream.peer();
        if let Err(refused) = self.0.route_up(stream) {
            tracing::debug!(%peer, %refused, "store stream over a route refused");
        }
        Box::pin(std::future::ready(()))
    }
}

/// Opens a route to `node` and replicates with its store over a stream
/// to its `store` service. None when `node` is already a replicating
/// neighbour (its link serves).
pub(crate) async fn open(
    inner: &Arc<ReplicationState>,
    node: NodeId,
) -> Result<Option<StoreRoute>, StoreRouteError> {
    let replication = Replication {
        inner: inner.clone(),
    };
    if replication.is_peer(node) {
        return Ok(None);
    }
    let routing = inner.routing.clone();
    let route_error = |source| StoreRouteError::Route { node, source };
    let opened = routing
        .open(node, Constraints::default())
        .await
        .map_err(route_error)?;
    let stream = match routing.connect(opened.route, STORE_SERVICE).await {
        Ok(stream) => stream,
        Err(source) => {
            let _ = routing.close(opened.route).await;
            return Err(route_error(source));
        }
    };
    match replication.route_up(stream) {
        Ok(peer) => Ok(Some(StoreRoute {
            route: opened,
            peer,
            routing,
        })),
        Err(RouteRefused::Neighbour(_)) => {
            let _ = routing.close(opened.route).await;
            Ok(None)
        }
        Err(refused) => {
            let _ = routing.close(opened.route).await;
            Err(refused.into())
        }
    }
}

impl Replication {
    /// Opens a route to `node` and replicates with its store over it, so
    /// fetches ask it too, until [`StoreRoute::close`]. None when `node`
    /// is already a replicating neighbour (its link serves).
    pub async fn open_route(&self, node: NodeId) -> Result<Option<StoreRoute>, StoreRouteError> {
        open(&self.inner, node).await
    }
}
