//! Frames: the plaintext inside each encrypted record once the handshake is
//! done. Every record carries exactly one frame; the first byte is its type.
//!
//! ```text
//! DATA           0x00 | channel u16 | payload (0..=65 516 bytes)
//! WINDOW_UPDATE  0x01 | channel u16 | increment u32 (> 0)
//! PING           0x02 | nonce u64
//! PONG           0x03 | nonce u64
//! CLOSE          0x04 | code u16 | reason (UTF-8, 0..=256 bytes)
//! SEALED_DATA    0x05 | channel u16 | body length u16 | prefix (0..=16 bytes)
//! ```
//!
//! A SEALED_DATA frame is one message whose body is already sealed (AEAD)
//! for its final reader: the body follows the record's encrypted part in
//! the clear, and the message is the prefix followed by that body. See
//! [`crate::record`] and `docs/protocol/link.md` §4.
//!
//! All integers are big-endian. Each frame's length is fixed or implied by
//! the record, so there are no inner length fields to disagree with it.

use bytes::Bytes;

use crate::error::ProtocolError;
use crate::{ChannelId, MESSAGE_LEN_MAX, PREFIX_LEN_MAX};

pub const TYPE_DATA: u8 = 0x00;
pub const TYPE_WINDOW_UPDATE: u8 = 0x01;
pub const TYPE_PING: u8 = 0x02;
pub const TYPE_PONG: u8 = 0x03;
pub const TYPE_CLOSE: u8 = 0x04;
pub const TYPE_SEALED_DATA: u8 = 0x05;

pub const DATA_HEADER_LEN: usize = 3;
pub const SEALED_DATA_HEADER_LEN: usize = 5;
const WINDOW_UPDATE_LEN: usize = 7;
const PING_LEN: usize = 9;
const CLOSE_HEADER_LEN: usize = 3;
/// Longest reason text in a CLOSE frame; longer text is cut at a character
/// boundary when encoding.
pub const CLOSE_REASON_LEN_MAX: usize = 256;

/// One decoded frame.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Frame {
    Data {
        channel: ChannelId,
        payload: Bytes,
    },
    WindowUpdate {
        channel: ChannelId,
        increment: u32,
    },
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    Close {
        code: u16,
        reason: String,
    },
    /// The encrypted part of a message whose body travels in the clear
    /// after it: the channel, the body's length and the message's prefix.
    SealedData {
        channel: ChannelId,
        body_len: u16,
        prefix: Bytes,
    },
}

fn malformed(frame: &'static str, detail: &'static str) -> ProtocolError {
    ProtocolError::MalformedFrame { frame, detail }
}

fn exact_len(frame: &'static str, bytes: &[u8], len: usize) -> Result<(), ProtocolError> {
    if bytes.len() == len {
        Ok(())
    } else {
        Err(malformed(frame, "wrong length"))
    }
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

impl Frame {
    /// Decodes one frame from a record's plaintext. `DATA` payloads are
    /// slices of `plaintext`, not copies.
    pub fn decode(plaintext: Bytes) -> Result<Frame, ProtocolError> {
        let Some(&frame_type) = plaintext.first() else {
            return Err(malformed("empty", "no type byte"));
        };
        match frame_type {
            TYPE_DATA => {
                if plaintext.len() < DATA_HEADER_LEN {
                    return Err(malformed("DATA", "shorter than its header"));
                }
                if plaintext.len() - DATA_HEADER_LEN > MESSAGE_LEN_MAX {
                    return Err(malformed("DATA", "payload above the message limit"));
                }
                Ok(Frame::Data {
                    channel: ChannelId(u16_at(&plaintext, 1)),
                    payload: plaintext.slice(DATA_HEADER_LEN..),
                })
            }
            TYPE_WINDOW_UPDATE => {
                exact_len("WINDOW_UPDATE", &plaintext, WINDOW_UPDATE_LEN)?;
                let increment =
                    u32::from_be_bytes([plaintext[3], plaintext[4], plaintext[5], plaintext[6]]);
                if increment == 0 {
                    return Err(malformed("WINDOW_UPDATE", "zero increment"));
                }
                Ok(Frame::WindowUpdate {
                    channel: ChannelId(u16_at(&plaintext, 1)),
                    increment,
                })
            }
            TYPE_PING | TYPE_PONG => {
                let name = if frame_type == TYPE_PING {
                    "PING"
                } else {
                    "PONG"
                };
                exact_len(name, &plaintext, PING_LEN)?;
                let mut nonce = [0u8; 8];
                nonce.copy_from_slice(&plaintext[1..9]);
                let nonce = u64::from_be_bytes(nonce);
                Ok(if frame_type == TYPE_PING {
                    Frame::Ping { nonce }
                } else {
                    Frame::Pong { nonce }
                })
            }
            TYPE_CLOSE => {
                if plaintext.len() < CLOSE_HEADER_LEN {
                    return Err(malformed("CLOSE", "shorter than its header"));
                }
                if plaintext.len() - CLOSE_HEADER_LEN > CLOSE_REASON_LEN_MAX {
                    return Err(malformed("CLOSE", "reason above 256 bytes"));
                }
                let reason = std::str::from_utf8(&plaintext[CLOSE_HEADER_LEN..])
                    .map_err(|_| malformed("CLOSE", "reason is not UTF-8"))?;
                Ok(Frame::Close {
                    code: u16_at(&plaintext, 1),
                    reason: reason.to_owned(),
                })
            }
            TYPE_SEALED_DATA => {
                if plaintext.len() < SEALED_DATA_HEADER_LEN {
                    return Err(malformed("SEALED_DATA", "shorter than its header"));
                }
                if plaintext.len() - SEALED_DATA_HEADER_LEN > PREFIX_LEN_MAX {
                    return Err(malformed("SEALED_DATA", "prefix above 16 bytes"));
                }
                let body_len = u16_at(&plaintext, 3);
                if plaintext.len() - SEALED_DATA_HEADER_LEN + usize::from(body_len)
                    > MESSAGE_LEN_MAX
                {
                    return Err(malformed("SEALED_DATA", "message above the message limit"));
                }
                Ok(Frame::SealedData {
                    channel: ChannelId(u16_at(&plaintext, 1)),
                    body_len,
                    prefix: plaintext.slice(SEALED_DATA_HEADER_LEN..),
                })
            }
            frame_type => Err(ProtocolError::UnknownFrameType { frame_type }),
        }
    }

    /// Bytes [`Frame::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        match self {
            Frame::Data { payload, .. } => DATA_HEADER_LEN + payload.len(),
            Frame::WindowUpdate { .. } => WINDOW_UPDATE_LEN,
            Frame::Ping { .. } | Frame::Pong { .. } => PING_LEN,
            Frame::Close { reason, .. } => CLOSE_HEADER_LEN + truncated_reason(reason).len(),
            Frame::SealedData { prefix, .. } => SEALED_DATA_HEADER_LEN + prefix.len(),
        }
    }

    /// Writes the frame at the start of `out`, which must hold
    /// [`Frame::encoded_len`] bytes; returns that length.
    pub fn encode(&self, out: &mut [u8]) -> usize {
        match self {
            Frame::Data { channel, payload } => {
                encode_data_header(*channel, out);
                out[DATA_HEADER_LEN..DATA_HEADER_LEN + payload.len()].copy_from_slice(payload);
                DATA_HEADER_LEN + payload.len()
            }
            Frame::WindowUpdate { channel, increment } => {
                out[0] = TYPE_WINDOW_UPDATE;
                out[1..3].copy_from_slice(&channel.0.to_be_bytes());
                out[3..7].copy_from_slice(&increment.to_be_bytes());
                WINDOW_UPDATE_LEN
            }
            Frame::Ping { nonce } | Frame::Pong { nonce } => {
                out[0] = if matches!(self, Frame::Ping { .. }) {
                    TYPE_PING
                } else {
                    TYPE_PONG
                };
                out[1..9].copy_from_slice(&nonce.to_be_bytes());
                PING_LEN
            }
            Frame::Close { code, reason } => {
                let reason = truncated_reason(reason);
                out[0] = TYPE_CLOSE;
                out[1..3].copy_from_slice(&code.to_be_bytes());
                out[3..3 + reason.len()].copy_from_slice(reason.as_bytes());
                CLOSE_HEADER_LEN + reason.len()
            }
            Frame::SealedData {
                channel,
                body_len,
                prefix,
            } => {
                encode_sealed_data_header(*channel, *body_len, out);
                let end = SEALED_DATA_HEADER_LEN + prefix.len();
                out[SEALED_DATA_HEADER_LEN..end].copy_from_slice(prefix);
                end
            }
        }
    }
}

/// Writes a DATA header into `out[..3]`.
pub fn encode_data_header(channel: ChannelId, out: &mut [u8]) {
    out[0] = TYPE_DATA;
    out[1..3].copy_from_slice(&channel.0.to_be_bytes());
}

/// Writes a SEALED_DATA header into `out[..5]`.
pub fn encode_sealed_data_header(channel: ChannelId, body_len: u16, out: &mut [u8]) {
    out[0] = TYPE_SEALED_DATA;
    out[1..3].copy_from_slice(&channel.0.to_be_bytes());
    out[3..5].copy_from_slice(&body_len.to_be_bytes());
}

fn truncated_reason(reason: &str) -> &str {
    if reason.len() <= CLOSE_REASON_LEN_MAX {
        return reason;
    }
    let mut end = CLOSE_REASON_LEN_MAX;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(frame: Frame) {
        let mut buffer = vec![0u8; frame.encoded_len()];
        assert_eq!(frame.encode(&mut buffer), buffer.len());
        assert_eq!(Frame::decode(Bytes::from(buffer)).unwrap(), frame);
    }

    #[test]
    fn every_frame_type_round_trips() {
        round_trip(Frame::Data {
            channel: ChannelId(9),
            payload: Bytes::from_static(b"hello"),
        });
        round_trip(Frame::Data {
            channel: ChannelId(0xffff),
            payload: Bytes::from(vec![7u8; MESSAGE_LEN_MAX]),
        });
        round_trip(Frame::WindowUpdate {
            channel: ChannelId(1),
            increment: 65_536,
        });
        round_trip(Frame::Ping { nonce: u64::MAX });
        round_trip(Frame::Pong { nonce: 1 });
        round_trip(Frame::Close {
            code: 3,
            reason: "bad frame".into(),
        });
        round_trip(Frame::SealedData {
            channel: ChannelId(0x0101),
            body_len: 1400,
            prefix: Bytes::from_static(&[1, 2, 3, 4, 5, 6, 7]),
        });
        round_trip(Frame::SealedData {
            channel: ChannelId(1),
            body_len: 0,
            prefix: Bytes::new(),
        });
    }

    #[test]
    fn long_close_reasons_are_cut_at_a_character_boundary() {
        let frame = Frame::Close {
            code: 0,
            reason: "é".repeat(200),
        };
        let mut buffer = vec![0u8; frame.encoded_len()];
        frame.encode(&mut buffer);
        let Frame::Close { reason, .. } = Frame::decode(Bytes::from(buffer)).unwrap() else {
            panic!("not a close frame");
        };
        assert_eq!(reason, "é".repeat(128));
    }

    #[test]
    fn malformed_frames_are_typed_errors() {
        let cases: &[(&[u8], &str)] = &[
            (&[], "empty"),
            (&[TYPE_DATA, 0], "DATA"),
            (&[TYPE_WINDOW_UPDATE, 0, 1, 0, 0, 0, 0], "WINDOW_UPDATE"),
            (&[TYPE_WINDOW_UPDATE, 0, 1, 0, 0, 1], "WINDOW_UPDATE"),
            (&[TYPE_PING, 0, 0], "PING"),
            (&[TYPE_PONG; 10], "PONG"),
            (&[TYPE_CLOSE, 0, 0, 0xff], "CLOSE"),
            (&[TYPE_SEALED_DATA, 0, 1, 0], "SEALED_DATA"),
            (
                &[
                    TYPE_SEALED_DATA,
                    0,
                    1,
                    0,
                    0,
                    1,
                    2,
                    3,
                    4,
                    5,
                    6,
                    7,
                    8,
                    9,
                    10,
                    11,
                    12,
                    13,
                    14,
                    15,
                    16,
                    17,
                ],
                "SEALED_DATA",
            ),
            (&[TYPE_SEALED_DATA, 0, 1, 0xff, 0xf0, 1], "SEALED_DATA"),
        ];
        for (bytes, name) in cases {
            match Frame::decode(Bytes::copy_from_slice(bytes)) {
                Err(ProtocolError::MalformedFrame { frame, .. }) => assert_eq!(frame, *name),
                other => panic!("{bytes:?}: {other:?}"),
            }
        }
        assert_eq!(
            Frame::decode(Bytes::from_static(&[0x42])),
            Err(ProtocolError::UnknownFrameType { frame_type: 0x42 })
        );
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(frame) = Frame::decode(Bytes::from(bytes.clone())) {
                // Whatever decodes re-encodes to the same bytes.
                let mut buffer = vec![0u8; frame.encoded_len()];
                frame.encode(&mut buffer);
                prop_assert_eq!(buffer, bytes);
            }
        }
    }
}
