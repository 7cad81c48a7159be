//! Transport encryption of an established link: Noise's CipherState for
//! ChaChaPoly (Noise spec §5.1 and §12.3), applied in place.
//!
//! The handshake runs in snow; at the end snow's `Split()` yields one key
//! per direction, and these states encrypt records with ring's
//! ChaCha20-Poly1305 directly in the buffers the records travel in. The
//! bytes on the wire are exactly those snow's own `TransportState` would
//! produce (a test checks this both ways); doing it here saves two copies of
//! every frame on each side, the largest cost after the cipher itself.
//!
//! Nonce: 32 zero bits, then the record counter as a 64-bit little-endian
//! integer; the counter starts at 0 and never repeats under one key.
//! Associated data: empty. The counter value 2^64 − 1 is reserved by Noise;
//! reaching it ends the link instead of wrapping.

use ring::aead::{self, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

use crate::TAG_LEN;

/// The nonce counter ran out; the key must not be used again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NonceExhausted;

/// A record that did not authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DecryptError;

pub(crate) struct CipherState {
    key: LessSafeKey,
    nonce: u64,
}

impl CipherState {
    fn new(key: &[u8; 32]) -> Result<Self, ring::error::Unspecified> {
        let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key)?);
        Ok(Self { key, nonce: 0 })
    }

    fn next_nonce(&mut self) -> Option<Nonce> {
        if self.nonce == u64::MAX {
            return None;
        }
        let mut bytes = [0u8; 12];
        bytes[4..].copy_from_slice(&self.nonce.to_le_bytes());
        self.nonce += 1;
        Some(Nonce::assume_unique_for_key(bytes))
    }

    /// Encrypts `buffer[..plaintext_len]` in place and writes the tag after
    /// it; `buffer` must hold `plaintext_len + TAG_LEN` bytes. Returns the
    /// ciphertext length.
    pub(crate) fn seal_in_place(
        &mut self,
        buffer: &mut [u8],
        plaintext_len: usize,
    ) -> Result<usize, NonceExhausted> {
        let nonce = self.next_nonce().ok_or(NonceExhausted)?;
        let (plaintext, rest) = buffer.split_at_mut(plaintext_len);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::empty(), plaintext)
            .map_err(|_| NonceExhausted)?;
        rest[..TAG_LEN].copy_from_slice(tag.as_ref());
        Ok(plaintext_len + TAG_LEN)
    }

    /// Decrypts `record` in place; returns the plaintext length. On failure
    /// the record's contents are unspecified.
    pub(crate) fn open_in_place(&mut self, record: &mut [u8]) -> Result<usize, DecryptError> {
        let nonce = self.next_nonce().ok_or(DecryptError)?;
        self.key
            .open_in_place(nonce, Aad::empty(), record)
            .map(|plaintext| plaintext.len())
            .map_err(|_| DecryptError)
    }
}

/// Both directions of a link.
pub(crate) struct TransportCipher {
    pub(crate) send: CipherState,
    pub(crate) receive: CipherState,
}

impl TransportCipher {
    /// From Noise's `Split()`: the first key encrypts initiator → responder.
    pub(crate) fn from_split(
        initiator_to_responder: &[u8; 32],
        responder_to_initiator: &[u8; 32],
        is_initiator: bool,
    ) -> Result<Self, ring::error::Unspecified> {
        let (send, receive) = if is_initiator {
            (initiator_to_responder, responder_to_initiator)
        } else {
            (responder_to_initiator, initiator_to_responder)
        };
        Ok(Self {
            send: CipherState::new(send)?,
            receive: CipherState::new(receive)?,
        })
    }
}

const _: () = assert!(aead::MAX_TAG_LEN == TAG_LEN);

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs an NN handshake and returns, for each side, both our cipher and
    /// snow's own transport state from the same split.
    fn split_pair() -> (
        (TransportCipher, snow::TransportState),
        (TransportCipher, snow::TransportState),
    ) {
        let params: snow::params::NoiseParams = "Noise_NN_25519_ChaChaPoly_SHA256".parse().unwrap();
        let mut initiator = snow::Builder::new(params.clone())
            .build_initiator()
            .unwrap();
        let mut responder = snow::Builder::new(params).build_responder().unwrap();
        let (mut message, mut payload) = ([0u8; 256], [0u8; 256]);
        let len = initiator.write_message(&[], &mut message).unwrap();
        responder
            .read_message(&message[..len], &mut payload)
            .unwrap();
        let len = responder.write_message(&[], &mut message).unwrap();
        initiator
            .read_message(&message[..len], &mut payload)
            .unwrap();
        let (a, b) = initiator.dangerously_get_raw_split();
        let ours_initiator = TransportCipher::from_split(&a, &b, true).unwrap();
        let (a, b) = responder.dangerously_get_raw_split();
        let ours_responder = TransportCipher::from_split(&a, &b, false).unwrap();
        (
            (ours_initiator, initiator.into_transport_mode().unwrap()),
            (ours_responder, responder.into_transport_mode().unwrap()),
        )
    }

    #[test]
    fn in_place_records_are_byte_identical_to_snow_transport_records() {
        let ((mut ours_a, mut snow_a), (mut ours_b, mut snow_b)) = split_pair();
        for round in 0..5u8 {
            let plaintext = vec![round; 100 + usize::from(round)];
            // Ours seals, snow produces the same bytes and snow opens ours.
            let mut buffer = plaintext.clone();
            buffer.resize(plaintext.len() + TAG_LEN, 0);
            let len = ours_a
                .send
                .seal_in_place(&mut buffer, plaintext.len())
                .unwrap();
            let mut snow_record = vec![0u8; plaintext.len() + TAG_LEN];
            snow_a.write_message(&plaintext, &mut snow_record).unwrap();
            assert_eq!(buffer[..len], snow_record[..]);
            let mut opened = vec![0u8; plaintext.len()];
            let opened_len = snow_b.read_message(&buffer[..len], &mut opened).unwrap();
            assert_eq!(opened[..opened_len], plaintext[..]);
            // Snow seals the other way, ours opens it in place.
            let mut record = vec![0u8; plaintext.len() + TAG_LEN];
            let len = snow_b.write_message(&plaintext, &mut record).unwrap();
            ours_a.receive.nonce = round.into();
            let opened_len = ours_a.receive.open_in_place(&mut record[..len]).unwrap();
            assert_eq!(record[..opened_len], plaintext[..]);
            // Keep our responder-side state in step for the next round.
            let mut sink = plaintext.clone();
            sink.resize(plaintext.len() + TAG_LEN, 0);
            ours_b
                .send
                .seal_in_place(&mut sink, plaintext.len())
                .unwrap();
        }
    }

    #[test]
    fn a_replayed_or_altered_record_fails_to_open() {
        let ((mut ours_a, _), (mut ours_b, _)) = split_pair();
        let mut record = b"hello".to_vec();
        record.resize(5 + TAG_LEN, 0);
        ours_a.send.seal_in_place(&mut record, 5).unwrap();
        let mut first = record.clone();
        assert_eq!(ours_b.receive.open_in_place(&mut first), Ok(5));
        // The same record again: the counter has moved on.
        let mut replay = record.clone();
        assert_eq!(ours_b.receive.open_in_place(&mut replay), Err(DecryptError));
        let mut altered = record;
        altered[0] ^= 1;
        ours_b.receive.nonce = 0;
        assert_eq!(
            ours_b.receive.open_in_place(&mut altered),
            Err(DecryptError)
        );
    }

    #[test]
    fn the_counter_never_wraps() {
        let ((mut ours_a, _), _) = split_pair();
        ours_a.send.nonce = u64::MAX;
        let mut buffer = vec![0u8; TAG_LEN];
        assert_eq!(
            ours_a.send.seal_in_place(&mut buffer, 0),
            Err(NonceExhausted)
        );
    }
}
