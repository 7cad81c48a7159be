//! Relay receipts: what a route's source signs for each relay.
//!
//! A receipt is a [`SignedRecord`] (domain `fogwire/route/receipt/v1`)
//! whose signer is the route's source and whose body is, big-endian:
//!
//! ```text
//! offset  size  field
//!      0     1  version (1)
//!      1    16  route tag: the tag the source gave this relay in its layer
//!     17    32  relay NodeId
//!     49     8  seq: grows with every receipt of this route for this relay
//!     57     8  issued at, Unix ms
//!     65     8  bytes forward   (source → destination), cumulative
//!     73     8  bytes backward  (destination → source), cumulative
//!     81     8  packets forward
//!     89     8  packets backward
//! ```
//!
//! It travels in a RECEIPT control message along the route, sealed with
//! the relay's reply key (ChaCha20-Poly1305, nonce `0⁴ ‖ be64(seq)`), so
//! only that relay can read it; the others pass it on. The signature binds
//! it to the source, the relay and the route: a relay cannot forge one or
//! raise its figures, and cannot present another relay's receipt as its
//! own. Receipts are cumulative, so the latest one is all a relay keeps.

use fogwire_identity::{Domain, Keypair, NodeId, RecordError, SignedRecord};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

use super::Counters;
use crate::wire::{Reader, Truncated};

const VERSION: u8 = 1;
const BODY_LEN: usize = 1 + 16 + 32 + 8 + 8 + 4 * 8;
/// Length of an encoded receipt: the signed-record header and the body.
pub const ENCODED_LEN: usize = SignedRecord::HEADER_LEN + BODY_LEN;
/// Length of a sealed receipt.
pub const SEALED_LEN: usize = ENCODED_LEN + 16;

/// A checked receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The route's source, who signed it.
    pub source: NodeId,
    pub relay: NodeId,
    pub route_tag: [u8; 16],
    pub seq: u64,
    pub issued_at_ms: u64,
    pub counters: Counters,
}

/// Why a receipt was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    #[error("receipt signature: {0}")]
    Signature(#[from] RecordError),
    #[error("malformed receipt")]
    Malformed,
}

impl From<Truncated> for ReceiptError {
    fn from(_: Truncated) -> Self {
        ReceiptError::Malformed
    }
}

impl Receipt {
    /// Signs the receipt with the source's key and returns its wire form.
    pub fn sign(&self, keypair: &Keypair) -> Vec<u8> {
        let mut body = Vec::with_capacity(BODY_LEN);
        body.push(VERSION);
        body.extend_from_slice(&self.route_tag);
        body.extend_from_slice(self.relay.as_bytes());
        body.extend_from_slice(&self.seq.to_be_bytes());
        body.extend_from_slice(&self.issued_at_ms.to_be_bytes());
        let c = &self.counters;
        for value in [
            c.bytes_forward,
            c.bytes_backward,
            c.packets_forward,
            c.packets_backward,
        ] {
            body.extend_from_slice(&value.to_be_bytes());
        }
        SignedRecord::sign(keypair, Domain::RELAY_RECEIPT, body).encode()
    }

    /// Parses a receipt and checks its signature.
    pub fn decode(bytes: &[u8]) -> Result<Receipt, ReceiptError> {
        if bytes.len() != ENCODED_LEN {
            return Err(ReceiptError::Malformed);
        }
        let record = SignedRecord::decode(bytes)?;
        record.verify(Domain::RELAY_RECEIPT)?;
        let mut reader = Reader::new(&record.body);
        if reader.u8()? != VERSION {
            return Err(ReceiptError::Malformed);
        }
        let route_tag = reader.array()?;
        let relay = NodeId::from_bytes(&reader.array()?).map_err(|_| ReceiptError::Malformed)?;
        let seq = reader.u64()?;
        let issued_at_ms = reader.u64()?;
        let counters = Counters {
            bytes_forward: reader.u64()?,
            bytes_backward: reader.u64()?,
            packets_forward: reader.u64()?,
            packets_backward: reader.u64()?,
        };
        if !reader.is_empty() {
            return Err(ReceiptError::Malformed);
        }
        Ok(Receipt {
            source: record.signer,
            relay,
            route_tag,
            seq,
            issued_at_ms,
            counters,
        })
    }
}

fn nonce(seq: u64) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[4..].copy_from_slice(&seq.to_be_bytes());
    Nonce::assume_unique_for_key(bytes)
}

fn key(reply_key: &[u8; 32]) -> Option<LessSafeKey> {
    UnboundKey::new(&CHACHA20_POLY1305, reply_key)
        .map(LessSafeKey::new)
        .ok()
}

/// Seals an encoded receipt for the relay holding `reply_key`. The nonce's
/// leading zero bytes keep it apart from the fixed nonces of sealed
/// failure reasons and teardown notes under the same key.
pub fn seal(reply_key: &[u8; 32], seq: u64, encoded: &[u8]) -> Option<Vec<u8>> {
    let mut out = encoded.to_vec();
    key(reply_key)?
        .seal_in_place_append_tag(nonce(seq), Aad::empty(), &mut out)
        .ok()?;
    Some(out)
}

/// Opens a sealed receipt with `reply_key`; `None` if it is not for it.
pub fn open(reply_key: &[u8; 32], seq: u64, sealed: &[u8]) -> Option<Vec<u8>> {
    let mut buffer = sealed.to_vec();
    let len = key(reply_key)?
        .open_in_place(nonce(seq), Aad::empty(), &mut buffer)
        .ok()?
        .len();
    buffer.truncate(len);
    Some(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(source: &Keypair) -> Receipt {
        Receipt {
            source: source.node_id(),
            relay: Keypair::from_seed(&[2; 32]).node_id(),
            route_tag: [5; 16],
            seq: 3,
            issued_at_ms: 1_800_000_000_000,
            counters: Counters {
                bytes_forward: 1_000,
                bytes_backward: 2_000,
                packets_forward: 3,
                packets_backward: 4,
            },
        }
    }

    #[test]
    fn a_receipt_round_trips_and_its_figures_cannot_be_raised() {
        let source = Keypair::from_seed(&[1; 32]);
        let receipt = sample(&source);
        let encoded = receipt.sign(&source);
        assert_eq!(encoded.len(), ENCODED_LEN);
        assert_eq!(Receipt::decode(&encoded), Ok(receipt));
        // A relay raising bytes_forward breaks the signature.
        let mut inflated = encoded.clone();
        let at = SignedRecord::HEADER_LEN + 65 + 6;
        inflated[at] = inflated[at].wrapping_add(1);
        assert!(matches!(
            Receipt::decode(&inflated),
            Err(ReceiptError::Signature(_))
        ));
        // Signing it itself makes it the relay's receipt, not the source's.
        let relay = Keypair::from_seed(&[2; 32]);
        let forged = sample(&source).sign(&relay);
        assert_ne!(Receipt::decode(&forged).unwrap().source, source.node_id());
    }

    #[test]
    fn only_the_relay_with_the_reply_key_can_open_it() {
        let source = Keypair::from_seed(&[1; 32]);
        let encoded = sample(&source).sign(&source);
        let sealed = seal(&[9; 32], 3, &encoded).unwrap();
        assert_eq!(sealed.len(), SEALED_LEN);
        assert_eq!(open(&[9; 32], 3, &sealed), Some(encoded));
        assert_eq!(open(&[8; 32], 3, &sealed), None);
        assert_eq!(open(&[9; 32], 4, &sealed), None);
    }
}
