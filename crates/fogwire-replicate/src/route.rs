//! Replication with nodes that are not neighbours, over streams on routes
//! to their `store` service: served here for nodes that reach this one,
//! and opened from here for `store get --from` and a feed's named holder.

use std::sync::Arc;

use fogwire_identity::NodeId;
use fogwire_route::{Constraints, Opened, RouteError, Routing};

use crate::{Inner, Replication, RoutePeer, RouteRefused, STORE_SERVICE};

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

/// Serves nodes that reach this one over routes: each stream to the
/// `store` service replicates like a link.
pub(crate) async fn serve(replication: Replication) {
    let inner = replication.inner.clone();
    let mut incoming = inner.routing.serve(STORE_SERVICE);
    loop {
        let stream = tokio::select! {
            stream = incoming.recv() => stream,
            () = inner.shutdown.cancelled() => None,
        };
        let Some(stream) = stream else { break };
        let peer = stream.peer();
        if let Err(refused) = replication.route_up(stream) {
            tracing::debug!(%peer, %refused, "store stream over a route refused");
        }
    }
}

/// Opens a route to `node` and replicates with its store over a stream
/// to its `store` service. None when `node` is already a replicating
/// neighbour (its link serves).
pub(crate) async fn open(
    inner: &Arc<Inner>,
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
