//! fogwire's VPN, node to node: a TUN device holding this node's address
//! (`fogwire_exit_proto::address`, in `fd77:6972::/32`), whose IPv6
//! packets to another node's address ride a route to that node as
//! datagrams to port [`PORT`] — never a stream, so no TCP runs over TCP,
//! and a full queue drops a packet rather than delaying the rest.
//!
//! - Out: a packet read from the device must come from this node's
//!   address and go to a node address; the destination is looked up among
//!   the nodes this node has adverts from, and sent on a route kept per
//!   destination (opened on the first packet; the first 16 wait for it,
//!   as a host holds packets while it resolves a neighbour, and more are
//!   dropped).
//! - In: a datagram on [`PORT`] is written to the device only if its
//!   source address is the sending node's own and its destination is this
//!   node's: nobody can spoof another node's address.
//!
//! Exits (IPv4 and IPv6 default routes through an exit, NAT there) are
//! not built yet.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fogwire_exit_proto::address::{PREFIX, address_of};
use fogwire_identity::NodeId;
use fogwire_route::proto::router::RouteId;
use fogwire_route::{Constraints, Datagram, Datagrams, Routing, Spec};
use tokio::task::JoinHandle;
use tun_rs::{AsyncDevice, DeviceBuilder};

/// The VPN's datagram port.
pub const PORT: u16 = 1084;
/// The device's MTU: a route datagram carries 65 482 bytes, so a packet
/// this size always fits one, and TCP over the VPN sends large segments.
pub const MTU: u16 = 60_000;
/// The device's name.
pub const DEVICE: &str = "fogwire0";
/// Destinations with a route kept at once.
const ROUTES_MAX: usize = 1024;
/// How long an address table stays fresh before a miss reloads it.
const TABLE_FRESH: Duration = Duration::from_secs(2);
/// Packets held for a destination while its route opens; more are dropped.
const HELD_MAX: usize = 16;
/// How long a route may take to open before the next packet tries again.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the VPN could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VpnError {
    #[error(
        "cannot create the TUN device {DEVICE}: {0} (the node needs root or CAP_NET_ADMIN, and /dev/net/tun)"
    )]
    Device(std::io::Error),
    #[error("the VPN is up already")]
    AlreadyUp,
    #[error("the VPN is not up")]
    NotUp,
    #[error("cannot offer the VPN's port: {0}")]
    Service(#[from] fogwire_route::ServiceError),
}

/// Counters of the VPN.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VpnStats {
    pub packets_out: u64,
    pub bytes_out: u64,
    pub packets_in: u64,
    pub bytes_in: u64,
    /// Packets from the device this node could not send: not IPv6, not
    /// from this node's address, to no node it knows, while its route
    /// opened, or the route's queue full.
    pub dropped_out: u64,
    /// Datagrams not written to the device: malformed, a source address
    /// not the sender's own, not for this node, or the device full.
    pub dropped_in: u64,
    /// Of those, datagrams whose source address was not the sender's.
    pub spoofed: u64,
    pub routes: u64,
}

#[derive(Default)]
struct Counters {
    packets_out: AtomicU64,
    bytes_out: AtomicU64,
    packets_in: AtomicU64,
    bytes_in: AtomicU64,
    dropped_out: AtomicU64,
    dropped_in: AtomicU64,
    spoofed: AtomicU64,
}

enum RouteState {
    /// Since when, and the first packets, held until the route is up.
    Opening(Instant, Vec<Bytes>),
    Up(RouteId),
}

#[derive(Default)]
struct Table {
    by_address: HashMap<Ipv6Addr, NodeId>,
    refreshed: Option<Instant>,
    routes: HashMap<NodeId, RouteState>,
}

struct Inner {
    routing: Routing,
    address: Ipv6Addr,
    device: AsyncDevice,
    table: Mutex<Table>,
    counters: Counters,
}

/// The VPN, up. Dropping it takes the device down.
pub struct Vpn {
    inner: Arc<Inner>,
    reader: JoinHandle<()>,
}

impl std::fmt::Debug for Vpn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vpn")
            .field("address", &self.inner.address)
            .finish_non_exhaustive()
    }
}

impl Drop for Vpn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// What `fogwire vpn status` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpnStatus {
    pub device: String,
    pub address: Ipv6Addr,
    pub mtu: u16,
    pub stats: VpnStats,
}

/// Fields of an IPv6 header.
fn ipv6_ends(packet: &[u8]) -> Option<(Ipv6Addr, Ipv6Addr)> {
    if packet.len() < 40 || packet[0] >> 4 != 6 {
        return None;
    }
    let mut source = [0u8; 16];
    source.copy_from_slice(&packet[8..24]);
    let mut destination = [0u8; 16];
    destination.copy_from_slice(&packet[24..40]);
    Some((Ipv6Addr::from(source), Ipv6Addr::from(destination)))
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dropped_out(&self) {
        self.counters.dropped_out.fetch_add(1, Ordering::Relaxed);
    }

    /// The node at `address`, reloading the table from the adverts if it
    /// is stale.
    async fn node_at(&self, address: Ipv6Addr) -> Option<NodeId> {
        let stale = {
            let table = self.lock();
            if let Some(node) = table.by_address.get(&address) {
                return Some(*node);
            }
            table.refreshed.is_none_or(|at| at.elapsed() >= TABLE_FRESH)
        };
        if !stale {
            return None;
        }
        let nodes = self.routing.nodes().await.ok()?;
        let mut table = self.lock();
        table.by_address = nodes
            .iter()
            .filter(|node| !node.this_node)
            .map(|node| {
                (
                    address_of(node.advert.origin.as_bytes()),
                    node.advert.origin,
                )
            })
            .collect();
        table.refreshed = Some(Instant::now());
        table.by_address.get(&address).copied()
    }

    /// Sends a packet read from the device.
    async fn send(self: &Arc<Self>, packet: &[u8]) {
        let Some((source, destination)) = ipv6_ends(packet) else {
            return self.dropped_out();
        };
        if source != self.address || !PREFIX.contains(&destination) {
            return self.dropped_out();
        }
        let Some(node) = self.node_at(destination).await else {
            return self.dropped_out();
        };
        let data = Bytes::copy_from_slice(packet);
        let route = {
            let mut table = self.lock();
            let full = table.routes.len() >= ROUTES_MAX && !table.routes.contains_key(&node);
            match table.routes.get_mut(&node) {
                Some(RouteState::Up(route)) => Some(*route),
                Some(RouteState::Opening(since, held)) if since.elapsed() < OPEN_TIMEOUT => {
                    if held.len() < HELD_MAX {
                        held.push(data.clone());
                    } else {
                        self.dropped_out();
                    }
                    None
                }
                _ if full => {
                    self.dropped_out();
                    None
                }
                _ => {
                    table.routes.insert(
                        node,
                        RouteState::Opening(Instant::now(), vec![data.clone()]),
                    );
                    let inner = Arc::downgrade(self);
                    tokio::spawn(open_route(inner, node));
                    None
                }
            }
        };
        let Some(route) = route else {
            return;
        };
        self.forward(node, route, data).await;
    }

    /// Sends one packet on a destination's route.
    async fn forward(&self, node: NodeId, route: RouteId, data: Bytes) {
        let len = data.len() as u64;
        match self.routing.send_datagram(route, PORT, data).await {
            Ok(()) => {
                self.counters.packets_out.fetch_add(1, Ordering::Relaxed);
                self.counters.bytes_out.fetch_add(len, Ordering::Relaxed);
            }
            Err(error) => {
                tracing::debug!(%error, node = %node.short(), "vpn: the route is gone; the next packet opens another");
                self.lock().routes.remove(&node);
                self.dropped_out();
            }
        }
    }

    /// Takes a datagram from another node's VPN.
    fn receive(&self, datagram: &Datagram) {
        let counters = &self.counters;
        let Some((source, destination)) = ipv6_ends(&datagram.data) else {
            counters.dropped_in.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if source != address_of(datagram.from.as_bytes()) {
            counters.spoofed.fetch_add(1, Ordering::Relaxed);
            counters.dropped_in.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if destination != self.address || self.device.try_send(&datagram.data).is_err() {
            counters.dropped_in.fetch_add(1, Ordering::Relaxed);
            return;
        }
        counters.packets_in.fetch_add(1, Ordering::Relaxed);
        counters
            .bytes_in
            .fetch_add(datagram.data.len() as u64, Ordering::Relaxed);
    }
}

async fn open_route(inner: Weak<Inner>, node: NodeId) {
    let Some(routing) = inner.upgrade().map(|inner| inner.routing.clone()) else {
        return;
    };
    let opened =
        tokio::time::timeout(OPEN_TIMEOUT, routing.open(node, Constraints::default())).await;
    let Some(inner) = inner.upgrade() else {
        return;
    };
    let held = {
        let mut table = inner.lock();
        let held = match table.routes.remove(&node) {
            Some(RouteState::Opening(_, held)) => held,
            _ => Vec::new(),
        };
        match &opened {
            Ok(Ok(opened)) => {
                tracing::debug!(node = %node.short(), "vpn: route up");
                table.routes.insert(node, RouteState::Up(opened.route));
                held
            }
            _ => {
                for _ in &held {
                    inner.dropped_out();
                }
                Vec::new()
            }
        }
    };
    if let Ok(Ok(opened)) = opened {
        for packet in held {
            inner.forward(node, opened.route, packet).await;
        }
    }
}

impl Vpn {
    /// Creates the TUN device with this node's address and starts
    /// carrying packets over `routing`.
    pub fn start(routing: Routing) -> Result<Vpn, VpnError> {
        let address = address_of(routing.node_id().as_bytes());
        let device = DeviceBuilder::new()
            .name(DEVICE)
            .ipv6(address, PREFIX.prefix_len())
            .mtu(MTU)
            .build_async()
            .map_err(VpnError::Device)?;
        let inner = Arc::new(Inner {
            routing: routing.clone(),
            address,
            device,
            table: Mutex::new(Table::default()),
            counters: Counters::default(),
        });
        // The service does not keep the VPN alive: down is down.
        let receiving = Arc::downgrade(&inner);
        let receive = move |datagram: Datagram| {
            if let Some(inner) = receiving.upgrade() {
                inner.receive(&datagram);
            }
        };
        routing.accept(
            Spec::datagrams("vpn", PORT, 4096),
            Arc::new(Datagrams(receive)),
        )?;
        let reading = inner.clone();
        let reader = tokio::spawn(async move {
            let mut buffer = vec![0u8; usize::from(MTU) + 64];
            loop {
                match reading.device.recv(&mut buffer).await {
                    Ok(len) => reading.send(&buffer[..len]).await,
                    Err(error) => {
                        tracing::warn!(%error, "vpn: the device failed; the VPN stops");
                        return;
                    }
                }
            }
        });
        tracing::info!(%address, device = DEVICE, "vpn: up");
        Ok(Vpn { inner, reader })
    }

    pub fn status(&self) -> VpnStatus {
        let counters = &self.inner.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        VpnStatus {
            device: DEVICE.to_owned(),
            address: self.inner.address,
            mtu: MTU,
            stats: VpnStats {
                packets_out: load(&counters.packets_out),
                bytes_out: load(&counters.bytes_out),
                packets_in: load(&counters.packets_in),
                bytes_in: load(&counters.bytes_in),
                dropped_out: load(&counters.dropped_out),
                dropped_in: load(&counters.dropped_in),
                spoofed: load(&counters.spoofed),
                routes: self.inner.lock().routes.len() as u64,
            },
        }
    }
}

/// The node's VPN switch: up, down, status.
#[derive(Default)]
pub struct Switch {
    vpn: Mutex<Option<Vpn>>,
}

impl std::fmt::Debug for Switch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Switch").finish_non_exhaustive()
    }
}

impl Switch {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Vpn>> {
        self.vpn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn up(&self, routing: &Routing) -> Result<VpnStatus, VpnError> {
        let mut vpn = self.lock();
        if vpn.is_some() {
            return Err(VpnError::AlreadyUp);
        }
        let started = Vpn::start(routing.clone())?;
        let status = started.status();
        *vpn = Some(started);
        Ok(status)
    }

    /// Takes the device down; its routes close as they idle out.
    pub fn down(&self) -> Result<(), VpnError> {
        let stopped = self.lock().take().ok_or(VpnError::NotUp)?;
        let routes: Vec<RouteId> = stopped
            .inner
            .lock()
            .routes
            .values()
            .filter_map(|state| match state {
                RouteState::Up(route) => Some(*route),
                RouteState::Opening(..) => None,
            })
            .collect();
        let routing = stopped.inner.routing.clone();
        drop(stopped);
        tokio::spawn(async move {
            for route in routes {
                let _ = routing.close(route).await;
            }
        });
        tracing::info!("vpn: down");
        Ok(())
    }

    pub fn status(&self) -> Option<VpnStatus> {
        self.lock().as_ref().map(Vpn::status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ipv6_headers_are_read() {
        let mut packet = vec![0u8; 40];
        packet[0] = 0x60;
        packet[8..24].copy_from_slice(&"fd77:6972::1".parse::<Ipv6Addr>().unwrap().octets());
        packet[24..40].copy_from_slice(&"fd77:6972::2".parse::<Ipv6Addr>().unwrap().octets());
        let (source, destination) = ipv6_ends(&packet).unwrap();
        assert_eq!(source, "fd77:6972::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(destination, "fd77:6972::2".parse::<Ipv6Addr>().unwrap());
        packet[0] = 0x45;
        assert!(ipv6_ends(&packet).is_none());
        assert!(ipv6_ends(&packet[..39]).is_none());
    }
}
