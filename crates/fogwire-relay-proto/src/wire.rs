//! The messages of the reachability channel.
//!
//! Each link message on channel `0x0500` is one message: a type byte, then
//! fixed fields, big-endian, and nothing after them.
//!
//! ```text
//! 0x01 OBSERVED          family u8 (4 or 6) | ip (4 or 16 bytes) | port u16
//! 0x02 DIAL_BACK         nonce u64 | port u16 (1..=65535)
//! 0x03 DIAL_BACK_RESULT  nonce u64 | outcome u8 (0..=3)
//! 0x04 RESERVE           price_max u64
//! 0x05 RESERVATION       outcome u8 (0..=3)
//! ```
//!
//! OBSERVED tells the peer the address its side of the link comes from, as
//! the sender's socket sees it. DIAL_BACK asks the peer to dial the asker
//! at the IP address the peer sees it at (never another: a node cannot be
//! made to dial a third party) and `port`; DIAL_BACK_RESULT says how that
//! went. RESERVE asks a relay to carry traffic for the sender (a node
//! others cannot dial) for as long as their link lasts, at no more than
//! `price_max` per GiB; RESERVATION is the relay's answer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The link channel the messages travel on.
pub const CHANNEL_REACH: u16 = 0x0500;

const OBSERVED: u8 = 0x01;
const DIAL_BACK: u8 = 0x02;
const DIAL_BACK_RESULT: u8 = 0x03;
const RESERVE: u8 = 0x04;
const RESERVATION: u8 = 0x05;

/// Longest message: an OBSERVED with an IPv6 address.
pub const MESSAGE_LEN_MAX: usize = 1 + 1 + 16 + 2;

/// How a dial-back went, as the dialer reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DialOutcome {
    /// The asker answered there, and proved it was the asker.
    Reached = 0,
    /// Nothing answered there in time, or the connection was refused.
    Unreachable = 1,
    /// Another node answered there.
    WrongNode = 2,
    /// The dialer would not dial now (too many checks asked of it).
    Refused = 3,
}

impl DialOutcome {
    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0 => Self::Reached,
            1 => Self::Unreachable,
            2 => Self::WrongNode,
            3 => Self::Refused,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reached => "reached",
            Self::Unreachable => "unreachable",
            Self::WrongNode => "wrong node",
            Self::Refused => "refused",
        }
    }
}

/// A relay's answer to RESERVE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReserveOutcome {
    /// It carries for the sender while their link lasts.
    Accepted = 0,
    /// It carries for as many clients as it will.
    Full = 1,
    /// It is not a relay.
    NotServing = 2,
    /// Its price is above the sender's `price_max`.
    TooExpensive = 3,
}

impl ReserveOutcome {
    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0 => Self::Accepted,
            1 => Self::Full,
            2 => Self::NotServing,
            3 => Self::TooExpensive,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Full => "full",
            Self::NotServing => "not a relay",
            Self::TooExpensive => "too expensive",
        }
    }
}

/// One message of the reachability channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    Observed(SocketAddr),
    DialBack { nonce: u64, port: u16 },
    DialBackResult { nonce: u64, outcome: DialOutcome },
    Reserve { price_max: u64 },
    Reservation { outcome: ReserveOutcome },
}

/// A message that does not parse: unknown type, wrong length, a field
/// out of its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed reachability message")]
pub struct Malformed;

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MESSAGE_LEN_MAX);
        match self {
            Message::Observed(address) => {
                out.push(OBSERVED);
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
            Message::DialBack { nonce, port } => {
                out.push(DIAL_BACK);
                out.extend_from_slice(&nonce.to_be_bytes());
                out.extend_from_slice(&port.to_be_bytes());
            }
            Message::DialBackResult { nonce, outcome } => {
                out.push(DIAL_BACK_RESULT);
                out.extend_from_slice(&nonce.to_be_bytes());
                out.push(*outcome as u8);
            }
            Message::Reserve { price_max } => {
                out.push(RESERVE);
                out.extend_from_slice(&price_max.to_be_bytes());
            }
            Message::Reservation { outcome } => {
                out.push(RESERVATION);
                out.push(*outcome as u8);
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Message, Malformed> {
        let (&kind, body) = bytes.split_first().ok_or(Malformed)?;
        let u16_at =
            |at: usize| -> Result<u16, Malformed> { Ok(u16::from_be_bytes(array(body, at)?)) };
        let u64_at =
            |at: usize| -> Result<u64, Malformed> { Ok(u64::from_be_bytes(array(body, at)?)) };
        match kind {
            OBSERVED => {
                let (&family, rest) = body.split_first().ok_or(Malformed)?;
                let (ip, len) = match family {
                    4 => (IpAddr::V4(Ipv4Addr::from(array::<4>(rest, 0)?)), 4),
                    6 => (IpAddr::V6(Ipv6Addr::from(array::<16>(rest, 0)?)), 16),
                    _ => return Err(Malformed),
                };
                if rest.len() != len + 2 {
                    return Err(Malformed);
                }
                let port = u16::from_be_bytes(array(rest, len)?);
                Ok(Message::Observed(SocketAddr::new(ip, port)))
            }
            DIAL_BACK => {
                let port = u16_at(8)?;
                if body.len() != 10 || port == 0 {
                    return Err(Malformed);
                }
                Ok(Message::DialBack {
                    nonce: u64_at(0)?,
                    port,
                })
            }
            DIAL_BACK_RESULT => {
                if body.len() != 9 {
                    return Err(Malformed);
                }
                let outcome = DialOutcome::from_byte(body[8]).ok_or(Malformed)?;
                Ok(Message::DialBackResult {
                    nonce: u64_at(0)?,
                    outcome,
                })
            }
            RESERVE => {
                if body.len() != 8 {
                    return Err(Malformed);
                }
                Ok(Message::Reserve {
                    price_max: u64_at(0)?,
                })
            }
            RESERVATION => match body {
                [byte] => Ok(Message::Reservation {
                    outcome: ReserveOutcome::from_byte(*byte).ok_or(Malformed)?,
                }),
                _ => Err(Malformed),
            },
            _ => Err(Malformed),
        }
    }
}

fn array<const N: usize>(bytes: &[u8], at: usize) -> Result<[u8; N], Malformed> {
    let end = at.checked_add(N).ok_or(Malformed)?;
    bytes
        .get(at..end)
        .and_then(|slice| slice.try_into().ok())
        .ok_or(Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_layouts_are_the_documented_ones() {
        let observed = Message::Observed("203.0.113.7:7100".parse().unwrap());
        assert_eq!(observed.encode(), [0x01, 4, 203, 0, 113, 7, 0x1b, 0xbc]);
        let dial = Message::DialBack {
            nonce: 0x0102_0304_0506_0708,
            port: 7100,
        };
        assert_eq!(dial.encode(), [0x02, 1, 2, 3, 4, 5, 6, 7, 8, 0x1b, 0xbc]);
        let result = Message::DialBackResult {
            nonce: 9,
            outcome: DialOutcome::WrongNode,
        };
        assert_eq!(result.encode(), [0x03, 0, 0, 0, 0, 0, 0, 0, 9, 2]);
        let reserve = Message::Reserve { price_max: 258 };
        assert_eq!(reserve.encode(), [0x04, 0, 0, 0, 0, 0, 0, 1, 2]);
        let reservation = Message::Reservation {
            outcome: ReserveOutcome::Full,
        };
        assert_eq!(reservation.encode(), [0x05, 1]);
        let v6 = Message::Observed("[2001:db8::1]:1".parse().unwrap());
        assert_eq!(v6.encode().len(), MESSAGE_LEN_MAX);
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            &[][..],
            &[0x00],
            &[0x01, 5, 0, 0, 0, 0, 0, 1],
            &[0x01, 4, 1, 2, 3, 4, 0],
            &[0x01, 4, 1, 2, 3, 4, 0, 1, 9],
            // Port 0 cannot be dialed.
            &[0x02, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0],
            &[0x02, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0],
            &[0x03, 0, 0, 0, 0, 0, 0, 0, 1, 4],
            &[0x03, 0, 0, 0, 0, 0, 0, 0, 1],
            &[0x04, 0, 0, 0, 0, 0, 0, 0],
            &[0x05, 4],
            &[0x05],
            &[0x06],
        ] {
            assert_eq!(Message::decode(bad), Err(Malformed), "{bad:?}");
        }
    }

    fn any_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (any::<[u8; 16]>(), any::<u16>(), any::<bool>()).prop_map(|(ip, port, v4)| {
                let ip = if v4 {
                    IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]))
                } else {
                    IpAddr::V6(Ipv6Addr::from(ip))
                };
                Message::Observed(SocketAddr::new(ip, port))
            }),
            (any::<u64>(), 1..=u16::MAX)
                .prop_map(|(nonce, port)| Message::DialBack { nonce, port }),
            (any::<u64>(), 0u8..4).prop_map(|(nonce, outcome)| Message::DialBackResult {
                nonce,
                outcome: DialOutcome::from_byte(outcome).unwrap(),
            }),
            any::<u64>().prop_map(|price_max| Message::Reserve { price_max }),
            (0u8..4).prop_map(|outcome| Message::Reservation {
                outcome: ReserveOutcome::from_byte(outcome).unwrap(),
            }),
        ]
    }

    proptest! {
        #[test]
        fn every_message_round_trips(message in any_message()) {
            prop_assert_eq!(Message::decode(&message.encode()), Ok(message));
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(message) = Message::decode(&bytes) {
                prop_assert_eq!(message.encode(), bytes);
            }
        }
    }
}
