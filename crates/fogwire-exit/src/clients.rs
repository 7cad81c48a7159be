//! What an exit holds per client: how many of its streams are open, and
//! the token bucket its bytes are paced by.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use fogwire_identity::NodeId;
use governor::{DefaultDirectRateLimiter, Quota};

use crate::pay::Payments;
use crate::splice::SpliceError;

/// Bytes a bucket cell stands for.
const CELL_BYTES: u32 = 1024;
/// The largest piece a paced copy asks the bucket for at once, in bytes.
pub(crate) const PACED_PIECE: usize = 16 * 1024;

pub(crate) struct Client {
    peer: NodeId,
    /// Paces the client's bytes, both ways, over all its streams.
    pub(crate) limiter: Option<DefaultDirectRateLimiter>,
    /// What a charging exit counts its bytes against.
    payments: Option<Arc<Payments>>,
}

impl Client {
    /// Whether its bytes need pacing or counting at all.
    pub(crate) fn paced(&self) -> bool {
        self.limiter.is_some() || self.payments.is_some()
    }

    /// Waits until `bytes` (at most [`PACED_PIECE`]) may pass: the
    /// client's rate, and its credit at a charging exit.
    pub(crate) async fn pace(&self, bytes: usize) -> Result<(), SpliceError> {
        if let Some(limiter) = &self.limiter {
            let cells = (bytes as u32).div_ceil(CELL_BYTES).max(1);
            if let Some(cells) = NonZeroU32::new(cells) {
                // The burst holds a whole piece, so this never refuses.
                let _ = limiter.until_n_ready(cells).await;
            }
        }
        if let Some(payments) = &self.payments {
            payments
                .carried(self.peer, bytes as u64)
                .await
                .map_err(|()| SpliceError::Unpaid)?;
        }
        Ok(())
    }
}

/// A VPN client's admission to an exit ([`crate::Exit::lease`]): one of
/// its stream slots, held while its lease stream is open.
pub struct Lease {
    pub(crate) slot: Slot,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("client", &self.slot.peer.short())
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// Whether a packet of `bytes` may pass now, either way: within the
    /// client's bandwidth cap and, at a charging exit, its credit. A
    /// packet that may not is dropped, never delayed (IP has its own
    /// congestion control), and is not counted.
    pub fn pass(&self, bytes: usize) -> bool {
        let client = &self.slot.client;
        if let Some(limiter) = &client.limiter {
            let cells = (bytes as u32).div_ceil(CELL_BYTES).max(1);
            let allowed = NonZeroU32::new(cells)
                .is_some_and(|cells| matches!(limiter.check_n(cells), Ok(Ok(()))));
            if !allowed {
                return false;
            }
        }
        match &client.payments {
            Some(payments) => payments.carry(client.peer, bytes as u64),
            None => true,
        }
    }
}

/// The clients with a stream open, each with its count.
pub(crate) struct Clients {
    open: Mutex<HashMap<NodeId, (Arc<Client>, usize)>>,
    streams_per_client: usize,
    kbps: u32,
    payments: Option<Arc<Payments>>,
}

/// One open stream of a client; dropping it frees the slot.
pub(crate) struct Slot {
    clients: Arc<Clients>,
    peer: NodeId,
    pub(crate) client: Arc<Client>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.clients.lock();
        if let Some((_, count)) = open.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

impl Clients {
    pub(crate) fn new(
        streams_per_client: usize,
        kbps: u32,
        payments: Option<Arc<Payments>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            open: Mutex::new(HashMap::new()),
            streams_per_client: streams_per_client.max(1),
            kbps,
            payments,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, (Arc<Client>, usize)>> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn limiter(&self) -> Option<DefaultDirectRateLimiter> {
        if self.kbps == 0 {
            return None;
        }
        let bytes_per_second = u64::from(self.kbps) * 1000 / 8;
        let cells = u32::try_from(bytes_per_second / u64::from(CELL_BYTES)).unwrap_or(u32::MAX);
        let rate = NonZeroU32::new(cells.max(1))?;
        // A quarter second of traffic, and at least one piece.
        let piece_cells = (PACED_PIECE as u32).div_ceil(CELL_BYTES);
        let burst = NonZeroU32::new((cells / 4).max(piece_cells))?;
        Some(DefaultDirectRateLimiter::direct(
            Quota::per_second(rate).allow_burst(burst),
        ))
    }

    /// A slot for one more stream of `peer`, or `None` if it has its
    /// share open already.
    pub(crate) fn enter(self: &Arc<Self>, peer: NodeId) -> Option<Slot> {
        let mut open = self.lock();
        let entry = open.entry(peer).or_insert_with(|| {
            (
                Arc::new(Client {
                    peer,
                    payments: self.payments.clone(),
                    limiter: self.limiter(),
                }),
                0,
            )
        });
        if entry.1 >= self.streams_per_client {
            return None;
        }
        entry.1 += 1;
        let client = entry.0.clone();
        drop(open);
        Some(Slot {
            clients: self.clone(),
            peer,
            client,
        })
    }

    pub(crate) fn count(&self) -> usize {
        self.lock().len()
    }
}
