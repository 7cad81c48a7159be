//! An exit's VPN gateway: clients lease the right to send packets through
//! the exit, and the exit forwards their packets to its host's networks
//! (the kernel routes them, nftables NATs them) and their answers back.
//!
//! A lease is a route stream to the service [`LEASE_SERVICE`]: the client
//! sends [`LEASE_VERSION`], the exit admits it (it can pay, it has a stream
//! slot, its IPv4 address is not another client's) and answers with the
//! exit protocol's reply (`docs/protocol/exit.md` §5). The lease lasts as
//! long as the stream. While it does, the client's datagrams to the VPN
//! port whose destination is not a node address are forwarded, if
//!
//! - their source is the client's own address (its node address, or its
//!   IPv4 address from `fogwire_exit_proto::address::ipv4_of`): nobody
//!   sends as somebody else;
//! - the exit's policy forwards to their destination and port;
//! - they are within the client's bandwidth cap and, at a charging exit,
//!   its credit (packets are dropped, never delayed).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use fogwire_exit::Exit;
use fogwire_exit_proto::address::{address_of, ipv4_of};
use fogwire_exit_proto::wire::{Reply, Status};
use fogwire_identity::NodeId;
use fogwire_route::proto::router::SessionId;
use fogwire_route::services::BoxFuture;
use fogwire_route::{Limits, RouteStream, Routing, Service, Spec};

use fogwire_exit_proto::packet::Ends;

/// The service clients lease an exit's VPN from.
pub const LEASE_SERVICE: &str = fogwire_exit::VPN_SERVICE;
/// The byte a lease stream starts with.
pub const LEASE_VERSION: u8 = 1;
/// Clients leased at once.
pub const LEASES_MAX: usize = 1024;
/// How long a client has to ask, once its stream is open.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// Counters of a gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayStats {
    pub clients: u64,
    /// Packets forwarded from clients, and answers sent back.
    pub forwarded: u64,
    pub answered: u64,
    /// Packets the policy refused.
    pub refused: u64,
    /// Packets from a node with no lease, or over its cap or credit.
    pub dropped: u64,
    /// Packets whose source was not their sender's address.
    pub spoofed: u64,
}

#[derive(Default)]
struct Counters {
    forwarded: AtomicU64,
    answered: AtomicU64,
    refused: AtomicU64,
    dropped: AtomicU64,
    spoofed: AtomicU64,
}

struct Leased {
    client: NodeId,
    v4: Ipv4Addr,
    v6: Ipv6Addr,
    /// The session its last packet came on: answers go back on it.
    session: Mutex<Option<SessionId>>,
    lease: fogwire_exit::Lease,
}

#[derive(Default)]
struct Leases {
    by_node: HashMap<NodeId, Arc<Leased>>,
    by_address: HashMap<IpAddr, Arc<Leased>>,
}

pub(crate) struct Gateway {
    exit: Exit,
    routing: Routing,
    leases: Mutex<Leases>,
    counters: Counters,
    /// Forwarding and NAT, undone when the gateway goes.
    _forwarding: crate::system::Forwarding,
}

/// A rate-limited warning: at most one a minute per kind.
fn warn_refused(destination: SocketAddr, why: &fogwire_exit_proto::Refusal) {
    static LAST: Mutex<Option<std::time::Instant>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
        *last = Some(std::time::Instant::now());
        tracing::info!(%destination, %why, "vpn gateway: the policy refuses a client's packets (said once a minute)");
    }
}

/// Whether a packet a client with addresses `v4` and `v6` sent has one of
/// them for its source: nobody sends through the exit as somebody else.
fn sent_as_itself(v4: Ipv4Addr, v6: Ipv6Addr, ends: &Ends) -> bool {
    ends.source == IpAddr::V4(v4) || ends.source == IpAddr::V6(v6)
}

impl Gateway {
    pub(crate) fn new(exit: Exit, routing: Routing, forwarding: crate::system::Forwarding) -> Self {
        Self {
            exit,
            routing,
            leases: Mutex::new(Leases::default()),
            counters: Counters::default(),
            _forwarding: forwarding,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Leases> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn offer(
        self: &Arc<Self>,
        routing: &Routing,
    ) -> Result<(), fogwire_route::ServiceError> {
        let spec = Spec::streams(LEASE_SERVICE).with_limits(Limits {
            streams_queued: 64,
            streams_at_once: LEASES_MAX,
            datagrams_queued: 1,
        });
        routing.accept(spec, Arc::new(LeaseService(Arc::downgrade(self))))
    }

    /// Takes a client's packet (a datagram whose destination is not a
    /// node address); true if it was written to `device`.
    pub(crate) fn forward(
        &self,
        from: NodeId,
        session: SessionId,
        ends: &Ends,
        packet: &[u8],
        device: &tun_rs::AsyncDevice,
    ) -> bool {
        let counters = &self.counters;
        let Some(leased) = self.lock().by_node.get(&from).cloned() else {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        if !sent_as_itself(leased.v4, leased.v6, ends) {
            counters.spoofed.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let destination = SocketAddr::new(ends.destination, ends.port.unwrap_or(0));
        if let Err(why) = self.exit.check(destination) {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            warn_refused(destination, &why);
            return false;
        }
        if !leased.lease.pass(packet.len()) || device.try_send(packet).is_err() {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        *leased.session.lock().unwrap_or_else(|p| p.into_inner()) = Some(session);
        counters.forwarded.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Sends a packet read from the device back to the client whose
    /// address it is for; false if it is for no client.
    pub(crate) async fn answer(&self, destination: IpAddr, packet: &[u8]) -> bool {
        let Some(leased) = self.lock().by_address.get(&destination).cloned() else {
            return false;
        };
        let session = *leased.session.lock().unwrap_or_else(|p| p.into_inner());
        let sent = match session {
            Some(session) if leased.lease.pass(packet.len()) => self
                .routing
                .reply_datagram(session, crate::PORT, Bytes::copy_from_slice(packet))
                .await
                .is_ok(),
            _ => false,
        };
        let counter = if sent {
            &self.counters.answered
        } else {
            &self.counters.dropped
        };
        counter.fetch_add(1, Ordering::Relaxed);
        true
    }

    pub(crate) fn stats(&self) -> GatewayStats {
        let counters = &self.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        GatewayStats {
            clients: self.lock().by_node.len() as u64,
            forwarded: load(&counters.forwarded),
            answered: load(&counters.answered),
            refused: load(&counters.refused),
            dropped: load(&counters.dropped),
            spoofed: load(&counters.spoofed),
        }
    }

    /// Admits the client at the other end of `stream`, or says why not.
    async fn admit(&self, client: NodeId) -> Result<Arc<Leased>, Reply> {
        let v4 = ipv4_of(client.as_bytes());
        let v6 = address_of(client.as_bytes());
        let failed = |status: Status, reason: &str| Reply {
            status,
            reason: reason.to_owned(),
        };
        {
            let leases = self.lock();
            if leases.by_node.contains_key(&client) {
                return Err(failed(
                    Status::Busy,
                    "you hold a lease on this exit already",
                ));
            }
            if leases.by_address.contains_key(&IpAddr::V4(v4))
                || v4 == ipv4_of(self.routing.node_id().as_bytes())
            {
                return Err(failed(
                    Status::Failed,
                    "your IPv4 address (from your node id) is another client's of this exit now: choose another exit",
                ));
            }
            if leases.by_node.len() >= LEASES_MAX {
                return Err(failed(
                    Status::Busy,
                    "this exit's VPN has all the clients it takes",
                ));
            }
        }
        let lease = self.exit.lease(client).await?;
        let leased = Arc::new(Leased {
            client,
            v4,
            v6,
            session: Mutex::new(None),
            lease,
        });
        let mut leases = self.lock();
        if leases.by_node.contains_key(&client) || leases.by_address.contains_key(&IpAddr::V4(v4)) {
            return Err(failed(
                Status::Busy,
                "you hold a lease on this exit already",
            ));
        }
        leases.by_node.insert(client, leased.clone());
        leases.by_address.insert(IpAddr::V4(v4), leased.clone());
        leases.by_address.insert(IpAddr::V6(v6), leased.clone());
        Ok(leased)
    }

    fn release(&self, leased: &Leased) {
        let mut leases = self.lock();
        leases.by_node.remove(&leased.client);
        leases.by_address.remove(&IpAddr::V4(leased.v4));
        leases.by_address.remove(&IpAddr::V6(leased.v6));
        tracing::info!(client = %leased.client.short(), "vpn gateway: a client's lease ended");
    }

    async fn serve(self: Arc<Self>, mut stream: RouteStream) {
        let client = stream.peer();
        match tokio::time::timeout(ASK_TIMEOUT, stream.read_exact(1)).await {
            Ok(Ok(version)) if version[..] == [LEASE_VERSION] => {}
            Ok(Ok(version)) => {
                let reply = Reply {
                    status: Status::Failed,
                    reason: format!("lease version {} is not spoken here (1 is)", version[0]),
                };
                let _ = stream.write_all(Bytes::from(reply.encode())).await;
                return;
            }
            _ => return,
        }
        let leased = match self.admit(client).await {
            Ok(leased) => leased,
            Err(reply) => {
                tracing::info!(client = %client.short(), reason = %reply.reason, "vpn gateway: a client refused");
                let _ = stream.write_all(Bytes::from(reply.encode())).await;
                let _ = stream.finish().await;
                // Room for the answer to arrive before the stream goes.
                tokio::time::sleep(Duration::from_secs(2)).await;
                return;
            }
        };
        tracing::info!(client = %client.short(), v4 = %leased.v4, v6 = %leased.v6, "vpn gateway: a client leased");
        let connected = Reply {
            status: Status::Connected,
            reason: String::new(),
        };
        if stream
            .write_all(Bytes::from(connected.encode()))
            .await
            .is_ok()
        {
            // The lease lasts until the client hangs up or its route
            // fails for good; what it sends here is ignored.
            while let Some(Ok(_)) = stream.read().await {}
        }
        self.release(&leased);
    }
}

struct LeaseService(Weak<Gateway>);

impl Service for LeaseService {
    fn accept(&self, stream: RouteStream) -> BoxFuture<()> {
        let gateway = self.0.upgrade();
        Box::pin(async move {
            if let Some(gateway) = gateway {
                gateway.serve(stream).await;
            }
        })
    }
}

/// Leases `exit`'s VPN over `route`: the stream that holds the lease, or
/// the exit's reason for refusing.
pub(crate) async fn lease(
    routing: &Routing,
    route: fogwire_route::proto::router::RouteId,
) -> Result<RouteStream, String> {
    let mut stream = routing
        .connect(route, LEASE_SERVICE)
        .await
        .map_err(|e| format!("cannot reach its VPN gateway: {e}"))?;
    stream
        .write_all(Bytes::from_static(&[LEASE_VERSION]))
        .await
        .map_err(|e| format!("cannot ask for a lease: {e}"))?;
    let mut answer = Vec::with_capacity(64);
    let reply = tokio::time::timeout(ASK_TIMEOUT, async {
        loop {
            match Reply::decode(&answer) {
                Ok((reply, _)) => return Ok(reply),
                Err(fogwire_exit_proto::wire::DecodeError::Incomplete(_)) => {}
                Err(error) => return Err(format!("its answer is malformed: {error}")),
            }
            match stream.read().await {
                Some(Ok(bytes)) => answer.extend_from_slice(&bytes),
                _ => {
                    return Err(
                        "it does not serve the VPN (it is no exit, or its [exit] vpn is off)"
                            .to_owned(),
                    );
                }
            }
        }
    })
    .await
    .map_err(|_| "it did not answer within 10 s".to_owned())??;
    if reply.status != Status::Connected {
        return Err(format!("it refused: {}", reply.reason));
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fogwire_exit_proto::packet::ends;

    fn udp_v4(source: Ipv4Addr) -> Vec<u8> {
        let mut packet = vec![0u8; 28];
        packet[0] = 0x45;
        packet[9] = 17;
        packet[12..16].copy_from_slice(&source.octets());
        packet[16..20].copy_from_slice(&[192, 0, 2, 7]);
        packet[22..24].copy_from_slice(&53u16.to_be_bytes());
        packet
    }

    fn udp_v6(source: Ipv6Addr) -> Vec<u8> {
        let mut packet = vec![0u8; 48];
        packet[0] = 0x60;
        packet[6] = 17;
        packet[8..24].copy_from_slice(&source.octets());
        packet[24..40].copy_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        packet[42..44].copy_from_slice(&53u16.to_be_bytes());
        packet
    }

    #[test]
    fn a_client_s_packets_leave_only_from_its_own_addresses() {
        let client = fogwire_identity::Keypair::from_seed(&[7; 32]).node_id();
        let other = fogwire_identity::Keypair::from_seed(&[8; 32]).node_id();
        let (v4, v6) = (ipv4_of(client.as_bytes()), address_of(client.as_bytes()));
        let sent = |packet: Vec<u8>| sent_as_itself(v4, v6, &ends(&packet).unwrap());
        assert!(sent(udp_v4(v4)));
        assert!(sent(udp_v6(v6)));
        // Another client's addresses, the exit's LAN, anything else.
        assert!(!sent(udp_v4(ipv4_of(other.as_bytes()))));
        assert!(!sent(udp_v6(address_of(other.as_bytes()))));
        assert!(!sent(udp_v4(Ipv4Addr::new(192, 168, 1, 10))));
        assert!(!sent(udp_v6("2001:db8::1".parse().unwrap())));
        // The v4 address is no good as an IPv4-mapped v6 source either.
        assert!(!sent(udp_v6(v4.to_ipv6_mapped())));
    }
}
