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

use crate::{LinkError, Node, NodeError};

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
                Err(NodeError::Link(LinkError::SelfConnect)) => Err(ConnectError::SelfConnect),
                Err(error) => Err(ConnectError::Failed(Box::new(error))),
            }
        })
    }

    fn direct(&self, peer: NodeId) -> BoxFuture<'_, Result<(), ConnectError>> {
        Box::pin(async move {
            Node::direct(self, peer)
                .await
                .map(drop)
                .map_err(|error| ConnectError::Failed(Box::new(error)))
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

    fn cluster(&self) -> &fogwire_cluster::Cluster {
        Node::cluster(self)
    }

    fn messenger(&self) -> Option<&fogwire_msg::Messenger> {
        Some(Node::messenger(self))
    }

    fn compute_roles(&self) -> fogwire_control::ComputeRoles {
        let runner = self.cluster_services();
        fogwire_control::ComputeRoles {
            worker: Node::worker(self).cloned().or_else(|| runner.worker()),
            hub: Node::hub(self).cloned().or_else(|| runner.hub()),
            market: Node::market(self).cloned().or_else(|| runner.market()),
        }
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
        Some(Node::ledger(self).client())
    }

    fn ledger_node(&self) -> BoxFuture<'_, Option<NodeId>> {
        Box::pin(Node::ledger(self).node())
    }

    fn wallet(&self) -> Option<Arc<Wallet>> {
        Some(Node::ledger(self).wallet().clone())
    }

    fn exit(&self) -> Option<&fogwire_exit::Exit> {
        Node::exit(self)
    }

    fn proxy(&self) -> Option<&fogwire_exit::Proxy> {
        Node::proxy(self)
    }

    fn outbound(&self) -> &Arc<fogwire_exit::Outbound> {
        Node::outbound(self)
    }

    fn vpn(&self) -> &fogwire_vpn::Switch {
        Node::vpn(self)
    }

    fn hubs(&self) -> Vec<fogwire_api::HubView> {
        Node::hubs(self)
            .into_iter()
            .map(|view| fogwire_api::HubView {
                hub: view.hub.to_string(),
                trust: fogwire_account::agent::trust_name(view.trust).to_owned(),
                terms: view.terms,
                payments_to_me: view.payments_to_me,
                unpaid_tasks: view.unpaid_tasks,
                bids: view.bids,
                taken: view.taken,
            })
            .collect()
    }
}
