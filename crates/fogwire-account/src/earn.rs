//! How a node earns for forwarding, serving and holding mail: every few
//! seconds it redeems in the ledger the relay receipts its routes'
//! sources signed for it, the serving receipts nodes that fetched from
//! it signed, and the storage receipts of the owners whose mail it held;
//! and, as a fetcher, it signs serving receipts for the nodes it fetched
//! from and hands each its own over RPC (the `receipts` service).
//!
//! Receipts are cumulative, so only the latest of each route or fetcher
//! is redeemed; the ledger pays what it adds to the last one redeemed,
//! and refuses a receipt redeemed already.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fogwire_compute::Fabric;
use fogwire_identity::{Keypair, NodeId};
use fogwire_ledger::client::{ClientError, Wallet};
use fogwire_ledger::proto::Op;
use fogwire_ledger::proto::receipt::{self, ReceiptKind, ServeReceipt};
use fogwire_replicate::Replication;
use fogwire_route::Routing;
use fogwire_rpc::{BoxFuture, Replier, Rpc, Service};
use fogwire_rpc_proto::{Value, code};
use tokio_util::sync::CancellationToken;

/// How often receipts are signed, handed over and redeemed.
pub const EVERY: Duration = Duration::from_secs(5);
/// The receipts service's name: nodes hand serving receipts to the nodes
/// they fetched from.
pub const RECEIPTS: &str = "receipts";
/// Most fetchers' receipts a server keeps waiting for redemption.
const WAITING_MAX: usize = 65_536;

/// A receipt's kind, payer and channel.
type Waiting = (ReceiptKind, [u8; 32], [u8; 16]);

/// Receipts waiting to be redeemed, and what this node last signed.
#[derive(Debug, Default)]
struct Earnings {
    /// Receipts to redeem: the latest (its byte count and wire form) of
    /// each kind, payer and channel.
    waiting: Mutex<HashMap<Waiting, (u64, Vec<u8>)>>,
    /// Bytes this node has signed for, by server.
    signed: Mutex<HashMap<NodeId, u64>>,
}

impl Earnings {
    fn keep(&self, kind: ReceiptKind, bytes: Vec<u8>) -> Result<(), String> {
        let claim = receipt::read(kind, &bytes).map_err(|e| e.to_string())?;
        let mut waiting = self.waiting.lock().map_err(|_| "poisoned")?;
        let key = (kind, claim.payer.0, claim.channel);
        let newer = waiting
            .get(&key)
            .is_none_or(|(seen, _)| claim.bytes > *seen);
        if newer && (waiting.len() < WAITING_MAX || waiting.contains_key(&key)) {
            waiting.insert(key, (claim.bytes, bytes));
        }
        Ok(())
    }
}

/// The `receipts` service: takes a serving receipt for this node.
struct ReceiptsService {
    node: NodeId,
    earnings: Arc<Earnings>,
}

impl Service for ReceiptsService {
    fn methods(&self) -> &[&'static str] {
        &["serve"]
    }

    fn call(&self, _method: u64, args: Vec<Value>, reply: Replier) -> BoxFuture<()> {
        let result = (|| {
            let Some(Value::Binary(bytes)) = args.into_iter().next() else {
                return Err("serve takes one argument: a serving receipt (bin)".to_owned());
            };
            let claim = receipt::verify(ReceiptKind::Serving, &bytes).map_err(|e| e.to_string())?;
            if claim.payee.0 != *self.node.as_bytes() {
                return Err("that receipt pays another node".into());
            }
            self.earnings.keep(ReceiptKind::Serving, bytes)
        })();
        Box::pin(async move {
            let mut reply = reply;
            match result {
                Ok(()) => {
                    reply.chunk(vec![Value::Boolean(true)]).await;
                    reply.choke().await;
                }
                Err(message) => reply.error(code::BAD_ARGS, &message).await,
            }
        })
    }
}

/// What a node earns with: where receipts come from, where they go.
pub struct Earner {
    pub key: Arc<Keypair>,
    pub routing: Routing,
    pub replication: Replication,
    pub fabric: Arc<dyn Fabric>,
    pub wallet: Arc<Wallet>,
    /// Told who paid: a payer's link keeps its slot before others'.
    pub payers: fogwire_link::slots::Payers,
    /// This node's exit, whose clients' receipts it redeems.
    pub exit: Option<fogwire_exit::Exit>,
    /// This node's messenger, whose mailbox owners' receipts it redeems.
    pub messenger: Option<fogwire_msg::Messenger>,
}

impl std::fmt::Debug for Earner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Earner").finish_non_exhaustive()
    }
}

impl Earner {
    /// Serves the `receipts` service on `rpc` and then signs, hands over
    /// and redeems receipts every few seconds until `shutdown`.
    pub async fn run(self, rpc: Rpc, shutdown: CancellationToken) {
        let earnings = Arc::new(Earnings::default());
        rpc.serve(
            RECEIPTS,
            Arc::new(ReceiptsService {
                node: self.key.node_id(),
                earnings: earnings.clone(),
            }),
        );
        loop {
            self.round(&earnings).await;
            tokio::select! {
                () = tokio::time::sleep(EVERY) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    async fn round(&self, earnings: &Earnings) {
        // Relay receipts this node received as a relay.
        if let Ok(receipts) = self.routing.take_receipts().await {
            for bytes in receipts {
                let _ = earnings.keep(ReceiptKind::Forwarding, bytes);
            }
        }
        // Exit receipts its clients sent it (checked as they came).
        if let Some(exit) = &self.exit {
            for bytes in exit.take_receipts() {
                let _ = earnings.keep(ReceiptKind::Exit, bytes);
            }
        }
        // Storage receipts the owners of mail it held signed it.
        if let Some(messenger) = &self.messenger {
            for bytes in messenger.take_mailbox_receipts() {
                let _ = earnings.keep(ReceiptKind::Mailbox, bytes);
            }
        }
        self.hand_over(earnings).await;
        self.redeem(earnings).await;
    }
    /// Signs serving receipts for what this node fetched, and hands each to
    /// its server.
    async fn hand_over(&self, earnings: &Earnings) {
        let key = &self.key;
        let now = fogwire_compute::unix_ms();
        for peer in self.replication.peers() {
            let done = earnings
                .signed
                .lock()
                .map(|signed| signed.get(&peer.peer).copied().unwrap_or(0))
                .unwrap_or(0);
            if peer.fetched_bytes <= done {
                continue;
            }
            let bytes = ServeReceipt {
                server: peer.peer,
                seq: now,
                bytes: peer.fetched_bytes,
                issued_at_ms: now,
            }
            .sign(key);
            let answer = self
                .fabric
                .call(
                    peer.peer,
                    RECEIPTS,
                    0,
                    vec![Value::Binary(bytes)],
                    Duration::from_secs(5),
                )
                .await;
            match answer {
                Ok(_) => {
                    if let Ok(mut signed) = earnings.signed.lock() {
                        signed.insert(peer.peer, peer.fetched_bytes);
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, peer = %peer.peer.short(), "cannot hand over a serving receipt")
                }
            }
        }
    }

    /// Redeems what waits; keeps what the ledger could not be asked about.
    async fn redeem(&self, earnings: &Earnings) {
        let wallet = &self.wallet;
        let waiting: Vec<_> = earnings
            .waiting
            .lock()
            .map(|mut waiting| waiting.drain().collect())
            .unwrap_or_default();
        for (key, (bytes_count, bytes)) in waiting {
            let op = Op::Redeem {
                kind: key.0,
                receipt: bytes.clone(),
            };
            match wallet.send(op.clone()).await {
                Ok(receipt) => {
                    tracing::info!(
                        index = receipt.index,
                        "ledger: {}",
                        fogwire_ledger::describe(&op)
                    );
                    if let Ok(payer) = NodeId::from_bytes(&key.1) {
                        self.payers.paid(payer, std::time::Instant::now());
                    }
                }
                Err(ClientError::Refused(why)) => {
                    tracing::debug!(%why, "a receipt was not redeemed");
                }
                Err(error) => {
                    tracing::debug!(%error, "cannot redeem now; will try again");
                    if let Ok(mut waiting) = earnings.waiting.lock() {
                        waiting.entry(key).or_insert((bytes_count, bytes));
                    }
                }
            }
        }
    }
}
