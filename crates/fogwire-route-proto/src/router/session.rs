//! End-to-end sessions between a route's two ends.
//!
//! The source runs Noise `IK` (`Noise_IK_25519_ChaChaPoly_SHA256`, prologue
//! `fogwire-route-e2e`) towards the destination's advertised link key:
//! message 1 rides in the destination's setup layer, message 2 comes back
//! in the CONFIRM. Message 1's payload is the source's identity payload
//! (NodeId and the certificate of its link key), so the destination knows
//! who is calling, then a [`Hello`]: whether this is a new session or the
//! resumption of one whose route broke, and the session's token. Message
//! 2's payload is empty. Relays see only ciphertext.
//!
//! After the handshake every session packet is
//!
//! ```text
//! nonce u64 | ChaCha20-Poly1305(key, nonce, ad = empty, kind u8 | body) ‖ tag
//! ```
//!
//! with Noise's nonce layout (four zero bytes, the nonce little-endian).
//! Nonces count up from 0 per direction; a receiver accepts each at most
//! once, within a 1024-packet window, so replays are refused while packets
//! reordered by a route change still get through.

use bytes::Bytes;
use fogwire_env::NoiseResolver;
use fogwire_identity::{Domain, NodeId, Signature};
use fogwire_link_proto::LinkIdentity;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

use crate::wire::Reader;

const PARAMS: &str = "Noise_IK_25519_ChaChaPoly_SHA256";
const PROLOGUE: &[u8] = b"fogwire-route-e2e";
const IDENTITY_PAYLOAD_LEN: usize = 32 + 64;
/// Message 1's payload: identity, mode, token.
const HELLO_PAYLOAD_LEN: usize = IDENTITY_PAYLOAD_LEN + 1 + TOKEN_LEN;
/// Length of a session token.
pub const TOKEN_LEN: usize = 16;
const MODE_NEW: u8 = 0;
const MODE_RESUME: u8 = 1;
const TAG_LEN: usize = 16;
const NONCE_LEN: usize = 8;
/// Bytes a session adds around its body: nonce, kind, tag.
pub const PACKET_OVERHEAD: usize = NONCE_LEN + 1 + TAG_LEN;
const REPLAY_WINDOW: u64 = 1024;

pub const KIND_DATAGRAM: u8 = 0x01;
pub const KIND_PING: u8 = 0x02;
pub const KIND_PONG: u8 = 0x03;
pub const KIND_STREAM_DATA: u8 = 0x10;
pub const KIND_STREAM_ACK: u8 = 0x11;
pub const KIND_STREAM_RESET: u8 = 0x12;

/// What the source asks of the destination in message 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Resume the session named by `token` on this new route, instead of
    /// starting one.
    pub resume: bool,
    /// Names the session at both ends; chosen at random by the source.
    pub token: [u8; TOKEN_LEN],
}

/// A session handshake or packet that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    #[error("noise: {0}")]
    Noise(String),
    #[error("the caller's identity does not vouch for its key")]
    BadIdentity,
    #[error("malformed session message")]
    Malformed,
    #[error("packet failed to authenticate")]
    Decrypt,
    #[error("packet replayed or too old")]
    Replayed,
    #[error("session nonces exhausted")]
    Exhausted,
}

fn noise_error(error: snow::Error) -> SessionError {
    SessionError::Noise(error.to_string())
}

fn params() -> Result<snow::params::NoiseParams, SessionError> {
    PARAMS.parse().map_err(noise_error)
}

/// The source's side of a handshake in progress.
pub struct Initiator {
    noise: Box<snow::HandshakeState>,
}

impl std::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Initiator")
    }
}

impl Initiator {
    /// Starts a handshake to `destination_key`; returns message 1.
    pub fn start(
        identity: &LinkIdentity,
        destination_key: &[u8; 32],
        hello: Hello,
        resolver: NoiseResolver,
    ) -> Result<(Self, Vec<u8>), SessionError> {
        let mut noise = resolver
            .builder(params()?)
            .local_private_key(identity.noise_static_private_key())
            .map_err(noise_error)?
            .remote_public_key(destination_key)
            .map_err(noise_error)?
            .prologue(PROLOGUE)
            .map_err(noise_error)?
            .build_initiator()
            .map_err(noise_error)?;
        let mut payload = Vec::with_capacity(HELLO_PAYLOAD_LEN);
        payload.extend_from_slice(identity.node_id().as_bytes());
        payload.extend_from_slice(&identity.certificate().0);
        payload.push(if hello.resume { MODE_RESUME } else { MODE_NEW });
        payload.extend_from_slice(&hello.token);
        let mut message = vec![0u8; 256];
        let len = noise
            .write_message(&payload, &mut message)
            .map_err(noise_error)?;
        message.truncate(len);
        Ok((
            Self {
                noise: Box::new(noise),
            },
            message,
        ))
    }

    /// Reads message 2 and returns the session keys.
    pub fn finish(mut self, message: &[u8]) -> Result<SessionKeys, SessionError> {
        let mut payload = vec![0u8; message.len()];
        self.noise
            .read_message(message, &mut payload)
            .map_err(|_| SessionError::Decrypt)?;
        SessionKeys::split(&mut self.noise)
    }
}

/// What the destination learns from message 1, and its answer.
#[derive(Debug)]
pub struct Response {
    pub caller: NodeId,
    pub hello: Hello,
    /// Message 2, for the CONFIRM.
    pub reply: Vec<u8>,
    pub keys: SessionKeys,
}

/// The destination's side: reads message 1, returns the caller's identity,
/// its hello, message 2 and the keys.
pub fn respond(
    identity: &LinkIdentity,
    message: &[u8],
    resolver: NoiseResolver,
) -> Result<Response, SessionError> {
    let mut noise = resolver
        .builder(params()?)
        .local_private_key(identity.noise_static_private_key())
        .map_err(noise_error)?
        .prologue(PROLOGUE)
        .map_err(noise_error)?
        .build_responder()
        .map_err(noise_error)?;
    let mut payload = vec![0u8; message.len()];
    let len = noise
        .read_message(message, &mut payload)
        .map_err(|_| SessionError::Decrypt)?;
    if len != HELLO_PAYLOAD_LEN {
        return Err(SessionError::Malformed);
    }
    let resume = match payload[IDENTITY_PAYLOAD_LEN] {
        MODE_NEW => false,
        MODE_RESUME => true,
        _ => return Err(SessionError::Malformed),
    };
    let mut token = [0u8; TOKEN_LEN];
    token.copy_from_slice(&payload[IDENTITY_PAYLOAD_LEN + 1..HELLO_PAYLOAD_LEN]);
    let caller = NodeId::from_slice(&payload[..32]).map_err(|_| SessionError::Malformed)?;
    let mut certificate = [0u8; 64];
    certificate.copy_from_slice(&payload[32..96]);
    let caller_key = noise.get_remote_static().ok_or(SessionError::Malformed)?;
    caller
        .verify(Domain::LINK_STATIC_KEY, caller_key, &Signature(certificate))
        .map_err(|_| SessionError::BadIdentity)?;
    let mut reply = vec![0u8; 128];
    let len = noise.write_message(&[], &mut reply).map_err(noise_error)?;
    reply.truncate(len);
    let keys = SessionKeys::split(&mut noise)?;
    Ok(Response {
        caller,
        hello: Hello { resume, token },
        reply,
        keys,
    })
}

/// The two directions' keys of a session.
pub struct SessionKeys {
    send: LessSafeKey,
    receive: LessSafeKey,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys(…)")
    }
}

impl SessionKeys {
    fn split(noise: &mut snow::HandshakeState) -> Result<Self, SessionError> {
        let (first, second) = noise.dangerously_get_raw_split();
        let (first, second) = (
            zeroize::Zeroizing::new(first),
            zeroize::Zeroizing::new(second),
        );
        let (send, receive) = if noise.is_initiator() {
            (first, second)
        } else {
            (second, first)
        };
        let key = |bytes: &[u8; 32]| {
            UnboundKey::new(&CHACHA20_POLY1305, bytes)
                .map(LessSafeKey::new)
                .map_err(|_| SessionError::Noise("key rejected".into()))
        };
        Ok(Self {
            send: key(&send)?,
            receive: key(&receive)?,
        })
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::assume_unique_for_key(bytes)
}

/// Encrypts and decrypts a session's packets.
#[derive(Debug)]
pub struct SessionCipher {
    keys: SessionKeys,
    next_send: u64,
    /// Highest nonce accepted, and which of the `REPLAY_WINDOW` below it
    /// have been (bit i: highest − i).
    highest: Option<u64>,
    seen: [u64; (REPLAY_WINDOW / 64) as usize],
}

impl SessionCipher {
    pub fn new(keys: SessionKeys) -> Self {
        Self {
            keys,
            next_send: 0,
            highest: None,
            seen: [0; (REPLAY_WINDOW / 64) as usize],
        }
    }

    /// A packet carrying `kind` and `body`.
    pub fn seal(&mut self, kind: u8, body: &[u8]) -> Result<Vec<u8>, SessionError> {
        self.seal_with(kind, body.len(), |out| out.extend_from_slice(body))
    }

    /// A packet carrying `kind` and a body of `body_len` bytes that
    /// `write_body` appends, so that a body gathered from several buffers
    /// is copied once, straight into the packet.
    pub fn seal_with(
        &mut self,
        kind: u8,
        body_len: usize,
        write_body: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Vec<u8>, SessionError> {
        if self.next_send == u64::MAX {
            return Err(SessionError::Exhausted);
        }
        let counter = self.next_send;
        self.next_send += 1;
        let mut packet = Vec::with_capacity(PACKET_OVERHEAD + body_len);
        packet.extend_from_slice(&counter.to_be_bytes());
        packet.push(kind);
        write_body(&mut packet);
        let tag = self
            .keys
            .send
            .seal_in_place_separate_tag(nonce(counter), Aad::empty(), &mut packet[NONCE_LEN..])
            .map_err(|_| SessionError::Exhausted)?;
        packet.extend_from_slice(tag.as_ref());
        Ok(packet)
    }

    /// Opens a packet; returns its kind and body.
    pub fn open(&mut self, packet: &[u8]) -> Result<(u8, Bytes), SessionError> {
        if packet.len() < PACKET_OVERHEAD {
            return Err(SessionError::Malformed);
        }
        let counter = Reader::new(packet)
            .u64()
            .map_err(|_| SessionError::Malformed)?;
        if !self.fresh(counter) {
            return Err(SessionError::Replayed);
        }
        let mut sealed = packet[NONCE_LEN..].to_vec();
        let plaintext = self
            .keys
            .receive
            .open_in_place(nonce(counter), Aad::empty(), &mut sealed)
            .map_err(|_| SessionError::Decrypt)?;
        let (kind, plaintext_len) = (plaintext[0], plaintext.len());
        self.mark(counter);
        // The body stays in the buffer it was decrypted in.
        Ok((kind, Bytes::from(sealed).slice(1..plaintext_len)))
    }

    fn fresh(&self, counter: u64) -> bool {
        match self.highest {
            None => true,
            Some(highest) if counter > highest => true,
            Some(highest) => {
                let age = highest - counter;
                age < REPLAY_WINDOW && self.seen[(age / 64) as usize] & (1 << (age % 64)) == 0
            }
        }
    }

    fn mark(&mut self, counter: u64) {
        match self.highest {
            Some(highest) if counter <= highest => {
                let age = highest - counter;
                self.seen[(age / 64) as usize] |= 1 << (age % 64);
            }
            _ => {
                let shift = self.highest.map_or(REPLAY_WINDOW, |h| counter - h);
                self.shift(shift);
                self.highest = Some(counter);
                self.seen[0] |= 1;
            }
        }
    }

    /// Moves the window up by `by` packets.
    fn shift(&mut self, by: u64) {
        if by >= REPLAY_WINDOW {
            self.seen = [0; (REPLAY_WINDOW / 64) as usize];
            return;
        }
        let words = (by / 64) as usize;
        let bits = (by % 64) as u32;
        let len = self.seen.len();
        for index in (0..len).rev() {
            let from = index.checked_sub(words);
            let high = from.map_or(0, |i| self.seen[i]);
            let low = from
                .and_then(|i| i.checked_sub(1))
                .map_or(0, |i| self.seen[i]);
            self.seen[index] = if bits == 0 {
                high
            } else {
                (high << bits) | (low >> (64 - bits))
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fogwire_identity::Keypair;
    use std::sync::Arc;

    fn identity(seed: u8) -> LinkIdentity {
        LinkIdentity::generate(Arc::new(Keypair::from_seed(&[seed; 32]))).unwrap()
    }

    fn key_of(identity: &LinkIdentity) -> [u8; 32] {
        identity.noise_static_key().try_into().unwrap()
    }

    fn pair() -> (SessionCipher, SessionCipher) {
        let (source, destination) = (identity(1), identity(2));
        let hello = Hello {
            resume: true,
            token: [7; TOKEN_LEN],
        };
        let (initiator, first) =
            Initiator::start(&source, &key_of(&destination), hello, NoiseResolver::os()).unwrap();
        let response = respond(&destination, &first, NoiseResolver::os()).unwrap();
        assert_eq!(response.caller, source.node_id());
        assert_eq!(response.hello, hello);
        let source_keys = initiator.finish(&response.reply).unwrap();
        (
            SessionCipher::new(source_keys),
            SessionCipher::new(response.keys),
        )
    }

    #[test]
    fn both_ends_agree_and_relays_see_only_ciphertext() {
        let (mut source, mut destination) = pair();
        let packet = source.seal(KIND_DATAGRAM, b"secret payload").unwrap();
        assert!(!packet.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            destination.open(&packet).unwrap(),
            (KIND_DATAGRAM, Bytes::from_static(b"secret payload"))
        );
        let back = destination.seal(KIND_PONG, b"x").unwrap();
        assert_eq!(
            source.open(&back).unwrap(),
            (KIND_PONG, Bytes::from_static(b"x"))
        );
    }

    #[test]
    fn only_the_destination_can_answer_message_one() {
        let (source, destination, impostor) = (identity(1), identity(2), identity(3));
        let hello = Hello {
            resume: false,
            token: [1; TOKEN_LEN],
        };
        let (_, first) =
            Initiator::start(&source, &key_of(&destination), hello, NoiseResolver::os()).unwrap();
        assert!(respond(&impostor, &first, NoiseResolver::os()).is_err());
    }

    #[test]
    fn replays_are_refused_and_reordering_within_the_window_is_accepted() {
        let (mut source, mut destination) = pair();
        let packets: Vec<Vec<u8>> = (0..2000)
            .map(|i| source.seal(KIND_DATAGRAM, &[i as u8]).unwrap())
            .collect();
        assert!(destination.open(&packets[5]).is_ok());
        assert_eq!(destination.open(&packets[5]), Err(SessionError::Replayed));
        assert!(destination.open(&packets[3]).is_ok());
        assert!(destination.open(&packets[1500]).is_ok());
        // Older than the window now.
        assert_eq!(destination.open(&packets[4]), Err(SessionError::Replayed));
        assert!(destination.open(&packets[1000]).is_ok());
        assert_eq!(
            destination.open(&packets[1000]),
            Err(SessionError::Replayed)
        );
        let mut altered = packets[1600].clone();
        altered[12] ^= 1;
        assert_eq!(destination.open(&altered), Err(SessionError::Decrypt));
        // An altered packet does not burn its nonce.
        assert!(destination.open(&packets[1600]).is_ok());
    }
}
