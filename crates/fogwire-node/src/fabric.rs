//! How the node's services reach other nodes (`fogwire-compute`'s
//! [`Fabric`]): RPC calls that link on demand to nodes that are not
//! neighbours (by the addresses in their signed adverts) or go over a
//! route, fetches into this node's store, and the nodes that offer a
//! service.

use std::sync::Arc;
use std::time::Duration;

use fogwire_compute::{Fabric, FetchFailed, store_hash};
use fogwire_compute_proto::Digest;
use fogwire_identity::NodeId;
use fogwire_link::PeerAddr;
use fogwire_replicate::Replication;
use fogwire_route::Routing;
use fogwire_rpc::{BoxFuture, Rpc, RpcError};
use fogwire_rpc_proto::Value;
use fogwire_store::Store;

use crate::links::{LinkError, Links};

/// Why a node could not be linked to on demand.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum LinkToError {
    #[error(transparent)]
    Routing(#[from] fogwire_route::RouteError),
    #[error("{} is not linked, and no advert of it names an address", .0.short())]
    NotAdvertised(NodeId),
    #[error("{} advertises no address", .0.short())]
    NoAddress(NodeId),
    #[error("{address}: {source}")]
    Dial {
        address: String,
        #[source]
        source: LinkError,
    },
}

/// The node as its services see it: handles on the subsystems, no more.
#[derive(Debug, Clone)]
pub(crate) struct NodeFabric {
    pub(crate) links: Links,
    pub(crate) routing: Routing,
    pub(crate) rpc: Rpc,
    pub(crate) replication: Replication,
    pub(crate) store: Arc<Store>,
    pub(crate) id: NodeId,
}

impl NodeFabric {
    /// A link to `peer`: the one up, else a new one to an address its
    /// advert names.
    pub(crate) async fn link_to(&self, peer: NodeId) -> Result<(), LinkToError> {
        if peer == self.id || self.links.link(&peer).is_some() {
            return Ok(());
        }
        let nodes = self.routing.nodes().await?;
        let Some(info) = nodes.into_iter().find(|info| info.advert.origin == peer) else {
            return Err(LinkToError::NotAdvertised(peer));
        };
        let mut last = LinkToError::NoAddress(peer);
        for address in &info.advert.addresses {
            let addr = PeerAddr::tcp(peer, address.clone());
            match self.links.connect(addr).await {
                Ok(_) => return Ok(()),
                Err(source) => {
                    last = LinkToError::Dial {
                        address: address.clone(),
                        source,
                    }
                }
            }
        }
        Err(last)
    }
}

impl Fabric for NodeFabric {
    fn node_id(&self) -> NodeId {
        self.id
    }

    fn store(&self) -> Arc<Store> {
        self.store.clone()
    }

    fn call(
        &self,
        peer: NodeId,
        service: &'static str,
        method: u64,
        args: Vec<Value>,
        timeout: Duration,
    ) -> BoxFuture<Result<Vec<Vec<Value>>, RpcError>> {
        let this = self.clone();
        Box::pin(async move {
            if let Err(why) = this.link_to(peer).await
                && !this.rpc.is_connected(&peer)
            {
                // No direct link: over a route, if one can be set up.
                tracing::debug!(%peer, %why, "no link for an RPC call: trying a route");
                if let Err(error) = this.rpc.open_route(peer).await {
                    tracing::debug!(%peer, %error, "no route for an RPC call either");
                    return Err(RpcError::NotLinked(peer));
                }
            }
            this.rpc
                .request(peer, service, method, args, Some(timeout))
                .await
        })
    }

    fn fetch(&self, hash: Digest, holders: Vec<NodeId>) -> BoxFuture<Result<(), FetchFailed>> {
        let this = self.clone();
        Box::pin(async move {
            for holder in &holders {
                if let Err(why) = this.link_to(*holder).await {
                    tracing::debug!(%holder, %why, "cannot link to a holder");
                }
            }
            this.replication
                .fetch(store_hash(&hash), None, None)
                .await
                .map(|_| ())
                .map_err(|source| FetchFailed {
                    hash,
                    source: Box::new(source),
                })
        })
    }

    fn locate(&self, service: &'static str) -> BoxFuture<Vec<NodeId>> {
        let rpc = self.rpc.clone();
        Box::pin(async move { rpc.locate(service).await.0 })
    }
}
