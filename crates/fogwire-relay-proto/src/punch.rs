//! Hole punching: two nodes that reach each other over a route (through
//! a relay) swap the addresses their QUIC sockets are seen at, then dial
//! each other at the same moment, so that each one's NAT has let the
//! other's packets in by the time they arrive (`docs/protocol/relay.md`
//! §3).
//!
//! The messages travel on a route stream to the service `punch`, each
//! framed as `length u8 | message`:
//!
//! ```text
//! 0x01 PUNCH   nonce u64 | count u8 (0..=8) | count × address
//! 0x02 ANSWER  nonce u64 | outcome u8 (0..=2) | count u8 (0..=8) | count × address
//! address:     family u8 (4 or 6) | ip (4 or 16 bytes) | port u16 (1..)
//! ```
//!
//! [`Punches`] is what the answering side allows: each punch makes it
//! send QUIC packets to addresses another node named, so they are
//! bounded per asker and in all, and only addresses that can be a node's
//! are dialed.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use fogwire_identity::NodeId;

/// The route service punches are asked on.
pub const SERVICE: &str = "punch";
/// Addresses one message names at most.
pub const ADDRESSES_MAX: usize = 8;
/// Longest message: an ANSWER naming eight IPv6 addresses.
pub const MESSAGE_LEN_MAX: usize = 1 + 8 + 1 + 1 + ADDRESSES_MAX * (1 + 16 + 2);

const PUNCH: u8 = 0x01;
const ANSWER: u8 = 0x02;

/// How the asked node answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// It dials the asker's addresses now; the asker dials its.
    Ready = 0,
    /// It punches for as many as it will (or for this asker as often).
    Busy = 1,
    /// It has no UDP transport.
    NoUdp = 2,
}

impl Outcome {
    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0 => Self::Ready,
            1 => Self::Busy,
            2 => Self::NoUdp,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Busy => "busy",
            Self::NoUdp => "no UDP transport",
        }
    }
}

/// One message of the `punch` service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PunchMessage {
    Punch {
        nonce: u64,
        addresses: Vec<SocketAddr>,
    },
    Answer {
        nonce: u64,
        outcome: Outcome,
        addresses: Vec<SocketAddr>,
    },
}

/// A message that does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed punch message")]
pub struct Malformed;

impl PunchMessage {
    /// The message, framed (`length u8 | message`). Addresses beyond
    /// [`ADDRESSES_MAX`] are left out.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![0];
        let (nonce, outcome, addresses) = match self {
            PunchMessage::Punch { nonce, addresses } => {
                out.push(PUNCH);
                (nonce, None, addresses)
            }
            PunchMessage::Answer {
                nonce,
                outcome,
                addresses,
            } => {
                out.push(ANSWER);
                (nonce, Some(*outcome), addresses)
            }
        };
        out.extend_from_slice(&nonce.to_be_bytes());
        if let Some(outcome) = outcome {
            out.push(outcome as u8);
        }
        let addresses = &addresses[..addresses.len().min(ADDRESSES_MAX)];
        out.push(addresses.len() as u8);
        for address in addresses {
            match address.ip() {
                IpAddr::V4(ip) => {
                    out.push(4);
                    out.extend_from_slice(&ip.octets());
                }
                IpAddr::V6(ip) => {
                    out.push(6);
                    out.extend_from_slice(&ip.octets());
                }
            }
            out.extend_from_slice(&address.port().to_be_bytes());
        }
        out[0] = (out.len() - 1) as u8;
        out
    }

    /// Decodes one framed message from the start of `bytes`: the message
    /// and the bytes it took, or `None` while more are needed.
    pub fn decode_framed(bytes: &[u8]) -> Result<Option<(PunchMessage, usize)>, Malformed> {
        let Some((&len, rest)) = bytes.split_first() else {
            return Ok(None);
        };
        let len = usize::from(len);
        if len > MESSAGE_LEN_MAX {
            return Err(Malformed);
        }
        let Some(body) = rest.get(..len) else {
            return Ok(None);
        };
        Ok(Some((Self::decode(body)?, 1 + len)))
    }

    /// Decodes one message (without its frame).
    pub fn decode(bytes: &[u8]) -> Result<PunchMessage, Malformed> {
        let (&kind, body) = bytes.split_first().ok_or(Malformed)?;
        let nonce = u64::from_be_bytes(array(body, 0)?);
        let (outcome, mut at) = match kind {
            PUNCH => (None, 8),
            ANSWER => {
                let byte = *body.get(8).ok_or(Malformed)?;
                (Some(Outcome::from_byte(byte).ok_or(Malformed)?), 9)
            }
            _ => return Err(Malformed),
        };
        let count = usize::from(*body.get(at).ok_or(Malformed)?);
        at += 1;
        if count > ADDRESSES_MAX {
            return Err(Malformed);
        }
        let mut addresses = Vec::with_capacity(count);
        for _ in 0..count {
            let family = *body.get(at).ok_or(Malformed)?;
            at += 1;
            let ip = match family {
                4 => {
                    let octets: [u8; 4] = array(body, at)?;
                    at += 4;
                    IpAddr::V4(Ipv4Addr::from(octets))
                }
                6 => {
                    let octets: [u8; 16] = array(body, at)?;
                    at += 16;
                    IpAddr::V6(Ipv6Addr::from(octets))
                }
                _ => return Err(Malformed),
            };
            let port = u16::from_be_bytes(array(body, at)?);
            at += 2;
            if port == 0 {
                return Err(Malformed);
            }
            addresses.push(SocketAddr::new(ip, port));
        }
        if at != body.len() {
            return Err(Malformed);
        }
        Ok(match outcome {
            None => PunchMessage::Punch { nonce, addresses },
            Some(outcome) => PunchMessage::Answer {
                nonce,
                outcome,
                addresses,
            },
        })
    }
}

fn array<const N: usize>(bytes: &[u8], at: usize) -> Result<[u8; N], Malformed> {
    let end = at.checked_add(N).ok_or(Malformed)?;
    bytes
        .get(at..end)
        .and_then(|slice| slice.try_into().ok())
        .ok_or(Malformed)
}

/// Whether `address` can be a node's QUIC socket worth sending to: no
/// wildcard, multicast or broadcast address; loopback only for a node
/// that itself runs on loopback (`loopback_ok`: tests, one machine).
pub fn dialable(address: &SocketAddr, loopback_ok: bool) -> bool {
    let ip = address.ip();
    let bad = ip.is_unspecified()
        || ip.is_multicast()
        || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
        || (ip.is_loopback() && !loopback_ok);
    address.port() != 0 && !bad
}

/// How much punching a node does for others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Punches under way at once, for everyone together.
    pub at_once: usize,
    /// Punches one asker may ask for per [`Limits::window`].
    pub per_peer: u32,
    pub window: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            at_once: 8,
            per_peer: 30,
            window: Duration::from_secs(60),
        }
    }
}

/// Peers remembered at most (their windows); beyond, the oldest window is
/// forgotten.
const PEERS_MAX: usize = 1024;

/// The punches a node does for others: at most one per asker at a time,
/// [`Limits::per_peer`] per window each, [`Limits::at_once`] in all.
#[derive(Debug, Default)]
pub struct Punches {
    limits: Limits,
    running: HashMap<NodeId, Instant>,
    /// Per asker: when its window started, and punches in it.
    windows: HashMap<NodeId, (Instant, u32)>,
}

impl Punches {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Whether to punch for `peer` now; if so it runs until
    /// [`Punches::done`].
    pub fn admit(&mut self, peer: NodeId, now: Instant) -> Outcome {
        if self.running.contains_key(&peer) || self.running.len() >= self.limits.at_once {
            return Outcome::Busy;
        }
        let window = self.limits.window;
        if self.windows.len() >= PEERS_MAX && !self.windows.contains_key(&peer) {
            self.windows
                .retain(|_, (started, _)| now.saturating_duration_since(*started) < window);
            if self.windows.len() >= PEERS_MAX {
                return Outcome::Busy;
            }
        }
        let (started, count) = self.windows.entry(peer).or_insert((now, 0));
        if now.saturating_duration_since(*started) >= window {
            (*started, *count) = (now, 0);
        }
        if *count >= self.limits.per_peer {
            return Outcome::Busy;
        }
        *count += 1;
        self.running.insert(peer, now);
        Outcome::Ready
    }

    /// The punch for `peer` ended.
    pub fn done(&mut self, peer: &NodeId) {
        self.running.remove(peer);
    }

    /// Punches under way.
    pub fn running(&self) -> usize {
        self.running.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fogwire_identity::Keypair;
    use proptest::prelude::*;

    fn id(seed: u8) -> NodeId {
        Keypair::from_seed(&[seed; 32]).node_id()
    }

    #[test]
    fn the_layouts_are_the_documented_ones() {
        let punch = PunchMessage::Punch {
            nonce: 0x0102_0304_0506_0708,
            addresses: vec!["203.0.113.7:7100".parse().unwrap()],
        };
        assert_eq!(
            punch.encode(),
            [
                17, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 1, 4, 203, 0, 113, 7, 0x1b, 0xbc
            ]
        );
        let answer = PunchMessage::Answer {
            nonce: 9,
            outcome: Outcome::Busy,
            addresses: vec![],
        };
        assert_eq!(answer.encode(), [11, 0x02, 0, 0, 0, 0, 0, 0, 0, 9, 1, 0]);
        let full = PunchMessage::Answer {
            nonce: 1,
            outcome: Outcome::Ready,
            addresses: vec!["[2001:db8::1]:1".parse().unwrap(); 9],
        };
        let encoded = full.encode();
        assert_eq!(encoded.len(), 1 + MESSAGE_LEN_MAX, "nine become eight");
        assert!(MESSAGE_LEN_MAX <= usize::from(u8::MAX));
    }

    #[test]
    fn garbage_is_refused_and_a_partial_frame_waits() {
        for bad in [
            &[][..],
            &[0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            // Nine addresses.
            &[0x01, 0, 0, 0, 0, 0, 0, 0, 0, 9],
            // Outcome 3.
            &[0x02, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0],
            // Port 0.
            &[0x01, 0, 0, 0, 0, 0, 0, 0, 0, 1, 4, 1, 2, 3, 4, 0, 0],
            // Family 5.
            &[0x01, 0, 0, 0, 0, 0, 0, 0, 0, 1, 5, 1, 2, 3, 4, 0, 1],
            // A byte too many.
            &[0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ] {
            assert_eq!(PunchMessage::decode(bad), Err(Malformed), "{bad:?}");
        }
        let frame = PunchMessage::Punch {
            nonce: 1,
            addresses: vec![],
        }
        .encode();
        assert_eq!(PunchMessage::decode_framed(&frame[..5]), Ok(None));
        assert_eq!(PunchMessage::decode_framed(&[255]), Err(Malformed));
    }

    #[test]
    fn only_addresses_a_node_can_have_are_dialed() {
        let ok: SocketAddr = "198.51.100.2:7100".parse().unwrap();
        assert!(dialable(&ok, false));
        for bad in [
            "0.0.0.0:7100",
            "224.0.0.1:7100",
            "255.255.255.255:7100",
            "198.51.100.2:0",
            "127.0.0.1:7100",
        ] {
            assert!(!dialable(&bad.parse().unwrap(), false), "{bad}");
        }
        assert!(dialable(&"127.0.0.1:7100".parse().unwrap(), true));
    }

    #[test]
    fn each_asker_gets_one_punch_at_a_time_and_a_few_per_window_and_all_share_a_bound() {
        let now = fogwire_testkit::time::epoch();
        let limits = Limits {
            at_once: 3,
            per_peer: 2,
            window: Duration::from_secs(60),
        };
        let mut punches = Punches::new(limits);
        assert_eq!(punches.admit(id(1), now), Outcome::Ready);
        assert_eq!(punches.admit(id(1), now), Outcome::Busy, "one at a time");
        punches.done(&id(1));
        assert_eq!(punches.admit(id(1), now), Outcome::Ready);
        punches.done(&id(1));
        assert_eq!(punches.admit(id(1), now), Outcome::Busy, "two per window");
        let later = now + Duration::from_secs(61);
        assert_eq!(punches.admit(id(1), later), Outcome::Ready, "a new window");
        assert_eq!(punches.admit(id(2), later), Outcome::Ready);
        assert_eq!(punches.admit(id(3), later), Outcome::Ready);
        assert_eq!(punches.admit(id(4), later), Outcome::Busy, "three at once");
        assert_eq!(punches.running(), 3);
    }

    #[test]
    fn a_flood_of_askers_is_held_to_the_bounds() {
        let now = fogwire_testkit::time::epoch();
        let mut punches = Punches::new(Limits::default());
        let ready = (0..5000u32)
            .filter(|index| {
                let mut seed = [0u8; 32];
                seed[..4].copy_from_slice(&index.to_be_bytes());
                let peer = Keypair::from_seed(&seed).node_id();
                punches.admit(peer, now) == Outcome::Ready
            })
            .count();
        assert_eq!(ready, Limits::default().at_once);
        assert!(punches.windows.len() <= PEERS_MAX);
    }

    fn any_address() -> impl Strategy<Value = SocketAddr> {
        (any::<[u8; 16]>(), 1..=u16::MAX, any::<bool>()).prop_map(|(ip, port, v4)| {
            let ip = if v4 {
                IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]))
            } else {
                IpAddr::V6(Ipv6Addr::from(ip))
            };
            SocketAddr::new(ip, port)
        })
    }

    fn any_message() -> impl Strategy<Value = PunchMessage> {
        let addresses = || proptest::collection::vec(any_address(), 0..=ADDRESSES_MAX);
        prop_oneof![
            (any::<u64>(), addresses())
                .prop_map(|(nonce, addresses)| PunchMessage::Punch { nonce, addresses }),
            (any::<u64>(), 0u8..3, addresses()).prop_map(|(nonce, outcome, addresses)| {
                PunchMessage::Answer {
                    nonce,
                    outcome: Outcome::from_byte(outcome).unwrap(),
                    addresses,
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn every_message_round_trips(message in any_message()) {
            let framed = message.encode();
            prop_assert_eq!(
                PunchMessage::decode_framed(&framed),
                Ok(Some((message, framed.len())))
            );
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(message) = PunchMessage::decode(&bytes) {
                prop_assert_eq!(&message.encode()[1..], &bytes[..]);
            }
        }
    }
}
