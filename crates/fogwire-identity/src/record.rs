//! Domain-separated signed records.
//!
//! Everything a node signs — its link key, and later route adverts, relay
//! receipts and feed roots — is a record of some kind, and each kind has its
//! own [`Domain`] tag. The bytes actually signed are
//!
//! ```text
//! "fogwire-signed-record" 0x00 | tag length (1 byte) | tag | body
//! ```
//!
//! so a signature over a receipt can never be replayed as a signature over an
//! advert, even if the two bodies happen to be the same bytes. The tag is not
//! sent on the wire: the receiver knows which kind of record it expects.

use std::fmt;

use crate::{Keypair, NodeId};

const SIGNING_CONTEXT: &[u8] = b"fogwire-signed-record\0";

/// The kind of a signed record; part of what is signed.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Domain(&'static str);

impl Domain {
    /// A link's Noise static key, certified by the node's identity key
    /// (see `docs/protocol/link.md`).
    pub const LINK_STATIC_KEY: Domain = Domain::new("fogwire/link/static-key/v1");
    /// A link-state advert flooded by the routing layer.
    pub const ROUTE_ADVERT: Domain = Domain::new("fogwire/route/advert/v1");
    /// A cumulative receipt for bytes a relay carried.
    pub const RELAY_RECEIPT: Domain = Domain::new("fogwire/route/receipt/v1");
    /// A signed root of a store feed.
    pub const FEED_ROOT: Domain = Domain::new("fogwire/store/feed-root/v1");

    /// A new domain tag: printable ASCII, 1 to 64 bytes. Checked at compile
    /// time when used in a `const`.
    pub const fn new(tag: &'static str) -> Self {
        let bytes = tag.as_bytes();
        assert!(
            !bytes.is_empty() && bytes.len() <= 64,
            "a domain tag is 1 to 64 bytes"
        );
        let mut index = 0;
        while index < bytes.len() {
            assert!(
                bytes[index] >= 0x21 && bytes[index] <= 0x7e,
                "a domain tag is printable ASCII without spaces"
            );
            index += 1;
        }
        Self(tag)
    }

    pub fn tag(&self) -> &'static str {
        self.0
    }
}

impl fmt::Debug for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Domain({})", self.0)
    }
}

pub(crate) fn signing_input(domain: Domain, body: &[u8]) -> Vec<u8> {
    let tag = domain.0.as_bytes();
    let mut input = Vec::with_capacity(SIGNING_CONTEXT.len() + 1 + tag.len() + body.len());
    input.extend_from_slice(SIGNING_CONTEXT);
    // Domain::new bounds the tag to 64 bytes, so the length fits a byte.
    input.push(tag.len() as u8);
    input.extend_from_slice(tag);
    input.extend_from_slice(body);
    input
}

/// An Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}…)", hex::encode(&self.0[..8]))
    }
}

impl NodeId {
    /// Checks that this node signed `body` as a record of kind `domain`.
    ///
    /// Uses strict verification: non-canonical signatures and small-order
    /// components are rejected, so a signature has exactly one valid
    /// encoding and cannot be malleated into a second "different" record.
    pub fn verify(
        &self,
        domain: Domain,
        body: &[u8],
        signature: &Signature,
    ) -> Result<(), RecordError> {
        let key = self
            .verifying_key()
            .map_err(|_| RecordError::BadSignature)?;
        let signature = ed25519_dalek::Signature::from_bytes(&signature.0);
        key.verify_strict(&signing_input(domain, body), &signature)
            .map_err(|_| RecordError::BadSignature)
    }
}

/// A record with its signer and signature, as sent on the wire:
///
/// ```text
/// offset  size  field
///      0    32  signer NodeId (Ed25519 public key)
///     32    64  Ed25519 signature over the domain-separated body
///     96     n  body (the rest)
/// ```
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SignedRecord {
    pub signer: NodeId,
    pub signature: Signature,
    pub body: Vec<u8>,
}

impl SignedRecord {
    pub const HEADER_LEN: usize = 32 + 64;

    pub fn sign(keypair: &Keypair, domain: Domain, body: Vec<u8>) -> Self {
        Self {
            signer: keypair.node_id(),
            signature: keypair.sign(domain, &body),
            body,
        }
    }

    /// Checks the signature for a record of kind `domain`.
    pub fn verify(&self, domain: Domain) -> Result<(), RecordError> {
        self.signer.verify(domain, &self.body, &self.signature)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::HEADER_LEN + self.body.len());
        out.extend_from_slice(self.signer.as_bytes());
        out.extend_from_slice(&self.signature.0);
        out.extend_from_slice(&self.body);
        out
    }

    /// Parses the wire form. Does not verify: call [`SignedRecord::verify`].
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        if bytes.len() < Self::HEADER_LEN {
            return Err(RecordError::Truncated { len: bytes.len() });
        }
        let signer = NodeId::from_slice(&bytes[..32]).map_err(|_| RecordError::BadSigner)?;
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&bytes[32..96]);
        Ok(Self {
            signer,
            signature: Signature(signature),
            body: bytes[96..].to_vec(),
        })
    }
}

/// Why a signed record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    #[error("signed record of {len} bytes is shorter than its 96-byte header")]
    Truncated { len: usize },
    #[error("signed record names a signer that is not a valid node id")]
    BadSigner,
    #[error("signature does not verify")]
    BadSignature,
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST: Domain = Domain::new("fogwire/test/v1");
    const OTHER: Domain = Domain::new("fogwire/test/other/v1");

    #[test]
    fn signatures_verify_only_in_their_own_domain() {
        let keypair = Keypair::from_seed(&[3; 32]);
        let record = SignedRecord::sign(&keypair, TEST, b"hello".to_vec());
        assert_eq!(record.verify(TEST), Ok(()));
        assert_eq!(record.verify(OTHER), Err(RecordError::BadSignature));
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let keypair = Keypair::from_seed(&[4; 32]);
        let record = SignedRecord::sign(&keypair, TEST, b"pay 10".to_vec());
        let mut body_changed = record.clone();
        body_changed.body = b"pay 99".to_vec();
        assert!(body_changed.verify(TEST).is_err());
        let mut signer_changed = record.clone();
        signer_changed.signer = Keypair::from_seed(&[5; 32]).node_id();
        assert!(signer_changed.verify(TEST).is_err());
        let mut signature_changed = record;
        signature_changed.signature.0[10] ^= 1;
        assert!(signature_changed.verify(TEST).is_err());
    }

    #[test]
    fn wire_form_round_trips_and_rejects_truncation() {
        let keypair = Keypair::from_seed(&[6; 32]);
        let record = SignedRecord::sign(&keypair, TEST, vec![1, 2, 3]);
        let bytes = record.encode();
        assert_eq!(bytes.len(), SignedRecord::HEADER_LEN + 3);
        let decoded = SignedRecord::decode(&bytes).unwrap();
        assert_eq!(decoded, record);
        assert_eq!(decoded.verify(TEST), Ok(()));
        assert_eq!(
            SignedRecord::decode(&bytes[..95]),
            Err(RecordError::Truncated { len: 95 })
        );
    }

    #[test]
    fn domain_tags_are_distinct() {
        let tags = [
            Domain::LINK_STATIC_KEY,
            Domain::ROUTE_ADVERT,
            Domain::RELAY_RECEIPT,
            Domain::FEED_ROOT,
        ];
        for (index, tag) in tags.iter().enumerate() {
            for other in &tags[index + 1..] {
                assert_ne!(tag.tag(), other.tag());
            }
        }
    }
}
