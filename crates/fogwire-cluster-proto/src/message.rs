//! The membership messages boards exchange over a link's cluster channel
//! (`docs/protocol/cluster.md` §5): postcard-encoded, one per link
//! message, at most [`MESSAGE_LEN_MAX`] bytes.

use serde::{Deserialize, Serialize};

use crate::member::Version;

/// The link channel membership runs on.
pub const CHANNEL_CLUSTER: u16 = 0x0400;
/// Largest message: one link message.
pub const MESSAGE_LEN_MAX: usize = 65_516;
/// Most updates in one message.
pub const UPDATES_MAX: usize = 160;

/// One membership message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Sent first on every link between boards, and to a board thought
    /// dead: the sender's signed record and everything it knows (a full
    /// state exchange). `reply` asks for the receiver's own Hello back.
    Hello {
        record: Vec<u8>,
        members: Vec<Update>,
        reply: bool,
    },
    /// Are you alive? Carries gossip.
    Ping { seq: u32, updates: Vec<Update> },
    /// Yes (to a Ping, or relayed for a PingReq). Carries gossip.
    Ack { seq: u32, updates: Vec<Update> },
    /// Probe `target` for me and tell me: the indirect probe.
    PingReq {
        seq: u32,
        target: [u8; 32],
        updates: Vec<Update>,
    },
    /// I could not reach the target of your PingReq `seq` in time (a sign
    /// that the relay itself is alive: Lifeguard's nack).
    Nack { seq: u32 },
}

/// News about one member, spread by gossip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Update {
    /// The member's signed record: it is alive at the record's version.
    Alive { record: Vec<u8> },
    /// `by` suspects `node` at `version`.
    Suspect {
        node: [u8; 32],
        version: Version,
        by: [u8; 32],
    },
    /// `by` declared `node` failed at `version`.
    Dead {
        node: [u8; 32],
        version: Version,
        by: [u8; 32],
    },
}

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    #[error("cluster message of {len} bytes is longer than {MESSAGE_LEN_MAX}")]
    TooLong { len: usize },
    #[error("cluster message is malformed")]
    Malformed,
    #[error("cluster message carries more than {UPDATES_MAX} updates")]
    TooManyUpdates,
}

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        // Plain data into a Vec: cannot fail.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes one message; trailing bytes are refused.
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        if bytes.len() > MESSAGE_LEN_MAX {
            return Err(MessageError::TooLong { len: bytes.len() });
        }
        let (message, rest): (Message, &[u8]) =
            postcard::take_from_bytes(bytes).map_err(|_| MessageError::Malformed)?;
        if !rest.is_empty() {
            return Err(MessageError::Malformed);
        }
        if message.updates().len() > UPDATES_MAX {
            return Err(MessageError::TooManyUpdates);
        }
        Ok(message)
    }

    /// The gossip the message carries.
    pub fn updates(&self) -> &[Update] {
        match self {
            Message::Hello { members, .. } => members,
            Message::Ping { updates, .. }
            | Message::Ack { updates, .. }
            | Message::PingReq { updates, .. } => updates,
            Message::Nack { .. } => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_refuse_trailing_bytes() {
        let message = Message::PingReq {
            seq: 7,
            target: [3; 32],
            updates: vec![Update::Suspect {
                node: [1; 32],
                version: Version {
                    boot: 2,
                    incarnation: 5,
                },
                by: [2; 32],
            }],
        };
        let bytes = message.encode();
        assert_eq!(Message::decode(&bytes), Ok(message));
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Message::decode(&longer), Err(MessageError::Malformed));
        assert_eq!(
            Message::decode(&bytes[..bytes.len() - 1]),
            Err(MessageError::Malformed)
        );
    }

    #[test]
    fn a_ping_is_a_few_bytes() {
        // Variant 1, seq 300 as a varint, no updates.
        let bytes = Message::Ping {
            seq: 300,
            updates: vec![],
        }
        .encode();
        assert_eq!(bytes, [0x01, 0xac, 0x02, 0x00]);
    }
}
