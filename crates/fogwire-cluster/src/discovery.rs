//! Finding the boards of this cluster on the local network by mDNS
//! (`docs/protocol/cluster.md` §3): each board announces the service
//! `_fogwire._tcp.local.` on every interface, named by its node id, with
//! its link port and the cluster's discovery tag in its TXT record, and
//! browses for the others. An announcement with another tag is passed over
//! without any work; one with ours is only a hint of where to dial: the
//! board behind it is admitted once its link is up and its signed record
//! checks.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use fogwire_identity::NodeId;
use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The DNS-SD service type fogwire boards announce.
pub const SERVICE_TYPE: &str = "_fogwire._tcp.local.";
/// Most addresses taken from one announcement.
const ADDRS_MAX: usize = 8;

/// A board of this cluster heard on the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heard {
    pub node: NodeId,
    pub addrs: Vec<SocketAddr>,
}

/// Why discovery could not start.
#[derive(Debug, thiserror::Error)]
#[error("mDNS discovery: {0}")]
pub struct DiscoveryError(String);

/// A running announcement and browse; stopped when dropped.
pub struct Discovery {
    daemon: ServiceDaemon,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery").finish_non_exhaustive()
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        // Sends goodbyes; the daemon's thread ends on its own.
        let _ = self.daemon.shutdown();
    }
}

/// Announces `me` (listening for links on `port`, at `addrs` when the
/// listener is bound to one address) with discovery tag `tag`, and sends
/// every board heard with the same tag to `heard` (full: dropped; the
/// board is heard again at its next announcement).
pub fn start(
    me: NodeId,
    port: u16,
    addrs: &[IpAddr],
    tag: [u8; 8],
    heard: mpsc::Sender<Heard>,
    stop: CancellationToken,
) -> Result<Discovery, DiscoveryError> {
    let daemon = ServiceDaemon::new().map_err(|e| DiscoveryError(e.to_string()))?;
    let tag = hex::encode(tag);
    let instance = me.to_string();
    let host = format!("{}.local.", &instance[..instance.len().min(20)]);
    let properties = [("v", "1"), ("c", tag.as_str())];
    let info = ServiceInfo::new(SERVICE_TYPE, &instance, &host, addrs, port, &properties[..])
        .map_err(|e| DiscoveryError(e.to_string()))?;
    // A wildcard listener: announce every address the board has, and
    // follow them as interfaces come and go.
    let info = if addrs.is_empty() {
        info.enable_addr_auto()
    } else {
        info
    };
    daemon
        .register(info)
        .map_err(|e| DiscoveryError(e.to_string()))?;
    let events = daemon
        .browse(SERVICE_TYPE)
        .map_err(|e| DiscoveryError(e.to_string()))?;
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                () = stop.cancelled() => return,
                event = events.recv_async() => event,
            };
            let Ok(event) = event else { return };
            let ServiceEvent::ServiceResolved(service) = event else {
                continue;
            };
            // Another cluster's board, or no fogwire record at all: nothing
            // to do, and nothing decoded beyond one property.
            if service.get_property_val_str("c") != Some(tag.as_str()) {
                continue;
            }
            let Some(node) = service
                .fullname
                .strip_suffix(&format!(".{SERVICE_TYPE}"))
                .and_then(|name| name.parse::<NodeId>().ok())
            else {
                continue;
            };
            if node == me {
                continue;
            }
            let port = service.port;
            let mut addrs: Vec<SocketAddr> = service
                .addresses
                .iter()
                .map(|ip| SocketAddr::new(ip.to_ip_addr(), port))
                .filter(|addr| !addr.ip().is_unspecified() && !addr.ip().is_multicast())
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            // IPv4 first, then in a stable order.
            addrs.sort_by_key(|addr| (addr.is_ipv6(), *addr));
            addrs.truncate(ADDRS_MAX);
            if addrs.is_empty() {
                continue;
            }
            let _ = heard.try_send(Heard { node, addrs });
        }
    });
    Ok(Discovery { daemon })
}
