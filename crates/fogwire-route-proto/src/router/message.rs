//! Route messages. Control messages travel on the link channel
//! `ROUTE_CONTROL`, data packets on `ROUTE_DATA`; every integer is
//! big-endian.
//!
//! ```text
//! SETUP      0x01 | prev label u32 | onion (rest)
//! CONFIRM    0x02 | to label u32 | from label u32 | end-to-end blob (rest, ≤ 1024)
//! FAIL       0x03 | to label u32 | 0x00 reason u8                (in clear)
//!                                | 0x01 sealed reason (17 bytes) (sealed to the source)
//! TEARDOWN   0x04 | label u32 | reason u8 | [note: sealed reason (17 bytes)]
//! KEEPALIVE  0x05 | label u32 | seq u32 | echo u8 (0 outbound, 1 echoed back)
//! RECEIPT    0x06 | label u32 | seq u64 | sealed receipt (≤ 512 bytes)
//!
//! data packet: label u32 | kind u8 | length u16 | payload (length bytes)
//! ```

use bytes::Bytes;

use crate::wire::{Reader, Truncated};

pub const TYPE_SETUP: u8 = 0x01;
pub const TYPE_CONFIRM: u8 = 0x02;
pub const TYPE_FAIL: u8 = 0x03;
pub const TYPE_TEARDOWN: u8 = 0x04;
pub const TYPE_KEEPALIVE: u8 = 0x05;
pub const TYPE_RECEIPT: u8 = 0x06;

/// Largest sealed receipt a RECEIPT carries.
pub const SEALED_RECEIPT_MAX: usize = 512;

/// Largest end-to-end blob a CONFIRM carries.
pub const CONFIRM_BLOB_MAX: usize = 1024;
/// Length of a sealed failure reason: one byte and a tag.
pub const SEALED_REASON_LEN: usize = 1 + 16;

/// Why a hop refused or abandoned a route setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailReason {
    /// The hop has no link to the next hop the layer names.
    NoLink,
    /// The next hop could not decrypt its layer (its advertised link key
    /// is out of date, or the onion was damaged).
    NextUndecryptable,
    /// This hop could not decrypt its layer (sent in clear).
    Undecryptable,
    /// The hop's rule table is full.
    RulesFull,
    /// The layer's issue time is too far from the hop's clock.
    Expired,
    /// The layer was seen before.
    Replayed,
    /// The destination refused the session.
    Refused,
    /// The layer could not be parsed.
    Malformed,
    /// The hop lost its link to the next hop (a TEARDOWN's note).
    NextLinkDown,
    /// The destination does not know the session the source asked to
    /// resume (it has closed it).
    UnknownSession,
    /// The hop takes no more setups from its previous hop for now: that
    /// neighbour is over its rate or its share of the hop's rules or replay
    /// memory (sent in clear: it is decided before the layer is opened).
    Busy,
    /// The next hop answered `Busy` (a relay re-seals it, naming the next
    /// hop).
    NextBusy,
}

impl FailReason {
    pub fn code(self) -> u8 {
        match self {
            FailReason::NoLink => 1,
            FailReason::NextUndecryptable => 2,
            FailReason::Undecryptable => 3,
            FailReason::RulesFull => 4,
            FailReason::Expired => 5,
            FailReason::Replayed => 6,
            FailReason::Refused => 7,
            FailReason::Malformed => 8,
            FailReason::NextLinkDown => 9,
            FailReason::UnknownSession => 10,
            FailReason::Busy => 11,
            FailReason::NextBusy => 12,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => FailReason::NoLink,
            2 => FailReason::NextUndecryptable,
            3 => FailReason::Undecryptable,
            4 => FailReason::RulesFull,
            5 => FailReason::Expired,
            6 => FailReason::Replayed,
            7 => FailReason::Refused,
            8 => FailReason::Malformed,
            9 => FailReason::NextLinkDown,
            10 => FailReason::UnknownSession,
            11 => FailReason::Busy,
            12 => FailReason::NextBusy,
            _ => return None,
        })
    }

    pub fn describe(self) -> &'static str {
        match self {
            FailReason::NoLink => "has no link to the next hop",
            FailReason::NextUndecryptable => "says the next hop could not decrypt its layer",
            FailReason::Undecryptable => "could not decrypt its layer",
            FailReason::RulesFull => "has no room for another route",
            FailReason::Expired => "refused a setup issued too long ago (clocks apart?)",
            FailReason::Replayed => "saw this setup before",
            FailReason::Refused => "refused the session",
            FailReason::Malformed => "could not parse its layer",
            FailReason::NextLinkDown => "lost its link to the next hop",
            FailReason::UnknownSession => "no longer knows the session to resume",
            FailReason::Busy => "takes no more setups from its previous hop for now (its quota)",
            FailReason::NextBusy => "says the next hop takes no more setups from it for now",
        }
    }
}

/// Why a route was torn down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TeardownReason {
    /// An end closed it.
    Closed,
    /// A link on the route went down.
    LinkDown,
    /// No keepalive came in time.
    Expired,
}

impl TeardownReason {
    pub fn code(self) -> u8 {
        match self {
            TeardownReason::Closed => 0,
            TeardownReason::LinkDown => 1,
            TeardownReason::Expired => 2,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => TeardownReason::Closed,
            1 => TeardownReason::LinkDown,
            2 => TeardownReason::Expired,
            _ => return None,
        })
    }
}

/// A FAIL's report: in clear (only "I could not decrypt my layer"), or
/// sealed with the failing hop's reply key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailReport {
    Clear(FailReason),
    Sealed([u8; SEALED_REASON_LEN]),
}

/// A decoded control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Setup {
        prev_label: u32,
        onion: Bytes,
    },
    Confirm {
        to_label: u32,
        from_label: u32,
        blob: Bytes,
    },
    Fail {
        to_label: u32,
        report: FailReport,
    },
    Teardown {
        label: u32,
        reason: TeardownReason,
        /// Sealed with the reply key of the hop whose link to its next hop
        /// died, so that only the source learns where the route broke.
        note: Option<[u8; SEALED_REASON_LEN]>,
    },
    Keepalive {
        label: u32,
        seq: u32,
        echo: bool,
    },
    /// A signed receipt for one relay, sealed with its reply key; relays
    /// that cannot open it pass it on towards the destination.
    Receipt {
        label: u32,
        seq: u64,
        sealed: Bytes,
    },
}

/// A control message that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    #[error("empty message")]
    Empty,
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    #[error("malformed {0} message")]
    Malformed(&'static str),
}

impl Control {
    pub fn decode(bytes: Bytes) -> Result<Control, MessageError> {
        let Some(&kind) = bytes.first() else {
            return Err(MessageError::Empty);
        };
        let name = match kind {
            TYPE_SETUP => "SETUP",
            TYPE_CONFIRM => "CONFIRM",
            TYPE_FAIL => "FAIL",
            TYPE_TEARDOWN => "TEARDOWN",
            TYPE_KEEPALIVE => "KEEPALIVE",
            TYPE_RECEIPT => "RECEIPT",
            other => return Err(MessageError::UnknownType(other)),
        };
        let malformed = |_: Truncated| MessageError::Malformed(name);
        let mut reader = Reader::new(&bytes[1..]);
        let label = reader.u32().map_err(malformed)?;
        let message = match kind {
            TYPE_SETUP => Control::Setup {
                prev_label: label,
                onion: bytes.slice(5..),
            },
            TYPE_CONFIRM => {
                let from_label = reader.u32().map_err(malformed)?;
                if bytes.len() - 9 > CONFIRM_BLOB_MAX {
                    return Err(MessageError::Malformed(name));
                }
                Control::Confirm {
                    to_label: label,
                    from_label,
                    blob: bytes.slice(9..),
                }
            }
            TYPE_FAIL => {
                let report = match reader.u8().map_err(malformed)? {
                    0 => FailReport::Clear(
                        FailReason::from_code(reader.u8().map_err(malformed)?)
                            .ok_or(MessageError::Malformed(name))?,
                    ),
                    1 => FailReport::Sealed(reader.array().map_err(malformed)?),
                    _ => return Err(MessageError::Malformed(name)),
                };
                if !reader.is_empty() {
                    return Err(MessageError::Malformed(name));
                }
                Control::Fail {
                    to_label: label,
                    report,
                }
            }
            TYPE_TEARDOWN => {
                let reason = TeardownReason::from_code(reader.u8().map_err(malformed)?)
                    .ok_or(MessageError::Malformed(name))?;
                let note = if reader.is_empty() {
                    None
                } else {
                    Some(reader.array().map_err(malformed)?)
                };
                if !reader.is_empty() {
                    return Err(MessageError::Malformed(name));
                }
                Control::Teardown {
                    label,
                    reason,
                    note,
                }
            }
            TYPE_RECEIPT => {
                let seq = reader.u64().map_err(malformed)?;
                let sealed = bytes.slice(13..);
                if sealed.len() > SEALED_RECEIPT_MAX {
                    return Err(MessageError::Malformed(name));
                }
                Control::Receipt { label, seq, sealed }
            }
            _ => {
                let seq = reader.u32().map_err(malformed)?;
                let echo = match reader.u8().map_err(malformed)? {
                    0 => false,
                    1 => true,
                    _ => return Err(MessageError::Malformed(name)),
                };
                if !reader.is_empty() {
                    return Err(MessageError::Malformed(name));
                }
                Control::Keepalive { label, seq, echo }
            }
        };
        Ok(message)
    }

    pub fn encode(&self) -> Bytes {
        let mut out = Vec::new();
        match self {
            Control::Setup { prev_label, onion } => {
                out.push(TYPE_SETUP);
                out.extend_from_slice(&prev_label.to_be_bytes());
                out.extend_from_slice(onion);
            }
            Control::Confirm {
                to_label,
                from_label,
                blob,
            } => {
                out.push(TYPE_CONFIRM);
                out.extend_from_slice(&to_label.to_be_bytes());
                out.extend_from_slice(&from_label.to_be_bytes());
                out.extend_from_slice(blob);
            }
            Control::Fail { to_label, report } => {
                out.push(TYPE_FAIL);
                out.extend_from_slice(&to_label.to_be_bytes());
                match report {
                    FailReport::Clear(reason) => out.extend_from_slice(&[0, reason.code()]),
                    FailReport::Sealed(sealed) => {
                        out.push(1);
                        out.extend_from_slice(sealed);
                    }
                }
            }
            Control::Teardown {
                label,
                reason,
                note,
            } => {
                out.push(TYPE_TEARDOWN);
                out.extend_from_slice(&label.to_be_bytes());
                out.push(reason.code());
                if let Some(note) = note {
                    out.extend_from_slice(note);
                }
            }
            Control::Receipt { label, seq, sealed } => {
                out.push(TYPE_RECEIPT);
                out.extend_from_slice(&label.to_be_bytes());
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(sealed);
            }
            Control::Keepalive { label, seq, echo } => {
                out.push(TYPE_KEEPALIVE);
                out.extend_from_slice(&label.to_be_bytes());
                out.extend_from_slice(&seq.to_be_bytes());
                out.push(u8::from(*echo));
            }
        }
        Bytes::from(out)
    }
}

/// Length of a data packet's header.
pub const DATA_HEADER_LEN: usize = 7;
/// Data packet kind: an end-to-end session packet.
pub const DATA_KIND_SESSION: u8 = 0x01;

/// The fixed header every data packet starts with; relays rewrite only
/// its label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataHeader {
    pub label: u32,
    pub kind: u8,
    pub len: u16,
}

impl DataHeader {
    pub fn encode(&self) -> [u8; DATA_HEADER_LEN] {
        let mut out = [0u8; DATA_HEADER_LEN];
        out[..4].copy_from_slice(&self.label.to_be_bytes());
        out[4] = self.kind;
        out[5..].copy_from_slice(&self.len.to_be_bytes());
        out
    }

    /// Reads the header of `packet` and checks its length field against
    /// the payload that follows.
    pub fn decode(packet: &[u8]) -> Result<DataHeader, MessageError> {
        if packet.len() < DATA_HEADER_LEN {
            return Err(MessageError::Malformed("data"));
        }
        let header = DataHeader {
            label: u32::from_be_bytes([packet[0], packet[1], packet[2], packet[3]]),
            kind: packet[4],
            len: u16::from_be_bytes([packet[5], packet[6]]),
        };
        if usize::from(header.len) != packet.len() - DATA_HEADER_LEN {
            return Err(MessageError::Malformed("data"));
        }
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_control_message_round_trips() {
        let messages = [
            Control::Setup {
                prev_label: 7,
                onion: Bytes::from_static(b"layers"),
            },
            Control::Confirm {
                to_label: 1,
                from_label: 2,
                blob: Bytes::from_static(b"noise"),
            },
            Control::Fail {
                to_label: 3,
                report: FailReport::Clear(FailReason::Undecryptable),
            },
            Control::Fail {
                to_label: 3,
                report: FailReport::Sealed([9; SEALED_REASON_LEN]),
            },
            Control::Teardown {
                label: 4,
                reason: TeardownReason::LinkDown,
                note: None,
            },
            Control::Teardown {
                label: 4,
                reason: TeardownReason::LinkDown,
                note: Some([3; SEALED_REASON_LEN]),
            },
            Control::Receipt {
                label: 8,
                seq: 9,
                sealed: Bytes::from_static(b"sealed receipt"),
            },
            Control::Keepalive {
                label: 5,
                seq: 6,
                echo: true,
            },
        ];
        for message in messages {
            assert_eq!(Control::decode(message.encode()).unwrap(), message);
        }
    }

    #[test]
    fn data_headers_check_their_length() {
        let header = DataHeader {
            label: 0xdead_beef,
            kind: DATA_KIND_SESSION,
            len: 3,
        };
        let mut packet = header.encode().to_vec();
        packet.extend_from_slice(b"abc");
        assert_eq!(DataHeader::decode(&packet), Ok(header));
        packet.push(0);
        assert!(DataHeader::decode(&packet).is_err());
        assert!(DataHeader::decode(&packet[..6]).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_control_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(message) = Control::decode(Bytes::from(bytes.clone())) {
                prop_assert_eq!(message.encode().to_vec(), bytes);
            }
        }
    }
}
