//! The client's side of UDP through an exit: what a SOCKS UDP ASSOCIATE
//! sets up at the proxy.
//!
//! The proxy binds a UDP socket for each association and relays what its
//! SOCKS client sends there to the exit as route datagrams; the exit's
//! answers come back to this node's [`REPLY_PORT`], where one [`Replies`]
//! per node hands each to its association's socket, which sends it on to
//! the SOCKS client with a SOCKS UDP header naming the answer's source.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fogwire_exit_proto::socks::UdpHeader;
use fogwire_exit_proto::wire::{Datagram, Destination};
use fogwire_identity::NodeId;
use fogwire_route::{Datagrams, Routing, ServiceError, Spec};
use tokio::sync::mpsc;

use crate::udp::REPLY_PORT;

/// Associations one node's proxies hold at once.
pub(crate) const ASSOCIATIONS_MAX: usize = 1024;

/// UDP counters of a proxy.
#[derive(Debug, Default)]
pub(crate) struct UdpCounters {
    pub(crate) sent: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) oversized: AtomicU64,
}

/// Answers waiting to be sent to one association's SOCKS client; more
/// are dropped.
pub(crate) const ANSWERS_QUEUED: usize = 64;

/// One association at the proxy.
pub(crate) struct Association {
    /// Answers for the SOCKS client, with their SOCKS UDP header.
    pub(crate) answers: mpsc::Sender<Vec<u8>>,
    /// The exit whose answers it takes.
    pub(crate) exit: NodeId,
    pub(crate) counters: Arc<UdpCounters>,
}

/// The associations of one node's proxies, by id; the service on the
/// node's [`REPLY_PORT`] (held by the node's [`crate::Outbound`]).
#[derive(Default)]
pub(crate) struct Replies {
    associations: Mutex<HashMap<u32, Arc<Association>>>,
    next: AtomicU32,
}

impl Replies {
    /// Offers the replies service on `routing`'s reply port; it does not
    /// keep them alive (the node's `Outbound` does).
    pub(crate) fn offer(self: &Arc<Self>, routing: &Routing) -> Result<(), ServiceError> {
        let replies = Arc::downgrade(self);
        let answer = move |datagram: fogwire_route::Datagram| {
            if let Some(replies) = replies.upgrade() {
                replies.answer(&datagram);
            }
        };
        let spec = Spec::datagrams("socks-udp", REPLY_PORT, 1024);
        routing.accept(spec, Arc::new(Datagrams(answer)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<Association>>> {
        self.associations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers an association; its id, or `None` if the node holds as
    /// many as it may.
    pub(crate) fn register(&self, association: Arc<Association>) -> Option<u32> {
        let mut associations = self.lock();
        if associations.len() >= ASSOCIATIONS_MAX {
            return None;
        }
        loop {
            let id = self.next.fetch_add(1, Ordering::Relaxed);
            if let std::collections::hash_map::Entry::Vacant(entry) = associations.entry(id) {
                entry.insert(association);
                return Some(id);
            }
        }
    }

    pub(crate) fn remove(&self, id: u32) {
        self.lock().remove(&id);
    }

    fn answer(&self, datagram: &fogwire_route::Datagram) {
        let Ok(parsed) = Datagram::decode(&datagram.data) else {
            return;
        };
        let Some(association) = self.lock().get(&parsed.association).cloned() else {
            return;
        };
        let counters = &association.counters;
        let Destination::Address(source) = parsed.peer.destination else {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        // Only the association's exit answers it.
        if datagram.from != association.exit {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut out = UdpHeader::encode_from(SocketAddr::new(source, parsed.peer.port));
        out.extend_from_slice(parsed.payload);
        if association.answers.try_send(out).is_err() {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}
