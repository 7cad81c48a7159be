//! The link manager lives in `fogwire_link::manager`; this is how the
//! cluster dials through it.

use std::net::SocketAddr;

use fogwire_identity::NodeId;
use fogwire_link::PeerAddr;

pub use fogwire_link::manager::{LinkError, LinkLimits, Links, NodeEvent, SHUTDOWN_TIMEOUT};

/// How the cluster asks for a link to a member: one attempt at one
/// address, not kept (membership decides when to try again). Set once the
/// link manager runs.
#[derive(Default)]
pub(crate) struct ClusterDialer(std::sync::OnceLock<Links>);

impl ClusterDialer {
    pub(crate) fn set(&self, links: Links) {
        let _ = self.0.set(links);
    }
}

impl fogwire_cluster::Dialer for ClusterDialer {
    fn dial(
        &self,
        node: NodeId,
        addr: SocketAddr,
    ) -> fogwire_cluster::BoxFuture<Result<(), String>> {
        let links = self.0.get().cloned();
        Box::pin(async move {
            let links = links.ok_or("the link manager has not started")?;
            if links.link(&node).is_some() {
                return Ok(());
            }
            let addr = PeerAddr::tcp(node, addr.to_string());
            links.dial(&addr).await.map(drop).map_err(|e| e.to_string())
        })
    }
}
