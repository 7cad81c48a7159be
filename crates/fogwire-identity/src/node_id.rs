use std::fmt;
use std::str::FromStr;

use bech32::primitives::decode::CheckedHrpstring;
use bech32::{Bech32m, Hrp};
use ed25519_dalek::VerifyingKey;

/// Human-readable part of a printable [`NodeId`]: every id starts `fw1`.
const HRP: Hrp = Hrp::parse_unchecked("fw");
/// Length of a printable NodeId: `fw` + `1` + 52 data characters + 6 checksum.
pub(crate) const PRINTABLE_LEN: usize = 61;

/// A node's identity: its Ed25519 public key.
///
/// A `NodeId` always holds a key that decompresses to a valid curve point of
/// large order; weak (small-order) keys are refused at construction, so a
/// `NodeId` in hand can always verify signatures.
///
/// The printable form is Bech32m with the prefix `fw`, for example
/// `fw1qqs…`. It is always lower case and 61 characters long, and its
/// checksum catches any single typo and any swap of two neighbouring
/// characters, so a mistyped id fails to parse instead of naming a stranger.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId([u8; 32]);

impl NodeId {
    /// Validates `bytes` as an Ed25519 public key.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, ParseNodeIdError> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| ParseNodeIdError::NotAKey)?;
        if key.is_weak() {
            return Err(ParseNodeIdError::WeakKey);
        }
        Ok(Self(*bytes))
    }

    /// Like [`NodeId::from_bytes`] for a slice that must be 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ParseNodeIdError> {
        let array: &[u8; 32] = bytes
            .try_into()
            .map_err(|_| ParseNodeIdError::Length { found: bytes.len() })?;
        Self::from_bytes(array)
    }

    pub(crate) fn from_verifying_key(key: &VerifyingKey) -> Self {
        Self(key.to_bytes())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key as a curve point. Cannot fail for a constructed `NodeId`; the
    /// `Result` only spares callers an `unwrap`.
    pub(crate) fn verifying_key(&self) -> Result<VerifyingKey, ed25519_dalek::SignatureError> {
        VerifyingKey::from_bytes(&self.0)
    }

    /// The short form for tables and logs ([`crate::short_form`]): not
    /// unique, but accepted back as a prefix where ids are taken.
    pub fn short(&self) -> String {
        crate::short_form(&self.to_string())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only a too-long string can fail to encode, and 32 bytes is far
        // below Bech32m's limit; report it as a formatting error regardless.
        bech32::encode_lower_to_fmt::<Bech32m, _>(f, HRP, &self.0).map_err(|_| fmt::Error)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

/// Written as its text form, `fw1…`; read back from it (configuration
/// files name peers so).
impl serde::Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(|error| {
            serde::de::Error::custom(format!(
                "`{text}` is not a node id ({error}); `fogwire status` prints a node's id"
            ))
        })
    }
}

impl FromStr for NodeId {
    type Err = ParseNodeIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() != PRINTABLE_LEN {
            return Err(ParseNodeIdError::PrintableLength { found: text.len() });
        }
        // Bech32 also accepts an all-upper-case string; we do not, so that a
        // printed id and a parsed id are always the same characters.
        if text.bytes().any(|byte| byte.is_ascii_uppercase()) {
            return Err(ParseNodeIdError::UpperCase);
        }
        let checked =
            CheckedHrpstring::new::<Bech32m>(text).map_err(|error| ParseNodeIdError::Checksum {
                detail: error.to_string(),
            })?;
        if checked.hrp() != HRP {
            return Err(ParseNodeIdError::Prefix);
        }
        let bytes: Vec<u8> = checked.byte_iter().collect();
        Self::from_slice(&bytes)
    }
}

/// Why a text or byte string is not a [`NodeId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseNodeIdError {
    #[error("a node id is {PRINTABLE_LEN} characters long (fw1…), this is {found}")]
    PrintableLength { found: usize },
    #[error("a node id is written in lower case")]
    UpperCase,
    #[error("a node id starts with `fw1`")]
    Prefix,
    #[error("not a valid node id (mistyped?): {detail}")]
    Checksum { detail: String },
    #[error("a node id holds 32 bytes, this holds {found}")]
    Length { found: usize },
    #[error("not an Ed25519 public key")]
    NotAKey,
    #[error("a weak (small-order) Ed25519 key cannot be a node id")]
    WeakKey,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keypair;
    use proptest::prelude::*;

    fn node_id_from_seed(seed: [u8; 32]) -> NodeId {
        Keypair::from_seed(&seed).node_id()
    }

    #[test]
    fn printable_form_is_fixed_length_lower_case_and_prefixed() {
        let id = node_id_from_seed([7; 32]);
        let text = id.to_string();
        assert_eq!(text.len(), PRINTABLE_LEN);
        assert!(text.starts_with("fw1"));
        assert_eq!(text, text.to_lowercase());
    }

    #[test]
    fn rejects_upper_case_wrong_prefix_and_bad_length() {
        let text = node_id_from_seed([1; 32]).to_string();
        assert_eq!(
            text.to_uppercase().parse::<NodeId>(),
            Err(ParseNodeIdError::UpperCase)
        );
        assert!(matches!(
            text[..60].parse::<NodeId>(),
            Err(ParseNodeIdError::PrintableLength { found: 60 })
        ));
        let other_prefix =
            bech32::encode_lower::<Bech32m>(Hrp::parse_unchecked("fx"), &[9u8; 32]).unwrap();
        assert_eq!(
            other_prefix.parse::<NodeId>(),
            Err(ParseNodeIdError::Prefix)
        );
    }

    #[test]
    fn rejects_weak_keys() {
        // The identity point encodes as 1 followed by zeros: small order.
        let mut identity_point = [0u8; 32];
        identity_point[0] = 1;
        assert_eq!(
            NodeId::from_bytes(&identity_point),
            Err(ParseNodeIdError::WeakKey)
        );
    }

    proptest! {
        #[test]
        fn round_trips_exactly(seed in any::<[u8; 32]>()) {
            let id = node_id_from_seed(seed);
            let text = id.to_string();
            let parsed: NodeId = text.parse().unwrap();
            prop_assert_eq!(parsed, id);
            prop_assert_eq!(parsed.to_string(), text);
        }

        #[test]
        fn any_single_character_typo_is_rejected(
            seed in any::<[u8; 32]>(),
            position in 3usize..PRINTABLE_LEN,
            replacement in proptest::sample::select(
                "qpzry9x8gf2tvdw0s3jn54khce6mua7l".chars().collect::<Vec<_>>()
            ),
        ) {
            let text = node_id_from_seed(seed).to_string();
            let mut typo: Vec<char> = text.chars().collect();
            prop_assume!(typo[position] != replacement);
            typo[position] = replacement;
            let typo: String = typo.into_iter().collect();
            prop_assert!(typo.parse::<NodeId>().is_err());
        }

        #[test]
        fn any_swap_of_neighbours_is_rejected(
            seed in any::<[u8; 32]>(),
            position in 3usize..PRINTABLE_LEN - 1,
        ) {
            let text = node_id_from_seed(seed).to_string();
            let mut swapped: Vec<char> = text.chars().collect();
            prop_assume!(swapped[position] != swapped[position + 1]);
            swapped.swap(position, position + 1);
            let swapped: String = swapped.into_iter().collect();
            prop_assert!(swapped.parse::<NodeId>().is_err());
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,80}") {
            let _ = text.parse::<NodeId>();
        }
    }
}
