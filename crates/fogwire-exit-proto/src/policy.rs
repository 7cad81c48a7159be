//! Which destinations an exit forwards its clients' traffic to.
//!
//! An exit is a door from the fogwire network into whatever networks the
//! exit's host can reach — including its loopback, its LAN and its
//! router's admin page. So by default an exit refuses every address that
//! is not a public unicast address ([`reserved`]), and its host's own
//! networks; the operator opens a private network only by naming it (or a
//! part of it) in `allow`. Addresses that smuggle an IPv4 address inside
//! IPv6 (IPv4-mapped, NAT64, 6to4) are judged as the IPv4 address they
//! carry, so `::ffff:127.0.0.1` is loopback.
//!
//! The order of the checks, first match wins:
//! 1. a network in `deny` → refused;
//! 2. a port in `deny_ports`, or not in a non-empty `allow_ports` →
//!    refused;
//! 3. a reserved or local address → refused, unless an `allow` entry holds
//!    it *and* lies inside that reserved range (allowing `0.0.0.0/0` opens
//!    no private network; allowing `192.168.7.0/24` opens that one);
//! 4. a non-empty `allow` that holds no entry for it → refused;
//! 5. forwarded.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Ports an exit refuses unless told otherwise: SMTP, so that an exit is
/// not a spam relay (Tor's default exit policy refuses it too).
pub const DENY_PORTS_DEFAULT: &[u16] = &[25];

/// What an exit forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Networks refused, whatever else says.
    pub deny: Vec<IpNet>,
    /// If not empty, only these networks are forwarded to. Naming a network
    /// inside a range refused by default opens it.
    pub allow: Vec<IpNet>,
    /// Ports refused.
    pub deny_ports: Vec<PortRange>,
    /// If not empty, only these ports are forwarded to.
    pub allow_ports: Vec<PortRange>,
    /// The networks of the exit host's own interfaces: refused like
    /// private ones (a public address of its own included).
    pub local_networks: Vec<IpNet>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            deny: Vec::new(),
            allow: Vec::new(),
            deny_ports: DENY_PORTS_DEFAULT
                .iter()
                .map(|port| PortRange(*port..=*port))
                .collect(),
            allow_ports: Vec::new(),
            local_networks: Vec::new(),
        }
    }
}

/// Why an exit refuses a destination.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    #[error("{network} is in the exit's deny list")]
    Denied { network: IpNet },
    #[error("port {port} is refused by the exit's policy")]
    Port { port: u16 },
    #[error(
        "{address} is a {kind} address; an exit forwards to it only if its operator allows that network"
    )]
    Reserved { address: IpAddr, kind: &'static str },
    #[error("{address} is on the exit's own network {network}")]
    Local { address: IpAddr, network: IpNet },
    #[error("{address} is not in the exit's allow list")]
    NotAllowed { address: IpAddr },
}

impl Refusal {
    /// A short stable name, for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Denied { .. } => "denied",
            Refusal::Port { .. } => "port",
            Refusal::Reserved { .. } => "reserved",
            Refusal::Local { .. } => "local",
            Refusal::NotAllowed { .. } => "not_allowed",
        }
    }
}

impl Policy {
    /// Whether the exit forwards to `destination`, and if not, why.
    pub fn check(&self, destination: SocketAddr) -> Result<(), Refusal> {
        let address = canonical(destination.ip());
        let port = destination.port();
        if let Some(network) = self.deny.iter().find(|net| net.contains(&address)) {
            return Err(Refusal::Denied { network: *network });
        }
        let port_allowed = self.allow_ports.is_empty()
            || self.allow_ports.iter().any(|range| range.contains(port));
        if !port_allowed || self.deny_ports.iter().any(|range| range.contains(port)) {
            return Err(Refusal::Port { port });
        }
        // An allow entry opens a refused range only from inside it.
        let opened_within = |range: &IpNet| {
            self.allow
                .iter()
                .any(|allowed| allowed.contains(&address) && range.contains(allowed))
        };
        let local = self.local_networks.iter().find(|n| n.contains(&address));
        match (reserved(address), local) {
            (Some((range, kind)), _) if !opened_within(&range) => {
                return Err(Refusal::Reserved { address, kind });
            }
            (None, Some(network)) if !opened_within(network) => {
                return Err(Refusal::Local {
                    address,
                    network: *network,
                });
            }
            _ => {}
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|net| net.contains(&address)) {
            return Err(Refusal::NotAllowed { address });
        }
        Ok(())
    }

    /// The policy in a few words, for adverts and `fogwire exits`: at most
    /// [`SUMMARY_LEN_MAX`] bytes.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        parts.push(if self.allow.is_empty() {
            "public internet".to_owned()
        } else {
            match self.allow.len() {
                1 => "1 network".to_owned(),
                count => format!("{count} networks"),
            }
        });
        if !self.deny.is_empty() {
            parts.push(format!("{} denied", self.deny.len()));
        }
        let ports = |ranges: &[PortRange]| {
            ranges
                .iter()
                .map(PortRange::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        if !self.allow_ports.is_empty() {
            parts.push(format!("ports {}", ports(&self.allow_ports)));
        }
        if !self.deny_ports.is_empty() {
            parts.push(format!("not {}", ports(&self.deny_ports)));
        }
        let mut summary = parts.join("; ");
        if summary.len() > SUMMARY_LEN_MAX {
            let mut end = SUMMARY_LEN_MAX - 3;
            while !summary.is_char_boundary(end) {
                end -= 1;
            }
            summary.truncate(end);
            summary.push('…');
        }
        summary
    }
}

/// Longest policy summary.
pub const SUMMARY_LEN_MAX: usize = 96;

/// A range of ports, `80` or `6000-6100` in text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRange(pub RangeInclusive<u16>);

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        self.0.contains(&port)
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.0.start(), self.0.end()) {
            (start, end) if start == end => write!(f, "{start}"),
            (start, end) => write!(f, "{start}-{end}"),
        }
    }
}

/// Why a network or port range in a policy cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("`{0}` is not a network such as \"192.168.7.0/24\", \"2001:db8::/32\" or an address")]
    Network(String),
    #[error("`{0}` is not a port or a port range such as \"443\" or \"6000-6100\" (1 to 65535)")]
    Ports(String),
}

impl FromStr for PortRange {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || ParseError::Ports(text.to_owned());
        let port = |part: &str| {
            part.trim()
                .parse::<u16>()
                .ok()
                .filter(|port| *port > 0)
                .ok_or_else(error)
        };
        let (start, end) = match text.split_once('-') {
            Some((start, end)) => (port(start)?, port(end)?),
            None => (port(text)?, port(text)?),
        };
        if start > end {
            return Err(error());
        }
        Ok(PortRange(start..=end))
    }
}

/// A network in a policy: `a.b.c.d/n`, `x::/n`, or one address.
pub fn parse_network(text: &str) -> Result<IpNet, ParseError> {
    let text = text.trim();
    if let Ok(network) = text.parse::<IpNet>() {
        return Ok(network.trunc());
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| ParseError::Network(text.to_owned()))
}

/// The address a destination really names: an IPv4 address carried in
/// IPv6 (IPv4-mapped `::ffff:0:0/96`, NAT64 `64:ff9b::/96`, 6to4
/// `2002::/16`) is that IPv4 address.
pub fn canonical(address: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = address else {
        return address;
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let octets = v6.octets();
    let nat64 = v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    if nat64 {
        return IpAddr::V4(Ipv4Addr::new(
            octets[12], octets[13], octets[14], octets[15],
        ));
    }
    if v6.segments()[0] == 0x2002 {
        return IpAddr::V4(Ipv4Addr::new(octets[2], octets[3], octets[4], octets[5]));
    }
    address
}

/// The range refused by default that holds `address`, and what it is;
/// `None` for a public unicast address.
pub fn reserved(address: IpAddr) -> Option<(IpNet, &'static str)> {
    const V4: &[([u8; 4], u8, &str)] = &[
        ([0, 0, 0, 0], 8, "\"this network\""),
        ([10, 0, 0, 0], 8, "private"),
        ([100, 64, 0, 0], 10, "shared (carrier-grade NAT)"),
        ([127, 0, 0, 0], 8, "loopback"),
        ([169, 254, 0, 0], 16, "link-local"),
        ([172, 16, 0, 0], 12, "private"),
        ([192, 0, 0, 0], 24, "IETF protocol"),
        ([192, 168, 0, 0], 16, "private"),
        ([198, 18, 0, 0], 15, "benchmarking"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([240, 0, 0, 0], 4, "reserved"),
    ];
    const V6: &[([u16; 8], u8, &str)] = &[
        (
            [0, 0, 0, 0, 0, 0, 0, 0],
            96,
            "unspecified or IPv4-compatible",
        ),
        ([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "discard"),
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, "unique local (private)"),
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "link-local"),
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, "site-local"),
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "multicast"),
    ];
    match canonical(address) {
        IpAddr::V4(v4) => V4.iter().find_map(|(network, prefix, kind)| {
            let net = Ipv4Net::new(Ipv4Addr::from(*network), *prefix).ok()?;
            net.contains(&v4).then_some((IpNet::V4(net), *kind))
        }),
        IpAddr::V6(v6) => {
            if v6 == Ipv6Addr::LOCALHOST {
                let net = Ipv6Net::new(v6, 128).ok()?;
                return Some((IpNet::V6(net), "loopback"));
            }
            V6.iter().find_map(|(network, prefix, kind)| {
                let net = Ipv6Net::new(Ipv6Addr::from(*network), *prefix).ok()?;
                net.contains(&v6).then_some((IpNet::V6(net), *kind))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn net(text: &str) -> IpNet {
        parse_network(text).unwrap()
    }

    #[test]
    fn by_default_only_public_unicast_addresses_are_forwarded() {
        let policy = Policy::default();
        for public in ["93.184.216.34:443", "[2606:2800:220:1::]:80", "1.1.1.1:53"] {
            assert_eq!(policy.check(at(public)), Ok(()), "{public}");
        }
        for (refused, kind) in [
            ("127.0.0.1:80", "loopback"),
            ("[::1]:80", "loopback"),
            ("10.1.2.3:22", "private"),
            ("172.20.0.1:80", "private"),
            ("192.168.1.1:80", "private"),
            ("100.100.0.1:80", "shared (carrier-grade NAT)"),
            ("169.254.169.254:80", "link-local"),
            ("[fe80::1]:80", "link-local"),
            ("[fd00::1]:80", "unique local (private)"),
            ("224.0.0.251:5353", "multicast"),
            ("[ff02::1]:80", "multicast"),
            ("0.0.0.0:80", "\"this network\""),
            ("255.255.255.255:80", "reserved"),
            ("[::]:80", "unspecified or IPv4-compatible"),
        ] {
            match policy.check(at(refused)) {
                Err(Refusal::Reserved { kind: found, .. }) => assert_eq!(found, kind, "{refused}"),
                other => panic!("{refused}: {other:?}"),
            }
        }
        // SMTP is refused by default, anywhere.
        assert_eq!(
            policy.check(at("93.184.216.34:25")),
            Err(Refusal::Port { port: 25 })
        );
    }

    #[test]
    fn ipv4_smuggled_in_ipv6_is_judged_as_the_ipv4_address() {
        let policy = Policy::default();
        for smuggled in [
            "[::ffff:127.0.0.1]:80",
            "[64:ff9b::7f00:1]:80",
            "[2002:7f00:1::1]:80",
            "[::ffff:192.168.1.1]:80",
            "[64:ff9b::a00:1]:80",
        ] {
            assert!(
                matches!(policy.check(at(smuggled)), Err(Refusal::Reserved { .. })),
                "{smuggled}"
            );
        }
        assert_eq!(policy.check(at("[::ffff:93.184.216.34]:443")), Ok(()));
    }

    #[test]
    fn allowing_a_private_network_takes_naming_it() {
        let policy = Policy {
            allow: vec![net("0.0.0.0/0"), net("::/0"), net("192.168.7.0/24")],
            ..Policy::default()
        };
        // Everything public is allowed, and the named LAN…
        assert_eq!(policy.check(at("93.184.216.34:80")), Ok(()));
        assert_eq!(policy.check(at("192.168.7.20:8080")), Ok(()));
        // …but "everything" opens no other private range, nor loopback.
        assert!(policy.check(at("192.168.8.1:80")).is_err());
        assert!(policy.check(at("127.0.0.1:80")).is_err());
        assert!(policy.check(at("[::1]:80")).is_err());
    }

    #[test]
    fn the_exits_own_networks_are_refused_unless_named() {
        let mut policy = Policy {
            local_networks: vec![net("203.0.113.0/24")],
            ..Policy::default()
        };
        assert_eq!(
            policy.check(at("203.0.113.9:80")),
            Err(Refusal::Local {
                address: "203.0.113.9".parse().unwrap(),
                network: net("203.0.113.0/24"),
            })
        );
        policy.allow = vec![net("203.0.113.9")];
        assert_eq!(policy.check(at("203.0.113.9:80")), Ok(()));
        assert!(matches!(
            policy.check(at("198.51.100.1:80")),
            Err(Refusal::NotAllowed { .. })
        ));
    }

    #[test]
    fn deny_lists_and_port_lists_win() {
        let policy = Policy {
            allow: vec![net("192.168.7.0/24")],
            deny: vec![net("192.168.7.1")],
            allow_ports: vec!["80".parse().unwrap(), "8000-8100".parse().unwrap()],
            ..Policy::default()
        };
        assert_eq!(
            policy.check(at("192.168.7.1:80")),
            Err(Refusal::Denied {
                network: net("192.168.7.1/32")
            })
        );
        assert_eq!(policy.check(at("192.168.7.2:8050")), Ok(()));
        assert_eq!(
            policy.check(at("192.168.7.2:443")),
            Err(Refusal::Port { port: 443 })
        );
        assert_eq!(
            policy.summary(),
            "1 network; 1 denied; ports 80,8000-8100; not 25"
        );
    }

    #[test]
    fn networks_and_ports_are_read_strictly() {
        assert_eq!(net("192.168.7.9/24"), net("192.168.7.0/24"));
        assert_eq!(net("2001:db8::1"), net("2001:db8::1/128"));
        assert!(parse_network("192.168.7.0/33").is_err());
        assert!(parse_network("lan").is_err());
        for bad in ["0", "65536", "90-80", "http", "1-2-3", ""] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
        assert_eq!(
            "6000-6100".parse::<PortRange>().unwrap().to_string(),
            "6000-6100"
        );
    }

    #[test]
    fn a_long_summary_is_cut_to_its_bound() {
        let policy = Policy {
            allow_ports: (1..200)
                .map(|port| PortRange(port * 2..=port * 2))
                .collect(),
            ..Policy::default()
        };
        let summary = policy.summary();
        assert!(summary.len() <= SUMMARY_LEN_MAX, "{}", summary.len());
        assert!(summary.ends_with('…'));
    }

    proptest! {
        #[test]
        fn a_mapped_address_is_judged_like_its_ipv4(bits in any::<u32>(), port in 1u16..) {
            let v4 = Ipv4Addr::from(bits);
            let policy = Policy::default();
            let direct = policy.check(SocketAddr::new(IpAddr::V4(v4), port));
            let mapped = policy.check(SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), port));
            prop_assert_eq!(direct.is_ok(), mapped.is_ok());
        }

        #[test]
        fn the_defaults_refuse_every_loopback_and_private_address_at_any_port(
            host in any::<u32>(), port in any::<u16>()
        ) {
            let policy = Policy::default();
            for network in [[127, 0, 0, 0], [10, 0, 0, 0], [192, 168, 0, 0]] {
                let prefix = if network[0] == 192 { 16 } else { 8 };
                let mask = u32::MAX >> prefix;
                let address = Ipv4Addr::from(u32::from(Ipv4Addr::from(network)) | (host & mask));
                prop_assert!(policy.check(SocketAddr::new(IpAddr::V4(address), port)).is_err());
            }
        }
    }
}
