//! The payload each side puts in its encrypted handshake message (message 2
//! from the responder, message 3 from the initiator):
//!
//! ```text
//! offset  size  field
//!      0    32  identity: the node's Ed25519 public key (its NodeId)
//!     32    64  certificate: Ed25519 signature, by the identity, of the
//!               sender's Noise static public key (domain
//!               "fogwire/link/static-key/v1", see fogwire-identity)
//!     96     1  n: number of channels the sender serves (0..=64)
//!     97    7n  n entries: channel id u16, receive window u32 (big-endian),
//!               flags u8 (bit 0: the sender accepts SEALED_DATA on the
//!               channel; the other bits are zero)
//! ```

use fogwire_identity::{Domain, NodeId, Signature};

use crate::{CHANNELS_MAX, ChannelId, HandshakeError, WINDOW_MAX, WINDOW_MIN};

const FIXED_LEN: usize = 32 + 64 + 1;
const CHANNEL_ENTRY_LEN: usize = 7;
const FLAG_SEALED_BODIES: u8 = 0x01;

/// A channel as its receiver announces it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AnnouncedChannel {
    pub id: ChannelId,
    /// Credit the receiver grants on it.
    pub window: u32,
    /// It accepts messages whose body is sealed end to end (SEALED_DATA).
    pub sealed_bodies: bool,
}

/// What a node tells its peer about itself during the handshake.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct HandshakePayload {
    pub identity: NodeId,
    pub certificate: Signature,
    /// Channels the sender serves, with the receive window it grants on each.
    pub channels: Vec<AnnouncedChannel>,
}

fn malformed(detail: &'static str) -> HandshakeError {
    HandshakeError::MalformedPayload { detail }
}

impl HandshakePayload {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED_LEN + CHANNEL_ENTRY_LEN * self.channels.len());
        out.extend_from_slice(self.identity.as_bytes());
        out.extend_from_slice(&self.certificate.0);
        // Config::validate bounds the channel count to 64.
        out.push(self.channels.len().min(CHANNELS_MAX) as u8);
        for channel in self.channels.iter().take(CHANNELS_MAX) {
            out.extend_from_slice(&channel.id.0.to_be_bytes());
            out.extend_from_slice(&channel.window.to_be_bytes());
            out.push(if channel.sealed_bodies {
                FLAG_SEALED_BODIES
            } else {
                0
            });
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, HandshakeError> {
        if bytes.len() < FIXED_LEN {
            return Err(malformed("shorter than 97 bytes"));
        }
        let identity = NodeId::from_slice(&bytes[..32])
            .map_err(|_| malformed("identity is not a valid key"))?;
        let mut certificate = [0u8; 64];
        certificate.copy_from_slice(&bytes[32..96]);
        let count = usize::from(bytes[96]);
        if count > CHANNELS_MAX {
            return Err(malformed("more than 64 channels"));
        }
        if bytes.len() != FIXED_LEN + CHANNEL_ENTRY_LEN * count {
            return Err(malformed("length does not match the channel count"));
        }
        let mut channels: Vec<AnnouncedChannel> = Vec::with_capacity(count);
        for entry in bytes[FIXED_LEN..].chunks_exact(CHANNEL_ENTRY_LEN) {
            let channel = ChannelId(u16::from_be_bytes([entry[0], entry[1]]));
            let window = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
            if !(WINDOW_MIN..=WINDOW_MAX).contains(&window) {
                return Err(malformed("channel window out of range"));
            }
            if entry[6] & !FLAG_SEALED_BODIES != 0 {
                return Err(malformed("unknown channel flags"));
            }
            if channels.iter().any(|seen| seen.id == channel) {
                return Err(malformed("channel announced twice"));
            }
            channels.push(AnnouncedChannel {
                id: channel,
                window,
                sealed_bodies: entry[6] & FLAG_SEALED_BODIES != 0,
            });
        }
        Ok(Self {
            identity,
            certificate: Signature(certificate),
            channels,
        })
    }

    /// Checks that `identity` signed `noise_static_key`, the key the peer
    /// proved it holds during the Noise handshake.
    pub fn verify(&self, noise_static_key: &[u8]) -> Result<(), HandshakeError> {
        self.identity
            .verify(Domain::LINK_STATIC_KEY, noise_static_key, &self.certificate)
            .map_err(|_| HandshakeError::BadIdentitySignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fogwire_identity::Keypair;
    use proptest::prelude::*;

    fn sample() -> HandshakePayload {
        let keypair = Keypair::from_seed(&[1; 32]);
        HandshakePayload {
            identity: keypair.node_id(),
            certificate: keypair.sign(Domain::LINK_STATIC_KEY, &[9; 32]),
            channels: vec![
                AnnouncedChannel {
                    id: ChannelId(1),
                    window: WINDOW_MIN,
                    sealed_bodies: false,
                },
                AnnouncedChannel {
                    id: ChannelId(2),
                    window: WINDOW_MAX,
                    sealed_bodies: true,
                },
            ],
        }
    }

    #[test]
    fn round_trips_and_verifies() {
        let payload = sample();
        let decoded = HandshakePayload::decode(&payload.encode()).unwrap();
        assert_eq!(decoded, payload);
        assert_eq!(decoded.verify(&[9; 32]), Ok(()));
        assert_eq!(
            decoded.verify(&[8; 32]),
            Err(HandshakeError::BadIdentitySignature)
        );
    }

    #[test]
    fn rejects_inconsistent_lengths_duplicates_and_bad_windows() {
        let bytes = sample().encode();
        assert!(HandshakePayload::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut duplicate = sample();
        duplicate.channels[1].id = ChannelId(1);
        assert!(HandshakePayload::decode(&duplicate.encode()).is_err());
        let mut tiny_window = sample();
        tiny_window.channels[0].window = 10;
        assert!(HandshakePayload::decode(&tiny_window.encode()).is_err());
        let mut unknown_flag = sample().encode();
        let last = unknown_flag.len() - 1;
        unknown_flag[last] = 0x03;
        assert!(HandshakePayload::decode(&unknown_flag).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = HandshakePayload::decode(&bytes);
        }
    }
}
