//! The node's ledger: the service, if this node runs it, and how every
//! node reaches it — the designated node if configured, else the node
//! that advertises `rpc:ledger` — with a [`Wallet`] signing with this
//! node's key.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fogwire_compute::Fabric;
use fogwire_identity::{Keypair, NodeId};
use fogwire_ledger::Coins;
use fogwire_ledger::client::{LedgerClient, Transport, Wallet};
use fogwire_ledger::proto::Genesis;
use fogwire_ledger::service::OpenError;
use fogwire_ledger::{LEDGER, LedgerService};
use fogwire_rpc::{BoxFuture, Rpc, RpcError};
use fogwire_rpc_proto::Value;
use serde::Deserialize;
use smart_default::SmartDefault;

/// The ledger this node uses, or runs.
#[derive(Debug, Clone, Default)]
pub struct LedgerOptions {
    /// Run the ledger here, created with this genesis if it is new.
    pub serve: Option<Genesis>,
    /// The node that runs it; none: this one if it serves, else the node
    /// that advertises it.
    pub node: Option<NodeId>,
}

impl LedgerOptions {
    /// What the node's advert says of the ledger: that it serves it.
    pub fn advertised(&self) -> Vec<String> {
        self.serve
            .iter()
            .map(|_| fogwire_rpc::locator::advertised(LEDGER))
            .collect()
    }
}

/// How long a ledger call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The node that advertises the ledger, if any does.
async fn find(fabric: &dyn Fabric) -> Option<NodeId> {
    let mut found = fabric.locate(LEDGER).await;
    found.sort();
    found.into_iter().next()
}

/// Calls to the ledger from this node, through its fabric.
struct FabricTransport {
    fabric: Arc<dyn Fabric>,
    configured: Option<NodeId>,
}

impl Transport for FabricTransport {
    fn call(&self, method: u64, args: Vec<Value>) -> BoxFuture<Result<Vec<Vec<Value>>, RpcError>> {
        let fabric = self.fabric.clone();
        let configured = self.configured;
        Box::pin(async move {
            let peer = match configured {
                Some(peer) => peer,
                None => find(fabric.as_ref())
                    .await
                    .ok_or_else(|| RpcError::Remote {
                        code: fogwire_rpc_proto::code::UNKNOWN,
                        message: "no node advertises the ledger yet: link to the network, or set \
                                  [ledger] node"
                            .into(),
                    })?,
            };
            fabric.call(peer, LEDGER, method, args, CALL_TIMEOUT).await
        })
    }
}

/// The node's ledger: the service if it runs it, the client and wallet
/// every node has.
pub struct Ledger {
    service: Option<LedgerService>,
    /// The ledger node named in the settings (or this one, if it serves).
    configured: Option<NodeId>,
    wallet: Arc<Wallet>,
    client: LedgerClient,
    fabric: Arc<dyn Fabric>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("serves", &self.service.is_some())
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// Starts the ledger service on `rpc` if this node runs it (its log
    /// at `path`), and the client every node has, signing with `key`.
    pub fn start(
        options: &LedgerOptions,
        path: &Path,
        rpc: &Rpc,
        fabric: Arc<dyn Fabric>,
        key: Arc<Keypair>,
    ) -> Result<Ledger, OpenError> {
        let me = key.node_id();
        let service = match &options.serve {
            Some(genesis) => {
                let service = LedgerService::open(path, genesis)?;
                rpc.serve(LEDGER, Arc::new(service.clone()));
                Some(service)
            }
            None => None,
        };
        let configured = options.node.or_else(|| service.as_ref().map(|_| me));
        let client = match &service {
            // The ledger's own node calls it directly.
            Some(service) if configured == Some(me) => LedgerClient::new(Arc::new(service.clone())),
            _ => LedgerClient::new(Arc::new(FabricTransport {
                fabric: fabric.clone(),
                configured,
            })),
        };
        let wallet = Arc::new(Wallet::new(client.clone(), key));
        Ok(Ledger {
            service,
            configured,
            wallet,
            client,
            fabric,
        })
    }

    /// The node that runs the ledger: the one configured, else the one
    /// that advertises it.
    pub async fn node(&self) -> Option<NodeId> {
        match self.configured {
            Some(node) => Some(node),
            None => find(self.fabric.as_ref()).await,
        }
    }

    /// The ledger service, if this node runs it.
    pub fn service(&self) -> Option<&LedgerService> {
        self.service.as_ref()
    }

    /// Reads and raw submissions to the ledger, wherever it runs.
    pub fn client(&self) -> &LedgerClient {
        &self.client
    }

    /// Transactions signed with this node's key.
    pub fn wallet(&self) -> &Arc<Wallet> {
        &self.wallet
    }

    /// Balances for a charging exit, read from the ledger.
    pub fn funds(&self) -> Arc<dyn fogwire_exit::Funds> {
        Arc::new(LedgerFunds(self.client.clone()))
    }

    /// A hub's payments, signed with this node's key.
    pub fn payments(&self) -> Arc<dyn fogwire_compute::Payments> {
        Arc::new(NodePayments {
            wallet: self.wallet.clone(),
            client: self.client.clone(),
        })
    }
}

/// Clients' balances, for a charging exit.
struct LedgerFunds(LedgerClient);

impl fogwire_exit::Funds for LedgerFunds {
    fn balance(&self, account: NodeId) -> fogwire_route::services::BoxFuture<Result<u64, String>> {
        let client = self.0.clone();
        Box::pin(async move {
            match client
                .account(&fogwire_ledger::proto::Id(*account.as_bytes()))
                .await
            {
                Ok(view) => Ok(view.account.balance),
                Err(error) => Err(error.to_string()),
            }
        })
    }
}

/// A hub's payments, signed with this node's key.
struct NodePayments {
    wallet: Arc<Wallet>,
    client: LedgerClient,
}

fn pay_error(error: fogwire_ledger::client::ClientError) -> fogwire_compute::PayError {
    match &error {
        fogwire_ledger::client::ClientError::NoEscrow(_) => fogwire_compute::PayError::Closed,
        fogwire_ledger::client::ClientError::Refused(why) => {
            fogwire_compute::PayError::Refused(why.clone())
        }
        _ => fogwire_compute::PayError::Unreachable(error.to_string()),
    }
}

impl fogwire_compute::Payments for NodePayments {
    fn escrow(
        &self,
        id: [u8; 32],
    ) -> BoxFuture<Result<Option<fogwire_compute::EscrowView>, fogwire_compute::PayError>> {
        let client = self.client.clone();
        Box::pin(async move {
            let escrow = client
                .escrow(&fogwire_ledger::proto::Id(id))
                .await
                .map_err(pay_error)?;
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

    fn slash(
        &self,
        worker: [u8; 32],
        amount: u64,
    ) -> BoxFuture<Result<(), fogwire_compute::PayError>> {
        let wallet = self.wallet.clone();
        Box::pin(async move {
            let op = fogwire_ledger::proto::Op::DepositSlash {
                worker: fogwire_ledger::proto::Id(worker),
                amount,
            };
            wallet.send(op).await.map(|_| ()).map_err(pay_error)
        })
    }
}

// ----- the `[ledger]` section of a node's configuration file -----

/// `[ledger]`: the ledger this node uses, or runs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerSection {
    /// Run the ledger on this node: it keeps the log in data_dir and
    /// serves every other node.
    pub serve: bool,
    /// The node that runs the ledger; none: the one that advertises it.
    pub node: Option<NodeId>,
    /// At genesis only (when this node first creates its ledger): the
    /// DAO's key and the minting key (none: this node's), and the
    /// accounts that start with coins.
    pub dao: Option<NodeId>,
    pub minter: Option<NodeId>,
    pub genesis: Vec<GenesisAccount>,
    /// The hub wallet rules, also fixed at genesis: the deposit a hub
    /// freezes to register, its pay period, how long the DAO's suspicion
    /// lasts before a ban, how long a worker's deposit stays slashable
    /// after it asks for it back.
    #[default(Coins(default_rules().hub_deposit))]
    pub hub_deposit: Coins,
    #[default(default_rules().pay_period_ms)]
    pub pay_period_ms: u64,
    #[default(default_rules().suspect_ms)]
    pub suspect_ms: u64,
    #[default(default_rules().unbond_ms)]
    pub unbond_ms: u64,
    /// Published prices per GiB, also fixed at genesis: what a route's
    /// source pays its relays, and a fetcher the nodes it fetched from,
    /// when they redeem their receipts.
    #[default(Coins(default_rules().price_per_gib_forwarded))]
    pub price_per_gib_forwarded: Coins,
    #[default(Coins(default_rules().price_per_gib_served))]
    pub price_per_gib_served: Coins,
}

/// The ledger's rules by default (the DAO and minter are set at start).
fn default_rules() -> fogwire_ledger::proto::Rules {
    fogwire_ledger::proto::Rules::new(Default::default(), Default::default())
}

impl LedgerSection {
    /// The node options these settings give, for the node `me`.
    pub fn options(&self, me: NodeId) -> LedgerOptions {
        let me = fogwire_ledger::proto::Id(*me.as_bytes());
        let id = |configured: &Option<NodeId>| {
            configured
                .as_ref()
                .map(|id| fogwire_ledger::proto::Id(*id.as_bytes()))
                .unwrap_or(me)
        };
        let genesis = self.serve.then(|| Genesis {
            rules: fogwire_ledger::proto::Rules {
                hub_deposit: self.hub_deposit.0,
                pay_period_ms: self.pay_period_ms,
                suspect_ms: self.suspect_ms,
                unbond_ms: self.unbond_ms,
                price_per_gib_forwarded: self.price_per_gib_forwarded.0,
                price_per_gib_served: self.price_per_gib_served.0,
                ..fogwire_ledger::proto::Rules::new(id(&self.minter), id(&self.dao))
            },
            accounts: self
                .genesis
                .iter()
                .map(|account| {
                    (
                        fogwire_ledger::proto::Id(*account.account.as_bytes()),
                        account.coins.0,
                    )
                })
                .collect(),
        });
        LedgerOptions {
            serve: genesis,
            node: self.node,
        }
    }
}

/// One account of the ledger's genesis.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisAccount {
    pub account: NodeId,
    pub coins: Coins,
}
