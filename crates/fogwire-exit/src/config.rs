//! The `[exit]` and `[socks]` sections of a node's configuration file.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use fogwire_exit_proto::policy::{DENY_PORTS_DEFAULT, parse_network};
use fogwire_exit_proto::{Policy, PortRange};
use fogwire_identity::NodeId;
use fogwire_ledger::Coins;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};
use smart_default::SmartDefault;

use crate::{ExitConfig, ProxyConfig};

/// Port of the SOCKS proxy by default.
pub const DEFAULT_SOCKS_PORT: u16 = 1080;

/// `[exit]`: serving as an exit to the networks this host reaches.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct ExitSection {
    /// Offer the `exit` service, and advertise it.
    pub serve: bool,
    /// Only these networks (empty: the public internet). A network inside
    /// a range refused by default (private, loopback…) opens it.
    pub allow: Vec<Network>,
    /// Never these networks.
    pub deny: Vec<Network>,
    /// Only these ports, or ranges such as "6000-6100" (empty: any).
    pub allow_ports: Vec<Ports>,
    /// Never these ports (SMTP by default, so the exit relays no spam).
    #[default(DENY_PORTS_DEFAULT.iter().map(|port| Ports(PortRange(*port..=*port))).collect())]
    pub deny_ports: Vec<Ports>,
    /// Each client's share of bandwidth, kbit/s both ways (0: no cap).
    pub client_kbps: u32,
    /// Streams one client may have open at once.
    #[default(ExitConfig::default().streams_per_client)]
    pub streams_per_client: usize,
    /// The price per GiB advertised.
    #[default(Coins(0))]
    pub price_per_gib: Coins,
    /// Also forward VPN clients' IP packets (`fogwire vpn up --exit`):
    /// the node brings its TUN device up at start, turns on IP forwarding
    /// and NATs the clients to this host's upstream with nftables. Needs
    /// root (or CAP_NET_ADMIN) and the `nft` program.
    pub vpn: bool,
}

impl ExitSection {
    /// The exit these settings describe, if the node serves one.
    pub fn config(&self) -> Option<ExitConfig> {
        self.serve.then(|| ExitConfig {
            policy: Policy {
                deny: self.deny.iter().map(|n| n.0).collect(),
                allow: self.allow.iter().map(|n| n.0).collect(),
                deny_ports: self.deny_ports.iter().map(|p| p.0.clone()).collect(),
                allow_ports: self.allow_ports.iter().map(|p| p.0.clone()).collect(),
                local_networks: Vec::new(),
            },
            client_kbps: self.client_kbps,
            streams_per_client: self.streams_per_client.max(1),
            price_per_gib: self.price_per_gib.0,
            vpn: self.vpn,
            ..ExitConfig::default()
        })
    }
}

/// `[socks]`: a SOCKS 5 proxy that sends connections through an exit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct SocksSection {
    /// Where to serve SOCKS, e.g. "127.0.0.1:1080", or an address on a
    /// private network to serve the machines of a home; none: no proxy.
    pub listen: Option<SocksListen>,
    /// The exit to use when the SOCKS username names none; none: the
    /// cheapest, nearest one.
    pub exit: Option<NodeId>,
    /// Links on each route to the exit, at least.
    #[default(1)]
    pub min_hops: usize,
}

impl SocksSection {
    /// The proxy these settings describe, if any.
    pub fn config(&self) -> Option<ProxyConfig> {
        self.listen.map(|listen| ProxyConfig {
            exit: self.exit,
            min_hops: self.min_hops.max(1),
            ..ProxyConfig::new(listen.0)
        })
    }

    /// The usual address, for help texts.
    pub fn default_listen() -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_SOCKS_PORT)
    }
}

/// Where a SOCKS proxy may listen: loopback, or an address of a private
/// network (RFC 1918, unique local IPv6, link-local). A SOCKS proxy needs
/// no password here, so on a public address, or on all addresses, it
/// would be an open proxy for anyone: refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocksListen(pub SocketAddr);

impl Serialize for SocksListen {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SocksListen {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let address: SocketAddr = text.parse().map_err(|_| {
            serde::de::Error::custom(format!(
                "`{text}` is not an address:port such as \"127.0.0.1:{DEFAULT_SOCKS_PORT}\""
            ))
        })?;
        let private = match address.ip() {
            IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
            IpAddr::V6(v6) => {
                v6.is_loopback() || v6.is_unique_local() || v6.is_unicast_link_local()
            }
        };
        if !private {
            return Err(serde::de::Error::custom(format!(
                "SOCKS on {} would be an open proxy for anyone who reaches it: listen on \
                 127.0.0.1:{port}, or on this machine's address in a private network \
                 (192.168.x.x, 10.x.x.x, fd…) to serve the machines there",
                address.ip(),
                port = address.port()
            )));
        }
        Ok(SocksListen(address))
    }
}

/// A network in a policy, written "10.1.0.0/16", "2001:db8::/32" or as
/// one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network(pub IpNet);

impl Serialize for Network {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_network(&text)
            .map(Network)
            .map_err(serde::de::Error::custom)
    }
}

/// A port or a range of ports, written 443 or "6000-6100".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ports(pub PortRange);

impl Serialize for Ports {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (first, last) = (self.0.0.start(), self.0.0.end());
        if first == last {
            serializer.serialize_u16(*first)
        } else {
            serializer.collect_str(&format_args!("{first}-{last}"))
        }
    }
}

impl<'de> Deserialize<'de> for Ports {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Port(u64),
            Text(String),
        }
        let text = match Written::deserialize(deserializer)? {
            Written::Port(port) => port.to_string(),
            Written::Text(text) => text,
        };
        text.parse::<PortRange>()
            .map(Ports)
            .map_err(serde::de::Error::custom)
    }
}
