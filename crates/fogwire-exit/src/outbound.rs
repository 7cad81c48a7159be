//! What a node's SOCKS proxies share: the port exits answer UDP on, and
//! what each exit carried for this node — metered, and paid for by
//! receipts this node signs and sends to the exit.
//!
//! A charging exit gives a client a credit of [`crate::pay::CREDIT`]
//! bytes beyond its last receipt; so receipts go out at least every
//! second, and at once when [`RECEIPT_BYTES`] more have been carried,
//! as route datagrams to the exit's [`crate::pay::PAY_PORT`]. They are
//! cumulative: a lost one is made good by the next.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fogwire_identity::{Keypair, NodeId};
use fogwire_ledger::proto::receipt::ExitReceipt;
use fogwire_route::proto::router::RouteId;
use fogwire_route::{Routing, ServiceError};

use crate::proxy_udp::Replies;
use crate::splice::Moved;

/// How often receipts are checked for.
const RECEIPT_TICK: Duration = Duration::from_millis(250);
/// A receipt goes out at least this often while bytes are unreceipted.
const RECEIPT_EVERY: Duration = Duration::from_secs(1);
/// A receipt goes out at once when this many bytes are unreceipted.
pub const RECEIPT_BYTES: u64 = 4 * 1024 * 1024;
/// The last receipt is sent this many more times (a datagram may be
/// lost), one per [`RECEIPT_EVERY`].
const RECEIPT_REPEATS: u32 = 3;
/// Exits metered at once; the one used least recently is forgotten.
const METERS_MAX: usize = 1024;

/// What one exit carried for this node.
pub struct Meter {
    pub(crate) moved: Moved,
    price_per_gib: u64,
    /// A route to the exit, for receipts.
    route: Mutex<RouteId>,
    used: Mutex<Instant>,
    /// The bytes of the last receipt sent, when, its seq, and how many
    /// times it was sent.
    sent: Mutex<(u64, Instant, u64, u32)>,
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter")
            .field("bytes", &self.bytes())
            .finish_non_exhaustive()
    }
}

impl Meter {
    /// Counts `bytes` the exit carried (packets of the VPN, either way).
    pub fn carried(&self, bytes: u64) {
        self.moved.to_socket.fetch_add(bytes, Ordering::Relaxed);
    }

    fn bytes(&self) -> u64 {
        self.moved.to_socket.load(Ordering::Relaxed) + self.moved.to_stream.load(Ordering::Relaxed)
    }
}

/// What an exit carried for this node, and what it was sent receipts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitUsage {
    pub exit: NodeId,
    pub bytes: u64,
    pub price_per_gib: u64,
    pub receipted: u64,
}

/// A node's outbound side. Cheap to share; stops its receipt task when
/// dropped.
pub struct Outbound {
    key: Arc<Keypair>,
    routing: Routing,
    pub(crate) replies: Arc<Replies>,
    meters: Mutex<HashMap<NodeId, Arc<Meter>>>,
    pub(crate) receipts_sent: AtomicU64,
    /// The receipt loop starts with the first charging exit used, so a
    /// node that never pays one never wakes for it.
    receipts_started: std::sync::Once,
    me: Weak<Outbound>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound").finish_non_exhaustive()
    }
}

impl Outbound {
    /// Offers the UDP answers port on `routing`; receipts for the exits
    /// this node uses are signed with `key`.
    pub fn start(key: Arc<Keypair>, routing: Routing) -> Result<Arc<Outbound>, ServiceError> {
        let replies = Arc::new(Replies::default());
        replies.offer(&routing)?;
        Ok(Arc::new_cyclic(|me| Outbound {
            key,
            routing,
            replies,
            meters: Mutex::new(HashMap::new()),
            receipts_sent: AtomicU64::new(0),
            receipts_started: std::sync::Once::new(),
            me: me.clone(),
        }))
    }

    pub(crate) fn routing(&self) -> &Routing {
        &self.routing
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Arc<Meter>>> {
        self.meters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The meter of `exit`, reached over `route` at `price_per_gib`: what
    /// it counts is receipted to the exit if it charges.
    pub fn meter(&self, exit: NodeId, price_per_gib: u64, route: RouteId) -> Arc<Meter> {
        let mut meters = self.lock();
        if let Some(meter) = meters.get(&exit) {
            *meter.route.lock().unwrap_or_else(|p| p.into_inner()) = route;
            *meter.used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
            return meter.clone();
        }
        if meters.len() >= METERS_MAX {
            let oldest = meters
                .iter()
                .min_by_key(|(_, meter)| *meter.used.lock().unwrap_or_else(|p| p.into_inner()))
                .map(|(exit, _)| *exit);
            if let Some(oldest) = oldest {
                meters.remove(&oldest);
            }
        }
        let now = Instant::now();
        let meter = Arc::new(Meter {
            moved: Moved::default(),
            price_per_gib,
            route: Mutex::new(route),
            used: Mutex::new(now),
            sent: Mutex::new((0, now, 0, RECEIPT_REPEATS)),
        });
        meters.insert(exit, meter.clone());
        if price_per_gib > 0 {
            let me = self.me.clone();
            self.receipts_started
                .call_once(|| drop(tokio::spawn(receipt_loop(me))));
        }
        meter
    }

    /// Every exit metered, with what it carried and was receipted.
    pub fn usage(&self) -> Vec<ExitUsage> {
        self.lock()
            .iter()
            .map(|(exit, meter)| ExitUsage {
                exit: *exit,
                bytes: meter.bytes(),
                price_per_gib: meter.price_per_gib,
                receipted: meter.sent.lock().unwrap_or_else(|p| p.into_inner()).0,
            })
            .collect()
    }

    /// Signs and sends the receipts that are due.
    async fn send_due(&self) {
        let due: Vec<(NodeId, Arc<Meter>)> = self
            .lock()
            .iter()
            .filter(|(_, meter)| meter.price_per_gib > 0)
            .map(|(exit, meter)| (*exit, meter.clone()))
            .collect();
        for (exit, meter) in due {
            let bytes = meter.bytes();
            let receipt = {
                let mut sent = meter.sent.lock().unwrap_or_else(|p| p.into_inner());
                let (last_bytes, last_at, last_seq, repeats) = *sent;
                let grown = bytes > last_bytes;
                let due = (grown
                    && (bytes - last_bytes >= RECEIPT_BYTES || last_at.elapsed() >= RECEIPT_EVERY))
                    || (!grown && repeats < RECEIPT_REPEATS && last_at.elapsed() >= RECEIPT_EVERY);
                if !due || bytes == 0 {
                    continue;
                }
                let now_ms = fogwire_env::unix_ms();
                let seq = if grown {
                    now_ms.max(last_seq + 1)
                } else {
                    last_seq
                };
                *sent = (
                    bytes,
                    Instant::now(),
                    seq,
                    if grown { 0 } else { repeats + 1 },
                );
                ExitReceipt {
                    exit,
                    seq,
                    bytes,
                    price_per_gib: meter.price_per_gib,
                    issued_at_ms: now_ms,
                }
                .sign(&self.key)
            };
            let route = *meter.route.lock().unwrap_or_else(|p| p.into_inner());
            if self
                .routing
                .send_datagram(route, crate::pay::PAY_PORT, Bytes::from(receipt))
                .await
                .is_ok()
            {
                self.receipts_sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn receipt_loop(outbound: Weak<Outbound>) {
    loop {
        tokio::time::sleep(RECEIPT_TICK).await;
        let Some(outbound) = outbound.upgrade() else {
            return;
        };
        outbound.send_due().await;
    }
}
