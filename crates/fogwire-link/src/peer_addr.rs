use std::fmt;
use std::str::FromStr;

use fogwire_identity::{NodeId, ParseNodeIdError};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Transport;

/// Where to reach a peer and who it must be: `<node id>@<host>:<port>`,
/// or `<node id>@quic:<host>:<port>` to link over QUIC (UDP) instead of
/// TCP.
///
/// The host may be an IP address or a name; names are resolved at each dial,
/// so a board whose address changes is still found.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct PeerAddr {
    pub node_id: NodeId,
    /// `host:port`, as written (without the `quic:` prefix).
    pub address: String,
    pub transport: Transport,
}

/// What `<node id>@quic:<host>:<port>` starts its address with.
const QUIC_PREFIX: &str = "quic:";

impl PeerAddr {
    /// `node_id` at `address` over TCP.
    pub fn tcp(node_id: NodeId, address: impl Into<String>) -> Self {
        Self {
            node_id,
            address: address.into(),
            transport: Transport::Tcp,
        }
    }

    /// `node_id` at `address` over QUIC.
    pub fn quic(node_id: NodeId, address: impl Into<String>) -> Self {
        Self {
            node_id,
            address: address.into(),
            transport: Transport::Quic,
        }
    }
}

/// Why a text is not a peer address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParsePeerAddrError {
    #[error("a peer is written <node id>@<host>:<port>, e.g. fw1…@192.0.2.7:7100")]
    MissingAt,
    #[error("bad node id: {0}")]
    NodeId(#[from] ParseNodeIdError),
    #[error("`{address}` is not <host>:<port> with a port from 1 to 65535")]
    Address { address: String },
}

impl FromStr for PeerAddr {
    type Err = ParsePeerAddrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (node_id, address) = text.split_once('@').ok_or(ParsePeerAddrError::MissingAt)?;
        let node_id: NodeId = node_id.trim().parse()?;
        let address = address.trim();
        let (address, transport) = match address.strip_prefix(QUIC_PREFIX) {
            Some(rest) => (rest, Transport::Quic),
            None => (address, Transport::Tcp),
        };
        let bad_address = || ParsePeerAddrError::Address {
            address: address.to_owned(),
        };
        let (host, port) = address.rsplit_once(':').ok_or_else(bad_address)?;
        let port: u16 = port.parse().map_err(|_| bad_address())?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if port == 0 || host.is_empty() || host.contains(char::is_whitespace) {
            return Err(bad_address());
        }
        Ok(Self {
            node_id,
            address: address.to_owned(),
            transport,
        })
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = match self.transport {
            Transport::Tcp => "",
            Transport::Quic => QUIC_PREFIX,
        };
        write!(f, "{}@{prefix}{}", self.node_id, self.address)
    }
}

impl Serialize for PeerAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PeerAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fogwire_identity::Keypair;

    #[test]
    fn parses_ip_name_and_ipv6_forms() {
        let id = Keypair::from_seed(&[1; 32]).node_id();
        for address in ["192.0.2.7:7100", "board3.local:7100", "[::1]:7100"] {
            let text = format!("{id}@{address}");
            let parsed: PeerAddr = text.parse().unwrap();
            assert_eq!(parsed.node_id, id);
            assert_eq!(parsed.address, address);
            assert_eq!(parsed.transport, Transport::Tcp);
            assert_eq!(parsed.to_string(), text);
            let quic = format!("{id}@quic:{address}");
            let parsed: PeerAddr = quic.parse().unwrap();
            assert_eq!(parsed.address, address);
            assert_eq!(parsed.transport, Transport::Quic);
            assert_eq!(parsed.to_string(), quic);
        }
    }

    #[test]
    fn rejects_missing_parts_with_a_hint() {
        let id = Keypair::from_seed(&[1; 32]).node_id();
        assert_eq!(
            "127.0.0.1:7100".parse::<PeerAddr>(),
            Err(ParsePeerAddrError::MissingAt)
        );
        for address in ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:99999", ":7100"] {
            assert!(matches!(
                format!("{id}@{address}").parse::<PeerAddr>(),
                Err(ParsePeerAddrError::Address { .. })
            ));
        }
        assert!(matches!(
            "fw1nope@127.0.0.1:7100".parse::<PeerAddr>(),
            Err(ParsePeerAddrError::NodeId(_))
        ));
    }
}
