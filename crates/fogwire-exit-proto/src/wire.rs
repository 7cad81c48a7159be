//! What a client and an exit say at the start of a route stream to the
//! exit's service: the destination the client wants (an address, or a
//! hostname the exit resolves, so that no name is looked up at the
//! client), then the exit's answer. After a `Connected` answer the stream
//! carries the connection's bytes both ways. Byte layout:
//! `docs/protocol/exit.md` §5.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The version byte that starts every request.
pub const VERSION: u8 = 1;
/// Longest hostname (RFC 1035, without the final dot).
pub const HOSTNAME_LEN_MAX: usize = 253;
/// Longest reason in a reply.
pub const REASON_LEN_MAX: usize = 255;
/// Longest request on the wire: version, kind, length, name, port.
pub const REQUEST_LEN_MAX: usize = 3 + HOSTNAME_LEN_MAX + 2;

/// Where the client wants to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Address(IpAddr),
    /// Resolved by the exit.
    Host(String),
}

/// A request to connect: the first bytes of a stream to the exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub destination: Destination,
    pub port: u16,
}

/// How the exit answers a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// Connected: the connection's bytes follow.
    Connected = 0,
    /// The exit's policy refuses the destination.
    Refused = 1,
    /// The hostname did not resolve (or only to refused addresses).
    NoSuchHost = 2,
    /// The destination refused the connection.
    ConnectionRefused = 3,
    /// The destination did not answer, or no route to it.
    Unreachable = 4,
    /// The client is over its share of the exit (bandwidth or connections).
    Busy = 5,
    /// The client has not paid what the exit charges.
    PaymentRequired = 6,
    /// Anything else; the reason says what.
    Failed = 7,
}

impl Status {
    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0 => Status::Connected,
            1 => Status::Refused,
            2 => Status::NoSuchHost,
            3 => Status::ConnectionRefused,
            4 => Status::Unreachable,
            5 => Status::Busy,
            6 => Status::PaymentRequired,
            7 => Status::Failed,
            _ => return None,
        })
    }
}

/// The exit's answer: a status and, for a failure, why (UTF-8, at most
/// [`REASON_LEN_MAX`] bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: Status,
    pub reason: String,
}

/// Why bytes are not a request or a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// More bytes are needed; this many at least.
    #[error("incomplete: {0} more bytes needed")]
    Incomplete(usize),
    #[error("version {0} is not spoken (this exit speaks 1)")]
    Version(u8),
    #[error("destination kind {0} is unknown")]
    Kind(u8),
    #[error("the hostname is not a valid DNS name")]
    Hostname,
    #[error("port 0 is no destination")]
    Port,
    #[error("status {0} is unknown")]
    Status(u8),
    #[error("the reason is not UTF-8")]
    Reason,
}

const KIND_V4: u8 = 1;
const KIND_V6: u8 = 2;
const KIND_HOST: u8 = 3;

impl Request {
    /// The request's bytes. A hostname is lowercased; one longer than
    /// [`HOSTNAME_LEN_MAX`] or not a DNS name is refused.
    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        if self.port == 0 {
            return Err(DecodeError::Port);
        }
        let mut out = vec![VERSION];
        match &self.destination {
            Destination::Address(IpAddr::V4(v4)) => {
                out.push(KIND_V4);
                out.extend_from_slice(&v4.octets());
            }
            Destination::Address(IpAddr::V6(v6)) => {
                out.push(KIND_V6);
                out.extend_from_slice(&v6.octets());
            }
            Destination::Host(name) => {
                let name = valid_hostname(name.as_bytes()).ok_or(DecodeError::Hostname)?;
                out.push(KIND_HOST);
                out.push(name.len() as u8);
                out.extend_from_slice(name.as_bytes());
            }
        }
        out.extend_from_slice(&self.port.to_be_bytes());
        Ok(out)
    }

    /// A request from the start of `bytes`, and how many bytes it took.
    pub fn decode(bytes: &[u8]) -> Result<(Request, usize), DecodeError> {
        let need = |len: usize| {
            if bytes.len() < len {
                Err(DecodeError::Incomplete(len - bytes.len()))
            } else {
                Ok(())
            }
        };
        need(2)?;
        if bytes[0] != VERSION {
            return Err(DecodeError::Version(bytes[0]));
        }
        let (destination, at) = match bytes[1] {
            KIND_V4 => {
                need(6)?;
                let octets: [u8; 4] = bytes[2..6].try_into().map_err(|_| DecodeError::Kind(1))?;
                (Destination::Address(IpAddr::V4(Ipv4Addr::from(octets))), 6)
            }
            KIND_V6 => {
                need(18)?;
                let octets: [u8; 16] = bytes[2..18].try_into().map_err(|_| DecodeError::Kind(2))?;
                (Destination::Address(IpAddr::V6(Ipv6Addr::from(octets))), 18)
            }
            KIND_HOST => {
                need(3)?;
                let len = usize::from(bytes[2]);
                need(3 + len)?;
                let name = valid_hostname(&bytes[3..3 + len]).ok_or(DecodeError::Hostname)?;
                (Destination::Host(name), 3 + len)
            }
            kind => return Err(DecodeError::Kind(kind)),
        };
        need(at + 2)?;
        let port = u16::from_be_bytes([bytes[at], bytes[at + 1]]);
        if port == 0 {
            return Err(DecodeError::Port);
        }
        Ok((Request { destination, port }, at + 2))
    }
}

impl Reply {
    /// The reply's bytes; a reason longer than [`REASON_LEN_MAX`] is cut
    /// (on a character boundary).
    pub fn encode(&self) -> Vec<u8> {
        let mut end = self.reason.len().min(REASON_LEN_MAX);
        while !self.reason.is_char_boundary(end) {
            end -= 1;
        }
        let reason = &self.reason.as_bytes()[..end];
        let mut out = vec![self.status as u8, reason.len() as u8];
        out.extend_from_slice(reason);
        out
    }

    /// A reply from the start of `bytes`, and how many bytes it took.
    pub fn decode(bytes: &[u8]) -> Result<(Reply, usize), DecodeError> {
        if bytes.len() < 2 {
            return Err(DecodeError::Incomplete(2 - bytes.len()));
        }
        let status = Status::from_byte(bytes[0]).ok_or(DecodeError::Status(bytes[0]))?;
        let len = 2 + usize::from(bytes[1]);
        if bytes.len() < len {
            return Err(DecodeError::Incomplete(len - bytes.len()));
        }
        let reason = std::str::from_utf8(&bytes[2..len]).map_err(|_| DecodeError::Reason)?;
        Ok((
            Reply {
                status,
                reason: reason.to_owned(),
            },
            len,
        ))
    }
}

/// `name` as a DNS hostname, lowercased: 1 to 253 bytes of dot-separated
/// labels of 1 to 63 letters, digits, hyphens or underscores, no label
/// starting or ending with a hyphen. `None` if it is not one.
pub(crate) fn valid_hostname(name: &[u8]) -> Option<String> {
    if name.is_empty() || name.len() > HOSTNAME_LEN_MAX {
        return None;
    }
    let valid_label = |label: &[u8]| {
        (1..=63).contains(&label.len())
            && label
                .iter()
                .all(|byte| byte.is_ascii_alphanumeric() || *byte == b'-' || *byte == b'_')
            && label.first() != Some(&b'-')
            && label.last() != Some(&b'-')
    };
    if !name.split(|byte| *byte == b'.').all(valid_label) {
        return None;
    }
    std::str::from_utf8(name).ok().map(str::to_ascii_lowercase)
}

/// A UDP datagram between a client and an exit, carried in a route
/// datagram to the exit's datagram port (client → exit) or back to the
/// client's (exit → client): `association u32 | destination and port as
/// in a request | payload`. The association names one UDP socket at the
/// exit (one SOCKS UDP ASSOCIATE); from the exit, the address is the
/// datagram's source and is never a hostname.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram<'a> {
    pub association: u32,
    pub peer: Request,
    pub payload: &'a [u8],
}

impl<'a> Datagram<'a> {
    /// The datagram's bytes.
    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        let head = self.peer.encode()?;
        let mut out = Vec::with_capacity(4 + head.len() + self.payload.len());
        out.extend_from_slice(&self.association.to_be_bytes());
        out.extend_from_slice(&head);
        out.extend_from_slice(self.payload);
        Ok(out)
    }

    /// A datagram from its bytes (it must be whole: datagrams are not cut).
    pub fn decode(bytes: &'a [u8]) -> Result<Datagram<'a>, DecodeError> {
        if bytes.len() < 4 {
            return Err(DecodeError::Incomplete(4 - bytes.len()));
        }
        let association = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let (peer, len) = Request::decode(&bytes[4..])?;
        Ok(Datagram {
            association,
            peer,
            payload: &bytes[4 + len..],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn datagrams_carry_an_association_a_peer_and_the_payload() {
        let datagram = Datagram {
            association: 7,
            peer: Request {
                destination: Destination::Host("dns.test".into()),
                port: 53,
            },
            payload: b"query",
        };
        let bytes = datagram.encode().unwrap();
        assert_eq!(bytes[..6], [0, 0, 0, 7, 1, 3]);
        assert_eq!(Datagram::decode(&bytes).unwrap(), datagram);
        assert_eq!(
            Datagram::decode(&bytes[..2]),
            Err(DecodeError::Incomplete(2))
        );
        assert!(matches!(
            Datagram::decode(&bytes[..8]),
            Err(DecodeError::Incomplete(_))
        ));
    }

    #[test]
    fn requests_have_the_documented_bytes() {
        let v4 = Request {
            destination: Destination::Address("93.184.216.34".parse().unwrap()),
            port: 443,
        };
        assert_eq!(v4.encode().unwrap(), [1, 1, 93, 184, 216, 34, 0x01, 0xbb]);
        let host = Request {
            destination: Destination::Host("Example.COM".into()),
            port: 80,
        };
        let bytes = host.encode().unwrap();
        assert_eq!(bytes, b"\x01\x03\x0bexample.com\x00\x50");
        let (decoded, len) = Request::decode(&bytes).unwrap();
        assert_eq!(len, bytes.len());
        assert_eq!(decoded.destination, Destination::Host("example.com".into()));
        let reply = Reply {
            status: Status::Refused,
            reason: "127.0.0.1 is a loopback address".into(),
        };
        let bytes = reply.encode();
        assert_eq!(&bytes[..2], [1, 31]);
        assert_eq!(Reply::decode(&bytes).unwrap(), (reply, 33));
    }

    #[test]
    fn bad_requests_are_named() {
        assert_eq!(Request::decode(&[2, 1]), Err(DecodeError::Version(2)));
        assert_eq!(Request::decode(&[1, 9]), Err(DecodeError::Kind(9)));
        assert_eq!(
            Request::decode(&[1, 1, 1, 2]),
            Err(DecodeError::Incomplete(2))
        );
        assert_eq!(
            Request::decode(&[1, 1, 1, 2, 3, 4, 0, 0]),
            Err(DecodeError::Port)
        );
        for name in [
            &b""[..],
            b"a..b",
            b"-a.b",
            b"a-.b",
            b"a b",
            b"caf\xc3\xa9",
            &[b'a'; 64],
        ] {
            let mut bytes = vec![1, 3, name.len() as u8];
            bytes.extend_from_slice(name);
            bytes.extend_from_slice(&[0, 80]);
            assert_eq!(
                Request::decode(&bytes),
                Err(DecodeError::Hostname),
                "{name:?}"
            );
        }
        assert_eq!(Reply::decode(&[8, 0]), Err(DecodeError::Status(8)));
        assert_eq!(Reply::decode(&[1, 2, 0xff, 0xfe]), Err(DecodeError::Reason));
        // A long reason is cut, never split inside a character.
        let long = Reply {
            status: Status::Failed,
            reason: "é".repeat(200),
        };
        let (decoded, _) = Reply::decode(&long.encode()).unwrap();
        assert_eq!(decoded.reason.len(), 254);
    }

    proptest! {
        #[test]
        fn requests_round_trip_and_any_prefix_is_incomplete(
            address in any::<[u8; 16]>(), v4 in any::<bool>(), port in 1u16..,
            labels in proptest::collection::vec("[a-z0-9_]{1,20}", 1..5), host in any::<bool>(),
        ) {
            let destination = if host {
                Destination::Host(labels.join("."))
            } else if v4 {
                Destination::Address(IpAddr::V4(Ipv4Addr::new(address[0], address[1], address[2], address[3])))
            } else {
                Destination::Address(IpAddr::V6(Ipv6Addr::from(address)))
            };
            let request = Request { destination, port };
            let bytes = request.encode().unwrap();
            prop_assert!(bytes.len() <= REQUEST_LEN_MAX);
            prop_assert_eq!(Request::decode(&bytes), Ok((request, bytes.len())));
            for cut in 0..bytes.len() {
                prop_assert!(matches!(Request::decode(&bytes[..cut]), Err(DecodeError::Incomplete(_))));
            }
        }
    }
}
