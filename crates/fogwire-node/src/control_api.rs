//! The node as the control API sees it (`fogwire-control`'s [`NodeApi`]).

use std::sync::Arc;

use fogwire_compute::Fabric;
use fogwire_control::{BoxFuture, ConnectError, NodeApi};
use fogwire_identity::NodeId;
use fogwire_ledger::client::{LedgerClient, Wallet};
use fogwire_link::PeerAddr;
use fogwire_replicate::Replication;
use fogwire_route::Routing;
use fogwire_rpc::Rpc;
use fogwire_store::Store;

use crate::{Node, NodeError};

impl NodeApi for Node {
    fn node_id(&self) -> NodeId {
        Node::node_id(self)
    }

    fn status(&self) -> fogwire_api::Status {
        Node::status(self)
    }

    fn peers(&self) -> Vec<fogwire_api::Peer> {
        Node::peers(self)
    }

    fn connect(&self, peer: PeerAddr) -> BoxFuture<'_, Result<(), ConnectError>> {
        Box::pin(async move {
            match Node::connect(self, peer).await {
                Ok(_) => Ok(()),
                Err(NodeError::SelfConnect) => Err(ConnectError::SelfConnect),
                Err(error) => Err(ConnectError::Failed(Box::new(error))),
            }
        })
    }

    fn disconnect(&self, peer: NodeId) -> BoxFuture<'_, Option<bool>> {
        Box::pin(async move {
            let was_linked = self.link(&peer).is_some();
            Node::disconnect(self, &peer).await.then_some(was_linked)
        })
    }

    fn metrics_text(&self) -> String {
        Node::metrics_text(self)
    }

    fn routing(&self) -> &Routing {
        Node::routing(self)
    }

    fn store(&self) -> &Arc<Store> {
        Node::store(self)
    }

    fn replication(&self) -> &Replication {
        Node::replication(self)
    }

    fn rpc(&self) -> &Rpc {
        Node::rpc(self)
    }

    fn fabric(&self) -> Arc<dyn Fabric> {
        Node::fabric(self)
    }

    fn ledger(&self) -> Option<&LedgerClient> {
        Node::ledger(self)
    }

    fn ledger_node(&self) -> BoxFuture<'_, Option<NodeId>> {
        Box::pin(Node::ledger_node(self))
    }

    fn wallet(&self) -> Option<Arc<Wallet>> {
        Node::wallet(self)
    }

    fn hubs(&self) -> Vec<fogwire_api::HubView> {
        Node::hubs(self)
    }
}
