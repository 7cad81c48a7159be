//! Feeds: mutable names for immutable trees.
//!
//! A feed is an Ed25519 key pair. Its owner publishes signed **roots**;
//! each names the content the feed points at now. A root is a
//! [`SignedRecord`] (domain `fogwire/store/feed-root/v1`) whose signer is
//! the feed key and whose body is, big-endian:
//!
//! ```text
//! offset  size  field
//!      0     1  version (1)
//!      1     8  seq: 1 for the first root, then one more each time
//!      9    32  previous: the content hash of root seq − 1 (zeros for seq 1)
//!     41     8  published at, Unix ms
//!     49    32  content: the hash of a blob or of a directory's root node
//!     81     1  kind: 0 blob, 1 directory
//!     82     8  size: the content's bytes (a directory's file bytes)
//! ```
//!
//! A holder takes a root only if its signature verifies for the feed, it
//! was not published more than 5 minutes in the future, and its seq is
//! higher than the seq of the root it holds: a replayed or stale root is
//! refused, so followers converge on the latest.

use std::fmt;
use std::str::FromStr;

use bech32::primitives::decode::CheckedHrpstring;
use bech32::{Bech32m, Hrp};
use fogwire_identity::{Domain, Keypair, NodeId, RecordError, SignedRecord};

use crate::Hash;

/// Human-readable part of a printed feed id: `fwfeed1…`.
const HRP: Hrp = Hrp::parse_unchecked("fwfeed");
const VERSION: u8 = 1;
const BODY_LEN: usize = 1 + 8 + 32 + 8 + 32 + 1 + 8;
/// Length of an encoded root.
pub const ROOT_LEN: usize = SignedRecord::HEADER_LEN + BODY_LEN;
/// How far in the future a root's time may be, for clocks that disagree.
pub const CLOCK_SKEW_MAX_MS: u64 = 5 * 60 * 1000;

/// A feed's identity: its Ed25519 public key, printed `fwfeed1…`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FeedId(NodeId);

impl FeedId {
    pub fn from_key(key: NodeId) -> Self {
        Self(key)
    }

    pub fn key(&self) -> NodeId {
        self.0
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    pub fn short(&self) -> String {
        fogwire_identity::short_form(&self.to_string())
    }
}

impl fmt::Display for FeedId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        bech32::encode_lower_to_fmt::<Bech32m, _>(f, HRP, self.0.as_bytes()).map_err(|_| fmt::Error)
    }
}

impl fmt::Debug for FeedId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FeedId({})", self.short())
    }
}

/// Why text is not a feed id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a feed id: expected fwfeed1… (as `fogwire feed new` prints)")]
pub struct ParseFeedIdError {
    text: String,
}

impl FromStr for FeedId {
    type Err = ParseFeedIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || ParseFeedIdError {
            text: text.chars().take(80).collect(),
        };
        let checked = CheckedHrpstring::new::<Bech32m>(text.trim()).map_err(|_| error())?;
        if checked.hrp() != HRP {
            return Err(error());
        }
        let bytes: Vec<u8> = checked.byte_iter().collect();
        NodeId::from_slice(&bytes).map(FeedId).map_err(|_| error())
    }
}

/// What a feed's root points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentKind {
    Blob,
    Directory,
}

/// A checked feed root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedRoot {
    pub feed: FeedId,
    pub seq: u64,
    pub previous: Option<Hash>,
    pub published_at_ms: u64,
    pub content: Hash,
    pub kind: ContentKind,
    pub size: u64,
}

/// Why a root was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FeedError {
    #[error("feed root signature: {0}")]
    Signature(#[from] RecordError),
    #[error("malformed feed root: {0}")]
    Malformed(&'static str),
    #[error("feed root published {ahead_ms} ms in the future (clocks apart?)")]
    FromFuture { ahead_ms: u64 },
    #[error("feed root seq {got} is not newer than the held seq {have}: replayed or stale")]
    Old { have: u64, got: u64 },
    #[error("the root is for feed {got}, not {expected}")]
    OtherFeed { expected: FeedId, got: FeedId },
}

impl FeedRoot {
    /// Signs the root with the feed's key (which must be `self.feed`'s).
    pub fn sign(&self, key: &Keypair) -> Vec<u8> {
        let mut body = Vec::with_capacity(BODY_LEN);
        body.push(VERSION);
        body.extend_from_slice(&self.seq.to_be_bytes());
        body.extend_from_slice(
            self.previous
                .map_or([0u8; 32], |p| *p.as_bytes())
                .as_slice(),
        );
        body.extend_from_slice(&self.published_at_ms.to_be_bytes());
        body.extend_from_slice(self.content.as_bytes());
        body.push(match self.kind {
            ContentKind::Blob => 0,
            ContentKind::Directory => 1,
        });
        body.extend_from_slice(&self.size.to_be_bytes());
        SignedRecord::sign(key, Domain::FEED_ROOT, body).encode()
    }

    /// Parses a root and checks its signature (not its freshness).
    pub fn decode(bytes: &[u8]) -> Result<FeedRoot, FeedError> {
        if bytes.len() != ROOT_LEN {
            return Err(FeedError::Malformed("wrong length"));
        }
        let record = SignedRecord::decode(bytes)?;
        record.verify(Domain::FEED_ROOT)?;
        let body = &record.body;
        if body[0] != VERSION {
            return Err(FeedError::Malformed("unknown version"));
        }
        let u64_at = |at: usize| {
            let mut array = [0u8; 8];
            array.copy_from_slice(&body[at..at + 8]);
            u64::from_be_bytes(array)
        };
        let hash_at = |at: usize| Hash::from_slice(&body[at..at + 32]);
        let seq = u64_at(1);
        let previous = hash_at(9).ok_or(FeedError::Malformed("previous"))?;
        let previous = (previous != Hash::from_bytes([0; 32])).then_some(previous);
        if seq == 0 || (seq == 1) != previous.is_none() {
            return Err(FeedError::Malformed("seq and previous disagree"));
        }
        Ok(FeedRoot {
            feed: FeedId(record.signer),
            seq,
            previous,
            published_at_ms: u64_at(41),
            content: hash_at(49).ok_or(FeedError::Malformed("content"))?,
            kind: match body[81] {
                0 => ContentKind::Blob,
                1 => ContentKind::Directory,
                _ => return Err(FeedError::Malformed("content kind")),
            },
            size: u64_at(82),
        })
    }

    /// Whether a holder of `held` (for the same feed) takes this root now.
    pub fn check_newer(&self, held: Option<&FeedRoot>, now_ms: u64) -> Result<(), FeedError> {
        if self.published_at_ms > now_ms + CLOCK_SKEW_MAX_MS {
            return Err(FeedError::FromFuture {
                ahead_ms: self.published_at_ms - now_ms,
            });
        }
        if let Some(held) = held {
            if held.feed != self.feed {
                return Err(FeedError::OtherFeed {
                    expected: held.feed,
                    got: self.feed,
                });
            }
            if self.seq <= held.seq {
                return Err(FeedError::Old {
                    have: held.seq,
                    got: self.seq,
                });
            }
        }
        Ok(())
    }

    /// The root that follows this one, pointing at `content`.
    pub fn next(&self, content: Hash, kind: ContentKind, size: u64, now_ms: u64) -> FeedRoot {
        FeedRoot {
            feed: self.feed,
            seq: self.seq + 1,
            previous: Some(self.content),
            published_at_ms: now_ms.max(self.published_at_ms),
            content,
            kind,
            size,
        }
    }

    /// The first root of `feed`.
    pub fn first(feed: FeedId, content: Hash, kind: ContentKind, size: u64, now_ms: u64) -> Self {
        FeedRoot {
            feed,
            seq: 1,
            previous: None,
            published_at_ms: now_ms,
            content,
            kind,
            size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Keypair {
        Keypair::from_seed(&[4; 32])
    }

    fn feed() -> FeedId {
        FeedId::from_key(key().node_id())
    }

    #[test]
    fn feed_ids_print_and_parse_and_catch_typos() {
        let text = feed().to_string();
        assert!(text.starts_with("fwfeed1"), "{text}");
        assert_eq!(text.parse::<FeedId>(), Ok(feed()));
        let mut typo = text.clone().into_bytes();
        let last = typo.len() - 3;
        typo[last] = if typo[last] == b'q' { b'p' } else { b'q' };
        assert!(String::from_utf8(typo).unwrap().parse::<FeedId>().is_err());
        // A node id is not a feed id.
        assert!(key().node_id().to_string().parse::<FeedId>().is_err());
    }

    #[test]
    fn roots_verify_chain_and_refuse_replays_forgeries_and_the_future() {
        let first = FeedRoot::first(feed(), Hash::of(b"v1"), ContentKind::Directory, 10, 1_000);
        let encoded = first.sign(&key());
        assert_eq!(encoded.len(), ROOT_LEN);
        let decoded = FeedRoot::decode(&encoded).unwrap();
        assert_eq!(decoded, first);
        decoded.check_newer(None, 1_000).unwrap();
        let second = first.next(Hash::of(b"v2"), ContentKind::Blob, 20, 2_000);
        assert_eq!(second.previous, Some(Hash::of(b"v1")));
        second.check_newer(Some(&first), 2_000).unwrap();
        // A replay of the first, once the second is held.
        assert_eq!(
            first.check_newer(Some(&second), 3_000),
            Err(FeedError::Old { have: 2, got: 1 })
        );
        // Someone else signing for the feed: the signer is theirs.
        let other = Keypair::from_seed(&[5; 32]);
        let forged = FeedRoot::decode(&second.sign(&other)).unwrap();
        assert_ne!(forged.feed, feed());
        assert!(matches!(
            forged.check_newer(Some(&first), 2_000),
            Err(FeedError::OtherFeed { .. })
        ));
        // Altered bytes break the signature.
        let mut altered = second.sign(&key());
        let at = ROOT_LEN - 9;
        altered[at] ^= 1;
        assert!(matches!(
            FeedRoot::decode(&altered),
            Err(FeedError::Signature(_))
        ));
        // From far in the future.
        let future = first.next(Hash::of(b"v3"), ContentKind::Blob, 1, 10_000_000);
        assert!(matches!(
            future.check_newer(Some(&first), 0),
            Err(FeedError::FromFuture { .. })
        ));
    }
}
