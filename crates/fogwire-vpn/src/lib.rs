//! fogwire's VPN: a TUN device holding this node's address
//! (`fogwire_exit_proto::address`, in `fd77:6972::/32`), whose packets
//! ride routes as datagrams to port [`PORT`] — never a stream, so no TCP
//! runs over TCP, and a full queue drops a packet rather than delaying
//! the rest.
//!
//! - Node to node: a packet to another node's address is looked up among
//!   the nodes this node has adverts from, and sent on a route kept per
//!   destination (opened on the first packet; the first 16 wait for it,
//!   as a host holds packets while it resolves a neighbour, and more are
//!   dropped). A datagram is written to the device only if its source
//!   address is the sending node's own: nobody can spoof another node.
//! - Through an exit (`fogwire vpn up --exit`): the node leases the
//!   exit's VPN gateway ([`gateway`]), takes an IPv4 address derived from
//!   its id too, and sends the host's IPv4 and IPv6 default routes into
//!   the device ([`system`]); every packet not for a node address goes
//!   to the exit, and what the exit sends back is written to the device.
//! - As an exit (`[exit] vpn = true`): the node forwards its leased
//!   clients' packets to its host's networks, NATed by nftables.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fogwire_exit::{Exit, Meter, Outbound};
use fogwire_exit_proto::address::{PREFIX, PREFIX_V4, address_of, ipv4_of};
use fogwire_exit_proto::packet;
use fogwire_identity::NodeId;
use fogwire_route::proto::router::RouteId;
use fogwire_route::{Constraints, Datagram, Datagrams, RouteStream, Routing, Spec};
use tokio::task::JoinHandle;
use tun_rs::{AsyncDevice, DeviceBuilder};

pub mod gateway;
pub mod system;

pub use gateway::{GatewayStats, LEASE_SERVICE};

/// The VPN's datagram port.
pub const PORT: u16 = 1084;
/// The device's MTU: a route datagram carries 65 482 bytes, so a packet
/// this size always fits one, and TCP between nodes sends large segments.
/// Default routes through an exit have a smaller MTU of their own
/// ([`system::EXIT_ROUTE_MTU`]).
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
/// The longest wait between tries to lease an exit again after a lease
/// ended.
const RELEASE_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Why the VPN could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VpnError {
    #[error(
        "cannot create the TUN device {DEVICE}: {0} (the node needs root or CAP_NET_ADMIN, and /dev/net/tun)"
    )]
    Device(std::io::Error),
    #[error("the VPN is up already (fogwire vpn down first)")]
    AlreadyUp,
    #[error("the VPN is not up")]
    NotUp,
    #[error("cannot offer the VPN's port: {0}")]
    Service(#[from] fogwire_route::ServiceError),
    #[error("exit {exit}: {reason}")]
    Exit { exit: String, reason: String },
    #[error("cannot set up the host's routes for the VPN: {0}")]
    System(#[from] system::SystemError),
}

/// Counters of the VPN.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VpnStats {
    pub packets_out: u64,
    pub bytes_out: u64,
    pub packets_in: u64,
    pub bytes_in: u64,
    /// Packets from the device this node could not send: not IP, not
    /// from this node's address, to no node it knows, while its route
    /// opened, without an exit lease, or the route's queue full.
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

/// The exit a client's default routes go through.
struct ExitLink {
    node: NodeId,
    /// The route its lease holds; none while the lease is being renewed.
    route: Mutex<Option<RouteId>>,
    /// What it carried, receipted if it charges.
    meter: Arc<Meter>,
    /// Where the meter lives, told the route of each renewed lease so
    /// that receipts follow it.
    outbound: Arc<Outbound>,
    price_per_gib: u64,
}

/// What the VPN carries besides node-to-node packets.
#[derive(Debug)]
pub enum Mode {
    /// Node to node only.
    Direct,
    /// Also the host's default routes, through this exit.
    Through(Through),
    /// Also leased clients' packets, as this exit.
    Gateway(Exit),
}

/// An exit to send the default routes through.
#[derive(Debug)]
pub struct Through {
    pub exit: NodeId,
    /// Its advertised price, which receipts are signed at.
    pub price_per_gib: u64,
    pub outbound: Arc<Outbound>,
    pub constraints: Constraints,
}

struct Inner {
    routing: Routing,
    address: Ipv6Addr,
    /// The node's IPv4 address, through an exit or as one.
    ipv4: Option<Ipv4Addr>,
    device: AsyncDevice,
    table: Mutex<Table>,
    counters: Counters,
    exit: Option<ExitLink>,
    gateway: Option<Arc<gateway::Gateway>>,
}

/// The VPN, up. Dropping it takes the device down.
pub struct Vpn {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
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
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What `fogwire vpn status` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpnStatus {
    pub device: String,
    pub address: Ipv6Addr,
    pub ipv4: Option<Ipv4Addr>,
    pub mtu: u16,
    /// The exit the default routes go through, and whether its lease
    /// holds now.
    pub exit: Option<(NodeId, bool)>,
    pub stats: VpnStats,
    /// This node's gateway, if it serves as a VPN exit.
    pub gateway: Option<GatewayStats>,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dropped_out(&self) {
        self.counters.dropped_out.fetch_add(1, Ordering::Relaxed);
    }

    fn sent(&self, len: usize) {
        self.counters.packets_out.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_out
            .fetch_add(len as u64, Ordering::Relaxed);
    }

    fn mine(&self, address: IpAddr) -> bool {
        match address {
            IpAddr::V6(address) => address == self.address,
            IpAddr::V4(address) => Some(address) == self.ipv4,
        }
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
        let Some(ends) = packet::ends(packet) else {
            return self.dropped_out();
        };
        // An exit's answer to one of its clients.
        if let Some(gateway) = &self.gateway
            && gateway.answer(ends.destination, packet).await
        {
            return;
        }
        match ends.destination {
            IpAddr::V6(destination) if PREFIX.contains(&destination) => {
                if ends.source != IpAddr::V6(self.address) {
                    return self.dropped_out();
                }
                self.to_node(destination, packet).await;
            }
            _ => self.to_exit(&ends, packet).await,
        }
    }

    /// Sends a packet beyond the node addresses through the exit.
    async fn to_exit(&self, ends: &packet::Ends, packet: &[u8]) {
        let Some(exit) = &self.exit else {
            return self.dropped_out();
        };
        let route = *exit.route.lock().unwrap_or_else(|p| p.into_inner());
        let Some(route) = route.filter(|_| self.mine(ends.source)) else {
            return self.dropped_out();
        };
        let data = Bytes::copy_from_slice(packet);
        match self.routing.send_datagram(route, PORT, data).await {
            Ok(()) => {
                exit.meter.carried(packet.len() as u64);
                self.sent(packet.len());
            }
            Err(_) => self.dropped_out(),
        }
    }

    /// Sends a packet to another node's address.
    async fn to_node(self: &Arc<Self>, destination: Ipv6Addr, packet: &[u8]) {
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
        let len = data.len();
        match self.routing.send_datagram(route, PORT, data).await {
            Ok(()) => self.sent(len),
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
        let dropped = || {
            counters.dropped_in.fetch_add(1, Ordering::Relaxed);
        };
        let Some(ends) = packet::ends(&datagram.data) else {
            return dropped();
        };
        if !self.mine(ends.destination) {
            // A client's packet for the world, if this node is its exit.
            if let Some(gateway) = &self.gateway
                && gateway.forward(
                    datagram.from,
                    datagram.session,
                    &ends,
                    &datagram.data,
                    &self.device,
                )
            {
                return;
            }
            return dropped();
        }
        match &self.exit {
            // What this node's exit sends comes from anywhere.
            Some(exit) if exit.node == datagram.from => {
                exit.meter.carried(datagram.data.len() as u64);
            }
            _ if ends.source != IpAddr::V6(address_of(datagram.from.as_bytes())) => {
                counters.spoofed.fetch_add(1, Ordering::Relaxed);
                return dropped();
            }
            _ => {}
        }
        if self.device.try_send(&datagram.data).is_err() {
            return dropped();
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

/// Makes the device in the network namespace at `namespace`: on a thread
/// of its own that enters the namespace (a device stays in the namespace
/// it was made in, and its file works from anywhere).
fn build_in(builder: DeviceBuilder, namespace: &std::path::Path) -> std::io::Result<AsyncDevice> {
    let namespace = std::fs::File::open(namespace)?;
    let device = std::thread::scope(|scope| {
        scope
            .spawn(move || {
                nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)?;
                builder.build_sync()
            })
            .join()
    })
    .map_err(|_| std::io::Error::other("the thread making the device failed"))??;
    AsyncDevice::new(device)
}

/// Opens a route to `exit` and leases its VPN gateway.
async fn lease_exit(
    routing: &Routing,
    exit: NodeId,
    constraints: &Constraints,
) -> Result<(RouteId, RouteStream), String> {
    let opened = tokio::time::timeout(OPEN_TIMEOUT, routing.open(exit, constraints.clone()))
        .await
        .map_err(|_| "no route to it opened within 10 s".to_owned())?
        .map_err(|e| format!("no route to it: {e}"))?;
    let stream = gateway::lease(routing, opened.route).await?;
    Ok((opened.route, stream))
}

/// Holds a client's lease on its exit, and leases again when it ends.
async fn hold_lease(inner: Weak<Inner>, through: Constraints, mut stream: RouteStream) {
    loop {
        while let Some(Ok(_)) = stream.read().await {}
        let (routing, exit) = {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let Some(exit) = &inner.exit else {
                return;
            };
            *exit.route.lock().unwrap_or_else(|p| p.into_inner()) = None;
            (inner.routing.clone(), exit.node)
        };
        tracing::warn!(exit = %exit.short(), "vpn: the lease on the exit ended; packets beyond the node addresses are dropped until it is renewed");
        let mut wait = Duration::from_secs(1);
        stream = loop {
            tokio::time::sleep(wait).await;
            if inner.strong_count() == 0 {
                return;
            }
            match lease_exit(&routing, exit, &through).await {
                Ok((route, stream)) => {
                    if let Some(inner) = inner.upgrade()
                        && let Some(link) = &inner.exit
                    {
                        *link.route.lock().unwrap_or_else(|p| p.into_inner()) = Some(route);
                        link.outbound.meter(exit, link.price_per_gib, route);
                    }
                    tracing::info!(exit = %exit.short(), "vpn: the lease on the exit is renewed");
                    break stream;
                }
                Err(why) => {
                    tracing::warn!(exit = %exit.short(), %why, retry_in = ?wait * 2, "vpn: cannot lease the exit again");
                    wait = (wait * 2).min(RELEASE_BACKOFF_MAX);
                }
            }
        };
    }
}

impl Vpn {
    /// Creates the TUN device with this node's address and starts
    /// carrying packets over `routing`, and through or as an exit as
    /// `mode` says. Through an exit, the exit is leased before anything
    /// on the host changes, so a refusal leaves it as it was.
    pub async fn start(routing: Routing, mode: Mode) -> Result<Vpn, VpnError> {
        Self::start_in(routing, mode, None).await
    }

    /// As [`Vpn::start`], with the device made in the network namespace
    /// at `namespace` (`/run/netns/<name>`) rather than the process's own:
    /// for several nodes in one process, each its own host (the demo).
    pub async fn start_in_namespace(
        routing: Routing,
        namespace: &std::path::Path,
    ) -> Result<Vpn, VpnError> {
        Self::start_in(routing, Mode::Direct, Some(namespace)).await
    }

    async fn start_in(
        routing: Routing,
        mode: Mode,
        namespace: Option<&std::path::Path>,
    ) -> Result<Vpn, VpnError> {
        let me = routing.node_id();
        let address = address_of(me.as_bytes());
        let mut builder = DeviceBuilder::new()
            .name(DEVICE)
            .ipv6(address, PREFIX.prefix_len())
            .mtu(MTU);
        let (mut exit, mut gateway, mut lease, ipv4) = (None, None, None, ipv4_of(me.as_bytes()));
        let mut ipv4_used = None;
        match mode {
            Mode::Direct => {}
            Mode::Through(through) => {
                let (route, stream) = lease_exit(&routing, through.exit, &through.constraints)
                    .await
                    .map_err(|reason| VpnError::Exit {
                        exit: through.exit.to_string(),
                        reason,
                    })?;
                let meter = through
                    .outbound
                    .meter(through.exit, through.price_per_gib, route);
                exit = Some(ExitLink {
                    node: through.exit,
                    route: Mutex::new(Some(route)),
                    meter,
                    outbound: through.outbound,
                    price_per_gib: through.price_per_gib,
                });
                lease = Some((through.constraints, stream));
                builder = builder.ipv4(ipv4, 32u8, None);
                ipv4_used = Some(ipv4);
            }
            Mode::Gateway(served) => {
                let forwarding = system::start_forwarding(DEVICE)?;
                gateway = Some(Arc::new(gateway::Gateway::new(
                    served,
                    routing.clone(),
                    forwarding,
                )));
                // The whole range is on the device, so the kernel routes
                // every client's IPv4 address into it.
                builder = builder.ipv4(ipv4, PREFIX_V4.prefix_len(), None);
                ipv4_used = Some(ipv4);
            }
        }
        let device = match namespace {
            None => builder.build_async(),
            Some(namespace) => build_in(builder, namespace),
        }
        .map_err(VpnError::Device)?;
        if exit.is_some() {
            let index = device.if_index().map_err(VpnError::Device)?;
            system::take_default_routes(index, ipv4, address).await?;
        }
        let inner = Arc::new(Inner {
            routing: routing.clone(),
            address,
            ipv4: ipv4_used,
            device,
            table: Mutex::new(Table::default()),
            counters: Counters::default(),
            exit,
            gateway,
        });
        if let Some(gateway) = &inner.gateway {
            gateway.offer(&routing)?;
        }
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
        let mut tasks = vec![tokio::spawn(async move {
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
        })];
        if let Some((constraints, stream)) = lease {
            tasks.push(tokio::spawn(hold_lease(
                Arc::downgrade(&inner),
                constraints,
                stream,
            )));
        }
        tracing::info!(%address, ipv4 = ?ipv4_used, device = DEVICE, "vpn: up");
        Ok(Vpn { inner, tasks })
    }

    pub fn status(&self) -> VpnStatus {
        let counters = &self.inner.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        VpnStatus {
            device: DEVICE.to_owned(),
            address: self.inner.address,
            ipv4: self.inner.ipv4,
            mtu: MTU,
            exit: self.inner.exit.as_ref().map(|exit| {
                let leased = exit
                    .route
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_some();
                (exit.node, leased)
            }),
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
            gateway: self.inner.gateway.as_ref().map(|gateway| gateway.stats()),
        }
    }
}

/// The node's VPN switch: up, down, status.
#[derive(Default)]
pub struct Switch {
    vpn: Mutex<Option<Vpn>>,
    /// Held while the VPN goes up or down, so two never overlap.
    changing: tokio::sync::Mutex<()>,
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

    pub async fn up(&self, routing: &Routing, mode: Mode) -> Result<VpnStatus, VpnError> {
        let _changing = self.changing.lock().await;
        if self.lock().is_some() {
            return Err(VpnError::AlreadyUp);
        }
        let started = Vpn::start(routing.clone(), mode).await?;
        let status = started.status();
        *self.lock() = Some(started);
        Ok(status)
    }

    /// Takes the device down, gives back the default routes if it had
    /// them, and closes its routes.
    pub async fn down(&self) -> Result<(), VpnError> {
        let _changing = self.changing.lock().await;
        let stopped = self.lock().take().ok_or(VpnError::NotUp)?;
        let through_exit = stopped.inner.exit.is_some();
        let routes: Vec<RouteId> = stopped
            .inner
            .lock()
            .routes
            .values()
            .filter_map(|state| match state {
                RouteState::Up(route) => Some(*route),
                RouteState::Opening(..) => None,
            })
            .chain(
                stopped
                    .inner
                    .exit
                    .as_ref()
                    .and_then(|exit| *exit.route.lock().unwrap_or_else(|p| p.into_inner())),
            )
            .collect();
        let routing = stopped.inner.routing.clone();
        drop(stopped);
        let given_back = if through_exit {
            system::give_back_default_routes().await
        } else {
            Ok(())
        };
        for route in routes {
            let _ = routing.close(route).await;
        }
        tracing::info!("vpn: down");
        given_back.map_err(VpnError::System)
    }

    pub fn status(&self) -> Option<VpnStatus> {
        self.lock().as_ref().map(Vpn::status)
    }
}
