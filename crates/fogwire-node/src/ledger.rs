//! The node's ledger: the service, if this node runs it, and how every
//! node reaches it — the designated node if configured, else the node
//! that advertises `rpc:ledger` — with a [`Wallet`] signing with this
//! node's key.

use std::sync::{Arc, Weak};
use std::time::Duration;

use fogwire_identity::NodeId;
use fogwire_ledger::client::{LedgerClient, Transport, Wallet};
use fogwire_ledger::proto::Genesis;
use fogwire_ledger::{LEDGER, LedgerService};
use fogwire_rpc::{BoxFuture, RpcError};
use fogwire_rpc_proto::Value;

use crate::Node;
use crate::node::Inner;

/// The ledger this node uses, or runs.
#[derive(Debug, Clone, Default)]
pub struct LedgerOptions {
    /// Run the ledger here, created with this genesis if it is new.
    pub serve: Option<Genesis>,
    /// The node that runs it; none: this one if it serves, else the node
    /// that advertises it.
    pub node: Option<NodeId>,
}

/// How long a ledger call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Calls to the ledger from this node.
struct NodeTransport {
    inner: Weak<Inner>,
    configured: Option<NodeId>,
}

impl Transport for NodeTransport {
    fn call(&self, method: u64, args: Vec<Value>) -> BoxFuture<Result<Vec<Vec<Value>>, RpcError>> {
        let node = self.inner.upgrade().map(|inner| Node { inner });
        let configured = self.configured;
        Box::pin(async move {
            let node = node.ok_or(RpcError::Stopped)?;
            let peer = match configured {
                Some(peer) => peer,
                None => node.find_ledger().await.ok_or_else(|| RpcError::Remote {
                    code: fogwire_rpc_proto::code::UNKNOWN,
                    message: "no node advertises the ledger yet: link to the network, or set \
                              [ledger] node"
                        .into(),
                })?,
            };
            node.fabric()
                .call(peer, LEDGER, method, args, CALL_TIMEOUT)
                .await
        })
    }
}

/// The node's ledger parts.
pub(crate) struct LedgerParts {
    pub(crate) service: Option<LedgerService>,
    /// The ledger node named in the settings (or this one, if it serves).
    pub(crate) configured: Option<NodeId>,
    pub(crate) wallet: Arc<Wallet>,
    pub(crate) client: LedgerClient,
}

impl std::fmt::Debug for LedgerParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerParts")
            .field("serves", &self.service.is_some())
            .finish_non_exhaustive()
    }
}

/// Starts the ledger service if this node runs it, and the client.
pub(crate) fn start(
    node: &Node,
    options: &LedgerOptions,
    path: &std::path::Path,
) -> Result<LedgerParts, crate::NodeError> {
    let service = match &options.serve {
        Some(genesis) => {
            let service = LedgerService::open(path, genesis)
                .map_err(|e| crate::NodeError::Ledger(e.to_string()))?;
            node.rpc().serve(LEDGER, Arc::new(service.clone()));
            Some(service)
        }
        None => None,
    };
    let configured = options
        .node
        .or_else(|| service.as_ref().map(|_| node.node_id()));
    let client = match &service {
        // The ledger's own node calls it directly.
        Some(service) if configured == Some(node.node_id()) => {
            LedgerClient::new(Arc::new(service.clone()))
        }
        _ => LedgerClient::new(Arc::new(NodeTransport {
            inner: Arc::downgrade(&node.inner),
            configured,
        })),
    };
    let wallet = Arc::new(Wallet::new(client.clone(), node.inner_keypair()));
    Ok(LedgerParts {
        service,
        configured,
        wallet,
        client,
    })
}

impl Node {
    /// The node that advertises the ledger, if any does.
    pub async fn find_ledger(&self) -> Option<NodeId> {
        let mut found = self.fabric().locate(LEDGER).await;
        found.sort();
        found.into_iter().next()
    }

    /// The node that runs the ledger: the one configured, else the one
    /// that advertises it.
    pub async fn ledger_node(&self) -> Option<NodeId> {
        match self.inner.ledger.get().and_then(|parts| parts.configured) {
            Some(node) => Some(node),
            None => self.find_ledger().await,
        }
    }

    /// The ledger service, if this node runs it.
    pub fn ledger_service(&self) -> Option<&LedgerService> {
        self.inner
            .ledger
            .get()
            .and_then(|parts| parts.service.as_ref())
    }

    /// Reads and raw submissions to the ledger, wherever it runs.
    pub fn ledger(&self) -> Option<&LedgerClient> {
        self.inner.ledger.get().map(|parts| &parts.client)
    }

    /// Transactions signed with this node's key.
    pub fn wallet(&self) -> Option<Arc<Wallet>> {
        self.inner.ledger.get().map(|parts| parts.wallet.clone())
    }
}

/// A hub's payments, signed with this node's key.
pub(crate) struct NodePayments {
    pub(crate) wallet: Arc<Wallet>,
    pub(crate) client: LedgerClient,
}

fn pay_error(error: fogwire_ledger::client::ClientError) -> fogwire_compute::PayError {
    match &error {
        fogwire_ledger::client::ClientError::NoEscrow(_) => fogwire_compute::PayError::Closed,
        fogwire_ledger::client::ClientError::Refused(why) => {
            fogwire_compute::PayError::Refused(why.clone())
        }
        _ => fogwire_compute::PayError::Other(error.to_string()),
    }
}

impl fogwire_compute::Payments for NodePayments {
    fn escrow(
        &self,
        id: [u8; 32],
    ) -> BoxFuture<Result<Option<fogwire_compute::EscrowView>, String>> {
        let client = self.client.clone();
        Box::pin(async move {
            let escrow = client
                .escrow(&fogwire_ledger::proto::Id(id))
                .await
                .map_err(|e| e.to_string())?;
            Ok(escrow.map(|e| fogwire_compute::EscrowView {
                owner: e.owner.0,
                arbiter: e.arbiter.0,
                amount: e.amount,
            }))
        })
    }

    fn release(
        &self,
        id: [u8; 32],
        payouts: Vec<([u8; 32], u64)>,
    ) -> BoxFuture<Result<(), fogwire_compute::PayError>> {
        let wallet = self.wallet.clone();
        Box::pin(async move {
            let op = fogwire_ledger::proto::Op::Release {
                id: fogwire_ledger::proto::Id(id),
                payouts: payouts
                    .into_iter()
                    .map(|(to, amount)| (fogwire_ledger::proto::Id(to), amount))
                    .collect(),
            };
            wallet.send(op).await.map(|_| ()).map_err(pay_error)
        })
    }

    fn refund(&self, id: [u8; 32]) -> BoxFuture<Result<(), fogwire_compute::PayError>> {
        let wallet = self.wallet.clone();
        Box::pin(async move {
            let op = fogwire_ledger::proto::Op::Refund {
                id: fogwire_ledger::proto::Id(id),
            };
            wallet.send(op).await.map(|_| ()).map_err(pay_error)
        })
    }

    fn slash(&self, worker: [u8; 32], amount: u64) -> BoxFuture<Result<(), String>> {
        let wallet = self.wallet.clone();
        Box::pin(async move {
            let op = fogwire_ledger::proto::Op::DepositSlash {
                worker: fogwire_ledger::proto::Id(worker),
                amount,
            };
            wallet.send(op).await.map(|_| ()).map_err(|e| e.to_string())
        })
    }
}
