//! SOCKS version 5 (RFC 1928) and its username/password sub-negotiation
//! (RFC 1929), the server's side, as pure functions over bytes.
//!
//! A node's SOCKS front end reads a client's bytes into a bounded buffer
//! and hands them here; each `decode` says how many bytes it took, asks
//! for more ([`SocksError::Incomplete`]) or names the SOCKS reply code a
//! malformed message earns ([`SocksError::reply_code`]). Hostnames in
//! requests are kept as names, for the exit to resolve.
//!
//! Why not a crate: the SOCKS crates we weighed (`socks5-proto`,
//! `fast-socks5`) read from async streams, so they cannot be fuzzed or
//! tested without I/O, and their errors do not say which reply code a
//! client is owed. The format is small and fixed; this is the part of it
//! a server needs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::wire::{Destination, valid_hostname};

pub const VERSION: u8 = 5;
/// Method: no authentication.
pub const METHOD_NONE: u8 = 0x00;
/// Method: username and password (RFC 1929).
pub const METHOD_PASSWORD: u8 = 0x02;
/// Method reply: none of the offered methods is acceptable.
pub const METHOD_REFUSED: u8 = 0xff;
/// Longest greeting: version, count, 255 methods.
pub const GREETING_LEN_MAX: usize = 2 + 255;
/// Longest username/password message.
pub const CREDENTIALS_LEN_MAX: usize = 3 + 255 + 255;
/// Longest request: version, command, reserved, type, 1 + 255, port.
pub const REQUEST_LEN_MAX: usize = 4 + 1 + 255 + 2;
/// Longest header of a UDP datagram (a domain name's).
pub const UDP_HEADER_LEN_MAX: usize = 4 + 1 + 255 + 2;

/// SOCKS reply codes (RFC 1928 §6).
pub mod reply {
    pub const SUCCEEDED: u8 = 0x00;
    pub const GENERAL_FAILURE: u8 = 0x01;
    pub const NOT_ALLOWED: u8 = 0x02;
    pub const NETWORK_UNREACHABLE: u8 = 0x03;
    pub const HOST_UNREACHABLE: u8 = 0x04;
    pub const CONNECTION_REFUSED: u8 = 0x05;
    pub const TTL_EXPIRED: u8 = 0x06;
    pub const COMMAND_NOT_SUPPORTED: u8 = 0x07;
    pub const ADDRESS_TYPE_NOT_SUPPORTED: u8 = 0x08;
}

const ATYP_V4: u8 = 0x01;
const ATYP_NAME: u8 = 0x03;
const ATYP_V6: u8 = 0x04;

/// Why bytes are not the SOCKS message expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SocksError {
    #[error("incomplete: {0} more bytes needed")]
    Incomplete(usize),
    #[error("not SOCKS version 5 (version byte {0})")]
    Version(u8),
    #[error("a greeting must offer at least one method")]
    NoMethods,
    #[error("username/password version {0} is not 1")]
    CredentialsVersion(u8),
    #[error("command {0} is not supported")]
    Command(u8),
    #[error("address type {0} is not supported")]
    AddressType(u8),
    #[error("reserved byte is {0}, not 0")]
    Reserved(u8),
    #[error("the hostname is not a valid DNS name")]
    Hostname,
    #[error("fragmented UDP datagrams are not supported")]
    Fragment,
}

impl SocksError {
    /// The reply code a request that failed so earns, or `None` when the
    /// client is owed no reply (more bytes are needed, or it does not
    /// speak SOCKS 5 and the connection is simply closed).
    pub fn reply_code(&self) -> Option<u8> {
        match self {
            SocksError::Incomplete(_) | SocksError::Version(_) => None,
            SocksError::Command(_) => Some(reply::COMMAND_NOT_SUPPORTED),
            SocksError::AddressType(_) => Some(reply::ADDRESS_TYPE_NOT_SUPPORTED),
            SocksError::Hostname => Some(reply::HOST_UNREACHABLE),
            _ => Some(reply::GENERAL_FAILURE),
        }
    }
}

fn need(bytes: &[u8], len: usize) -> Result<(), SocksError> {
    if bytes.len() < len {
        Err(SocksError::Incomplete(len - bytes.len()))
    } else {
        Ok(())
    }
}

/// The client's first message: the authentication methods it offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    pub methods: Vec<u8>,
}

impl Greeting {
    pub fn decode(bytes: &[u8]) -> Result<(Greeting, usize), SocksError> {
        need(bytes, 2)?;
        if bytes[0] != VERSION {
            return Err(SocksError::Version(bytes[0]));
        }
        let count = usize::from(bytes[1]);
        if count == 0 {
            return Err(SocksError::NoMethods);
        }
        need(bytes, 2 + count)?;
        let methods = bytes[2..2 + count].to_vec();
        Ok((Greeting { methods }, 2 + count))
    }

    /// The method the server picks: username/password when offered (the
    /// username selects isolation), else none, else refusal.
    pub fn choose(&self) -> u8 {
        if self.methods.contains(&METHOD_PASSWORD) {
            METHOD_PASSWORD
        } else if self.methods.contains(&METHOD_NONE) {
            METHOD_NONE
        } else {
            METHOD_REFUSED
        }
    }
}

/// The server's answer to a greeting.
pub fn method_reply(method: u8) -> [u8; 2] {
    [VERSION, method]
}

/// A username and password (RFC 1929). The password is taken and
/// ignored: the username names an isolation group (and may name an exit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: Vec<u8>,
}

impl Credentials {
    pub fn decode(bytes: &[u8]) -> Result<(Credentials, usize), SocksError> {
        need(bytes, 2)?;
        if bytes[0] != 1 {
            return Err(SocksError::CredentialsVersion(bytes[0]));
        }
        let user_len = usize::from(bytes[1]);
        need(bytes, 2 + user_len + 1)?;
        let username = bytes[2..2 + user_len].to_vec();
        let pass_len = usize::from(bytes[2 + user_len]);
        let len = 3 + user_len + pass_len;
        need(bytes, len)?;
        Ok((Credentials { username }, len))
    }
}

/// The server's answer to credentials: 0 accepts.
pub fn credentials_reply(accepted: bool) -> [u8; 2] {
    [1, if accepted { 0 } else { 1 }]
}

/// What a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Connect,
    UdpAssociate,
}

/// A client's request: a command and a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    pub destination: Destination,
    pub port: u16,
}

/// An address as SOCKS carries it: type, address, port. A name that is
/// an IP address in text is taken as that address.
fn decode_address(bytes: &[u8], at: usize) -> Result<(Destination, u16, usize), SocksError> {
    need(bytes, at + 1)?;
    let (destination, end) = match bytes[at] {
        ATYP_V4 => {
            need(bytes, at + 5)?;
            let mut octets = [0u8; 4];
            octets.copy_from_slice(&bytes[at + 1..at + 5]);
            (
                Destination::Address(IpAddr::V4(Ipv4Addr::from(octets))),
                at + 5,
            )
        }
        ATYP_V6 => {
            need(bytes, at + 17)?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&bytes[at + 1..at + 17]);
            (
                Destination::Address(IpAddr::V6(Ipv6Addr::from(octets))),
                at + 17,
            )
        }
        ATYP_NAME => {
            need(bytes, at + 2)?;
            let len = usize::from(bytes[at + 1]);
            need(bytes, at + 2 + len)?;
            let raw = &bytes[at + 2..at + 2 + len];
            let destination = match std::str::from_utf8(raw)
                .ok()
                .and_then(|text| text.parse::<IpAddr>().ok())
            {
                Some(address) => Destination::Address(address),
                None => Destination::Host(valid_hostname(raw).ok_or(SocksError::Hostname)?),
            };
            (destination, at + 2 + len)
        }
        other => return Err(SocksError::AddressType(other)),
    };
    need(bytes, end + 2)?;
    let port = u16::from_be_bytes([bytes[end], bytes[end + 1]]);
    Ok((destination, port, end + 2))
}

fn encode_address(out: &mut Vec<u8>, address: SocketAddr) {
    match address.ip() {
        IpAddr::V4(v4) => {
            out.push(ATYP_V4);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.push(ATYP_V6);
            out.extend_from_slice(&v6.octets());
        }
    }
    out.extend_from_slice(&address.port().to_be_bytes());
}

impl Request {
    pub fn decode(bytes: &[u8]) -> Result<(Request, usize), SocksError> {
        need(bytes, 4)?;
        if bytes[0] != VERSION {
            return Err(SocksError::Version(bytes[0]));
        }
        // The address is read first: a request must be whole before its
        // command is judged, or the reply would race the rest of it.
        let (destination, port, len) = decode_address(bytes, 3)?;
        let command = match bytes[1] {
            0x01 => Command::Connect,
            0x03 => Command::UdpAssociate,
            other => return Err(SocksError::Command(other)),
        };
        if bytes[2] != 0 {
            return Err(SocksError::Reserved(bytes[2]));
        }
        Ok((
            Request {
                command,
                destination,
                port,
            },
            len,
        ))
    }
}

/// The SOCKS reply code for an exit's answer (`docs/protocol/exit.md`
/// §5).
pub fn reply_for(status: crate::wire::Status) -> u8 {
    use crate::wire::Status;
    match status {
        Status::Connected => reply::SUCCEEDED,
        Status::Refused | Status::PaymentRequired => reply::NOT_ALLOWED,
        Status::NoSuchHost | Status::Unreachable => reply::HOST_UNREACHABLE,
        Status::ConnectionRefused => reply::CONNECTION_REFUSED,
        Status::Busy | Status::Failed => reply::GENERAL_FAILURE,
    }
}

/// A client's request, for fogwire's own tools (the demo, benchmarks):
/// the command, and the destination as an address or a name.
pub fn encode_request(command: Command, destination: &Destination, port: u16) -> Vec<u8> {
    let code = match command {
        Command::Connect => 0x01,
        Command::UdpAssociate => 0x03,
    };
    let mut out = vec![VERSION, code, 0];
    match destination {
        Destination::Address(address) => encode_address(&mut out, SocketAddr::new(*address, port)),
        Destination::Host(name) => {
            out.push(ATYP_NAME);
            out.push(name.len().min(255) as u8);
            out.extend_from_slice(&name.as_bytes()[..name.len().min(255)]);
            out.extend_from_slice(&port.to_be_bytes());
        }
    }
    out
}

/// The server's reply to a request: a code, and the address it bound
/// (the relay's address for UDP ASSOCIATE; any for CONNECT).
pub fn request_reply(code: u8, bound: SocketAddr) -> Vec<u8> {
    let mut out = vec![VERSION, code, 0];
    encode_address(&mut out, bound);
    out
}

/// A UDP datagram between a SOCKS client and the server's relay:
/// `reserved (2) | fragment (1) | address | data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpHeader {
    pub destination: Destination,
    pub port: u16,
}

impl UdpHeader {
    /// The header, and where the datagram's data starts. Fragments are
    /// refused (RFC 1928 lets a server drop them).
    pub fn decode(bytes: &[u8]) -> Result<(UdpHeader, usize), SocksError> {
        need(bytes, 4)?;
        if bytes[0] != 0 || bytes[1] != 0 {
            return Err(SocksError::Reserved(bytes[0] | bytes[1]));
        }
        if bytes[2] != 0 {
            return Err(SocksError::Fragment);
        }
        let (destination, port, len) = decode_address(bytes, 3)?;
        Ok((UdpHeader { destination, port }, len))
    }

    /// The header of a datagram from `source` back to the client.
    pub fn encode_from(source: SocketAddr) -> Vec<u8> {
        let mut out = vec![0, 0, 0];
        encode_address(&mut out, source);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_greeting_picks_password_then_none() {
        let (greeting, len) = Greeting::decode(&[5, 2, 0, 2, 0xaa]).unwrap();
        assert_eq!(len, 4);
        assert_eq!(greeting.choose(), METHOD_PASSWORD);
        assert_eq!(
            Greeting::decode(&[5, 1, 0]).unwrap().0.choose(),
            METHOD_NONE
        );
        assert_eq!(
            Greeting::decode(&[5, 1, 1]).unwrap().0.choose(),
            METHOD_REFUSED
        );
        assert_eq!(Greeting::decode(&[5, 3, 0]), Err(SocksError::Incomplete(2)));
        assert_eq!(Greeting::decode(&[4, 1, 0]), Err(SocksError::Version(4)));
        assert_eq!(Greeting::decode(&[5, 0]), Err(SocksError::NoMethods));
        assert_eq!(method_reply(METHOD_NONE), [5, 0]);
    }

    #[test]
    fn credentials_carry_the_username() {
        let bytes = b"\x01\x05alice\x03pwd";
        let (credentials, len) = Credentials::decode(bytes).unwrap();
        assert_eq!(
            (credentials.username.as_slice(), len),
            (&b"alice"[..], bytes.len())
        );
        assert_eq!(
            Credentials::decode(&bytes[..8]),
            Err(SocksError::Incomplete(3))
        );
        assert_eq!(
            Credentials::decode(b"\x05\x00"),
            Err(SocksError::CredentialsVersion(5))
        );
    }

    #[test]
    fn requests_decode_each_address_type() {
        let v4 = [5, 1, 0, 1, 93, 184, 216, 34, 0, 80];
        let (request, len) = Request::decode(&v4).unwrap();
        assert_eq!(len, 10);
        assert_eq!(request.command, Command::Connect);
        assert_eq!(
            request.destination,
            Destination::Address("93.184.216.34".parse().unwrap())
        );
        assert_eq!(request.port, 80);

        let mut v6 = vec![5, 3, 0, 4];
        v6.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0, 53]);
        let (request, _) = Request::decode(&v6).unwrap();
        assert_eq!(request.command, Command::UdpAssociate);
        assert_eq!(
            request.destination,
            Destination::Address("2001:db8::1".parse().unwrap())
        );

        let name = b"\x05\x01\x00\x03\x0bExample.COM\x01\xbb";
        let (request, len) = Request::decode(name).unwrap();
        assert_eq!(len, name.len());
        assert_eq!(request.destination, Destination::Host("example.com".into()));
        // An address written as a name is that address.
        let literal = b"\x05\x01\x00\x03\x09127.0.0.1\x00\x50";
        let (request, _) = Request::decode(literal).unwrap();
        assert_eq!(
            request.destination,
            Destination::Address("127.0.0.1".parse().unwrap())
        );
    }

    #[test]
    fn bad_requests_earn_their_reply_codes() {
        let code = |bytes: &[u8]| Request::decode(bytes).unwrap_err().reply_code();
        // BIND is not supported.
        assert_eq!(
            code(&[5, 2, 0, 1, 1, 2, 3, 4, 0, 80]),
            Some(reply::COMMAND_NOT_SUPPORTED)
        );
        assert_eq!(
            code(&[5, 1, 0, 9, 1, 2, 3, 4, 0, 80]),
            Some(reply::ADDRESS_TYPE_NOT_SUPPORTED)
        );
        assert_eq!(
            code(b"\x05\x01\x00\x03\x03a b\x00\x50"),
            Some(reply::HOST_UNREACHABLE)
        );
        assert_eq!(
            code(&[5, 1, 7, 1, 1, 2, 3, 4, 0, 80]),
            Some(reply::GENERAL_FAILURE)
        );
        // Not SOCKS 5, or not whole yet: no reply.
        assert_eq!(code(&[4, 1, 0, 80]), None);
        assert_eq!(code(&[5, 1, 0, 1, 1]), None);
        assert_eq!(
            request_reply(reply::SUCCEEDED, "10.0.0.1:1080".parse().unwrap()),
            [5, 0, 0, 1, 10, 0, 0, 1, 0x04, 0x38]
        );
    }

    #[test]
    fn a_client_request_decodes_as_sent() {
        for (destination, port) in [
            (Destination::Host("example.com".into()), 443),
            (Destination::Address("2001:db8::7".parse().unwrap()), 53),
        ] {
            let bytes = encode_request(Command::Connect, &destination, port);
            let (request, len) = Request::decode(&bytes).unwrap();
            assert_eq!(len, bytes.len());
            assert_eq!((request.destination, request.port), (destination, port));
        }
    }

    #[test]
    fn udp_headers_round_trip_and_refuse_fragments() {
        let mut datagram = UdpHeader::encode_from("192.0.2.1:53".parse().unwrap());
        datagram.extend_from_slice(b"answer");
        let (header, at) = UdpHeader::decode(&datagram).unwrap();
        assert_eq!(
            header.destination,
            Destination::Address("192.0.2.1".parse().unwrap())
        );
        assert_eq!((header.port, &datagram[at..]), (53, &b"answer"[..]));
        datagram[2] = 1;
        assert_eq!(UdpHeader::decode(&datagram), Err(SocksError::Fragment));
    }

    proptest! {
        #[test]
        fn no_bytes_make_a_decoder_panic_or_overrun(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok((_, len)) = Greeting::decode(&bytes) { prop_assert!(len <= bytes.len()); }
            if let Ok((_, len)) = Credentials::decode(&bytes) { prop_assert!(len <= bytes.len()); }
            if let Ok((_, len)) = Request::decode(&bytes) { prop_assert!(len <= bytes.len() && len <= REQUEST_LEN_MAX); }
            if let Ok((_, len)) = UdpHeader::decode(&bytes) { prop_assert!(len <= bytes.len() && len <= UDP_HEADER_LEN_MAX); }
        }
    }
}
