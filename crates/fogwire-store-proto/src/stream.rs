//! The verified-streaming encoding of chunk groups of a blob, produced a
//! piece at a time by [`ItemEncoder`] (the serving side) and checked a
//! piece at a time by [`ItemDecoder`] (the fetching side).
//!
//! The encoding is bao-tree's pre-order encoding of the blob's tree
//! restricted to the requested chunk groups: for each node on the way
//! down, its 64-byte hash pair, and each requested chunk group's bytes.
//! The decoder knows the root hash, so it checks every pair against its
//! parent and every chunk group against its hash as soon as it is whole:
//! the first bad byte is caught at its chunk group, before anything of
//! that group is handed on.

use std::collections::VecDeque;

use bao_tree::io::sync::{Outboard, ReadAt};
use bao_tree::iter::BaoChunk;
use bao_tree::{ChunkNum, ChunkRanges, TreeNode};
use bytes::BytesMut;

use crate::Hash;
use crate::bao::{self, CHUNK_GROUP_BYTES, VerifyError, hash_subtree, parent_cv};
use crate::message::{Groups, runs};

/// One step of an encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Parent {
        node: TreeNode,
        is_root: bool,
        left: bool,
        right: bool,
    },
    Leaf {
        start_chunk: u64,
        size: usize,
        is_root: bool,
    },
}

impl Step {
    fn len(&self) -> usize {
        match self {
            Step::Parent { .. } => 64,
            Step::Leaf { size, .. } => *size,
        }
    }
}

/// The chunk ranges (1 KiB chunks) of a set of chunk groups.
pub fn chunk_ranges(groups: &Groups) -> ChunkRanges {
    let mut ranges = ChunkRanges::empty();
    for (start, end) in runs(groups) {
        ranges |= ChunkRanges::from(ChunkNum(start * 16)..ChunkNum(end * 16));
    }
    ranges
}

/// Chunk groups of a blob of `size` bytes.
pub fn group_count(size: u64) -> u64 {
    size.div_ceil(CHUNK_GROUP_BYTES as u64).max(1)
}

/// Every chunk group of a blob of `size` bytes.
pub fn all_groups(size: u64) -> Groups {
    Groups::from(0..group_count(size))
}

fn steps(size: u64, groups: &Groups) -> VecDeque<Step> {
    let tree = bao::tree(size);
    let ranges = chunk_ranges(groups);
    let ranges = bao_tree::io::sync::truncate_ranges(&ranges, size);
    tree.ranges_pre_order_chunks_iter_ref(ranges, 0)
        .map(|item| match item {
            BaoChunk::Parent {
                node,
                is_root,
                left,
                right,
                ..
            } => Step::Parent {
                node,
                is_root,
                left,
                right,
            },
            BaoChunk::Leaf {
                start_chunk,
                size,
                is_root,
                ..
            } => Step::Leaf {
                start_chunk: start_chunk.0,
                size,
                is_root,
            },
        })
        .collect()
}

/// Produces the encoding of chunk groups of a blob a piece at a time,
/// verifying what it reads as it goes (a server never sends what its own
/// disk damaged).
#[derive(Debug)]
pub struct ItemEncoder {
    steps: VecDeque<Step>,
    stack: Vec<blake3::Hash>,
}

impl ItemEncoder {
    pub fn new(root: Hash, size: u64, groups: &Groups) -> Self {
        Self {
            steps: steps(size, groups),
            stack: vec![root.into()],
        }
    }

    pub fn is_done(&self) -> bool {
        self.steps.is_empty()
    }

    /// Appends whole steps of the encoding to `out` while they fit in
    /// `limit` bytes (at least one, if any is left), so that each message
    /// a server sends holds whole hash pairs and chunk groups, which the
    /// receiver checks where they lie.
    pub fn next<D: ReadAt, O: Outboard>(
        &mut self,
        data: &D,
        outboard: &O,
        out: &mut BytesMut,
        limit: usize,
    ) -> Result<(), VerifyError> {
        while let Some(&step) = self.steps.front() {
            if !out.is_empty() && out.len() + step.len() > limit {
                break;
            }
            self.steps.pop_front();
            match step {
                Step::Parent {
                    node,
                    is_root,
                    left,
                    right,
                } => {
                    let offset = node.chunk_range().start.to_bytes();
                    let Some((left_hash, right_hash)) = outboard.load(node)? else {
                        return Err(VerifyError::CorruptOutboard { offset });
                    };
                    let expected = self
                        .stack
                        .pop()
                        .ok_or(VerifyError::CorruptOutboard { offset })?;
                    if parent_cv(&left_hash, &right_hash, is_root) != expected {
                        return Err(VerifyError::CorruptOutboard { offset });
                    }
                    if right {
                        self.stack.push(right_hash);
                    }
                    if left {
                        self.stack.push(left_hash);
                    }
                    out.extend_from_slice(left_hash.as_bytes());
                    out.extend_from_slice(right_hash.as_bytes());
                }
                Step::Leaf {
                    start_chunk,
                    size,
                    is_root,
                } => {
                    let offset = start_chunk * 1024;
                    let expected = self
                        .stack
                        .pop()
                        .ok_or(VerifyError::CorruptOutboard { offset })?;
                    // Read straight into the message, checked there.
                    let start = out.len();
                    out.resize(start + size, 0);
                    let group = &mut out[start..];
                    let read = data.read_exact_at(offset, group);
                    if read.is_err() || hash_subtree(start_chunk, group, is_root) != expected {
                        out.truncate(start);
                        read?;
                        return Err(VerifyError::Corrupt { offset });
                    }
                }
            }
        }
        Ok(())
    }
}

/// What a decoder checked.
#[derive(Debug, PartialEq, Eq)]
pub enum Verified<'a> {
    /// A hash pair of the tree, for the outboard.
    Parent {
        node: TreeNode,
        pair: (blake3::Hash, blake3::Hash),
    },
    /// A chunk group's bytes, at `offset` in the blob.
    Group { offset: u64, data: &'a [u8] },
}

/// Why an encoding was refused: the chunk group (byte offset) where the
/// sender stopped telling the truth.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("the chunk group at byte {offset} does not match its hash")]
    BadGroup { offset: u64 },
    #[error("the hash pair above byte {offset} does not match its parent")]
    BadParent { offset: u64 },
    #[error("more bytes than the encoding has")]
    TooLong,
}

/// Checks an encoding as its bytes arrive, in any pieces.
#[derive(Debug)]
pub struct ItemDecoder {
    steps: VecDeque<Step>,
    stack: Vec<blake3::Hash>,
    /// The part of the current step received so far.
    partial: Vec<u8>,
}

impl ItemDecoder {
    pub fn new(root: Hash, size: u64, groups: &Groups) -> Self {
        // The encoding of an empty blob is empty: there is nothing to
        // receive, and the root alone says whether such a blob exists (a
        // peer claiming size 0 for any other hash never completes).
        if size == 0 && root == Hash::of(b"") {
            return Self {
                steps: VecDeque::new(),
                stack: Vec::new(),
                partial: Vec::new(),
            };
        }
        Self {
            steps: steps(size, groups),
            stack: vec![root.into()],
            partial: Vec::with_capacity(CHUNK_GROUP_BYTES),
        }
    }

    /// Every step arrived and was checked.
    pub fn is_done(&self) -> bool {
        self.steps.is_empty()
    }

    /// Bytes still expected.
    pub fn remaining(&self) -> u64 {
        self.steps.iter().map(|s| s.len() as u64).sum::<u64>() - self.partial.len() as u64
    }

    /// Takes the next bytes of the encoding; hands every checked hash pair
    /// and chunk group to `on`.
    pub fn push(
        &mut self,
        mut bytes: &[u8],
        on: &mut dyn FnMut(Verified<'_>),
    ) -> Result<(), DecodeError> {
        while !bytes.is_empty() {
            let Some(&step) = self.steps.front() else {
                return Err(DecodeError::TooLong);
            };
            let need = step.len() - self.partial.len();
            let take = need.min(bytes.len());
            // A whole step in the input is checked where it lies.
            let whole = if self.partial.is_empty() && take == step.len() {
                let (whole, rest) = bytes.split_at(take);
                bytes = rest;
                Some(whole)
            } else {
                self.partial.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                None
            };
            let complete = match whole {
                Some(whole) => whole,
                None if self.partial.len() == step.len() => &self.partial[..],
                None => continue,
            };
            Self::check(step, complete, &mut self.stack, on)?;
            self.steps.pop_front();
            self.partial.clear();
        }
        Ok(())
    }

    fn check(
        step: Step,
        bytes: &[u8],
        stack: &mut Vec<blake3::Hash>,
        on: &mut dyn FnMut(Verified<'_>),
    ) -> Result<(), DecodeError> {
        match step {
            Step::Parent {
                node,
                is_root,
                left,
                right,
            } => {
                let offset = node.chunk_range().start.to_bytes();
                let mut array = [0u8; 32];
                array.copy_from_slice(&bytes[..32]);
                let left_hash = blake3::Hash::from_bytes(array);
                array.copy_from_slice(&bytes[32..64]);
                let right_hash = blake3::Hash::from_bytes(array);
                let expected = stack.pop().ok_or(DecodeError::BadParent { offset })?;
                if parent_cv(&left_hash, &right_hash, is_root) != expected {
                    return Err(DecodeError::BadParent { offset });
                }
                if right {
                    stack.push(right_hash);
                }
                if left {
                    stack.push(left_hash);
                }
                on(Verified::Parent {
                    node,
                    pair: (left_hash, right_hash),
                });
            }
            Step::Leaf {
                start_chunk,
                is_root,
                ..
            } => {
                let offset = start_chunk * 1024;
                let expected = stack.pop().ok_or(DecodeError::BadGroup { offset })?;
                if hash_subtree(start_chunk, bytes, is_root) != expected {
                    return Err(DecodeError::BadGroup { offset });
                }
                on(Verified::Group {
                    offset,
                    data: bytes,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bao_tree::io::outboard::PostOrderOutboard;
    use proptest::prelude::*;

    fn blob(len: usize) -> (Vec<u8>, Hash, Vec<u8>) {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let mut outboard = Vec::new();
        let hash =
            bao::outboard_streaming(&data[..], len as u64, &mut outboard, |_| Ok(())).unwrap();
        (data, hash, outboard)
    }

    fn encode(data: &[u8], hash: Hash, outboard: &[u8], groups: &Groups) -> Vec<u8> {
        let outboard = PostOrderOutboard {
            root: hash.into(),
            tree: bao::tree(data.len() as u64),
            data: outboard,
        };
        let mut encoder = ItemEncoder::new(hash, data.len() as u64, groups);
        let mut out = Vec::new();
        while !encoder.is_done() {
            let mut piece = BytesMut::new();
            encoder.next(&data, &outboard, &mut piece, 5000).unwrap();
            out.extend_from_slice(&piece);
        }
        out
    }

    #[test]
    fn the_encoding_is_bao_trees() {
        let (data, hash, outboard) = blob(300_000);
        let groups = Groups::from(3..12);
        let ours = encode(&data, hash, &outboard, &groups);
        let mut reference = Vec::new();
        let outboard = PostOrderOutboard {
            root: hash.into(),
            tree: bao::tree(data.len() as u64),
            data: &outboard[..],
        };
        bao_tree::io::sync::encode_ranges_validated(
            &data[..],
            outboard,
            &chunk_ranges(&groups),
            &mut reference,
        )
        .unwrap();
        assert_eq!(ours, reference);
    }

    #[test]
    fn a_lie_is_caught_at_its_chunk_group_and_nothing_bad_is_handed_on() {
        let (data, hash, outboard) = blob(200_000);
        let groups = all_groups(200_000);
        let mut encoding = encode(&data, hash, &outboard, &groups);
        // Find where group 7's bytes sit in the encoding, and damage them.
        let group_offset = 7 * CHUNK_GROUP_BYTES;
        let at = encoding
            .windows(32)
            .position(|w| w == &data[group_offset..group_offset + 32])
            .unwrap();
        encoding[at + 100] ^= 1;
        let mut decoder = ItemDecoder::new(hash, data.len() as u64, &groups);
        let mut handed = Vec::new();
        let result = decoder.push(&encoding, &mut |verified| {
            if let Verified::Group { offset, data } = verified {
                handed.push((offset, data.to_vec()));
            }
        });
        assert_eq!(
            result,
            Err(DecodeError::BadGroup {
                offset: group_offset as u64
            })
        );
        assert_eq!(handed.len(), 7);
        for (offset, bytes) in handed {
            assert_eq!(
                &data[offset as usize..offset as usize + bytes.len()],
                &bytes[..]
            );
        }
        // Data for another blob fails at once.
        let mut wrong = ItemDecoder::new(Hash::of(b"other"), data.len() as u64, &groups);
        assert!(
            wrong
                .push(&encode(&data, hash, &outboard, &groups), &mut |_| {})
                .is_err()
        );
    }

    /// What a download writes (verified pairs at their post-order place,
    /// verified groups at their offset, over zeros) is exactly what the
    /// resume scan finds again.
    fn partial(len: usize, requested: &[Groups], tear: Option<u64>) -> (Groups, Groups) {
        let (data, hash, _) = blob(len);
        let mut written = vec![0u8; len];
        let mut outboard = vec![0u8; bao::tree(len as u64).outboard_size() as usize];
        let mut expected = Groups::empty();
        for groups in requested {
            let groups = groups & &all_groups(len as u64);
            if groups.is_empty() {
                continue;
            }
            let encoding = {
                let (_, _, full) = blob(len);
                encode(&data, hash, &full, &groups)
            };
            let mut decoder = ItemDecoder::new(hash, len as u64, &groups);
            decoder
                .push(&encoding, &mut |verified| match verified {
                    Verified::Parent { node, pair } => {
                        if let Some(at) = bao::outboard_offset(len as u64, node) {
                            let at = at as usize;
                            outboard[at..at + 32].copy_from_slice(pair.0.as_bytes());
                            outboard[at + 32..at + 64].copy_from_slice(pair.1.as_bytes());
                        }
                    }
                    Verified::Group { offset, data } => {
                        let at = offset as usize;
                        written[at..at + data.len()].copy_from_slice(data);
                    }
                })
                .unwrap();
            expected |= groups;
        }
        if let Some(group) = tear {
            // A torn write: the group's last byte never reached the file.
            let end = (((group + 1) * CHUNK_GROUP_BYTES as u64) as usize).min(len);
            written[end - 1] ^= 1;
        }
        let outboard = PostOrderOutboard {
            root: hash.into(),
            tree: bao::tree(len as u64),
            data: &outboard[..],
        };
        (
            expected,
            bao::verified_groups(&written[..], &outboard).unwrap(),
        )
    }

    #[test]
    fn the_resume_scan_finds_what_was_written_and_nothing_torn() {
        let (expected, found) =
            partial(1_000_000, &[Groups::from(3..9), Groups::from(40..41)], None);
        assert_eq!(found, expected);
        let (_, found) = partial(1_000_000, &[Groups::from(3..9)], Some(5));
        assert_eq!(found, Groups::from(3..5) | Groups::from(6..9));
        let (_, found) = partial(100_000, &[], None);
        assert!(found.is_empty());
        let (expected, found) = partial(10_000, &[Groups::from(0..1)], None);
        assert_eq!(found, expected);
    }

    proptest! {
        #[test]
        fn any_groups_decode_in_any_pieces(
            len in 1usize..300_000,
            start in 0u64..20,
            count in 1u64..20,
            piece in 1usize..40_000,
        ) {
            let (data, hash, outboard) = blob(len);
            let groups = Groups::from(start..start + count) & all_groups(len as u64);
            prop_assume!(!groups.is_empty());
            let encoding = encode(&data, hash, &outboard, &groups);
            let mut decoder = ItemDecoder::new(hash, len as u64, &groups);
            prop_assert_eq!(decoder.remaining(), encoding.len() as u64);
            let mut got = Vec::new();
            for chunk in encoding.chunks(piece) {
                decoder.push(chunk, &mut |verified| {
                    if let Verified::Group { offset, data } = verified {
                        got.push((offset, data.to_vec()));
                    }
                }).unwrap();
            }
            prop_assert!(decoder.is_done());
            for (offset, bytes) in got {
                prop_assert_eq!(&data[offset as usize..offset as usize + bytes.len()], &bytes[..]);
            }
        }

        #[test]
        fn the_resume_scan_finds_exactly_the_verified_groups(
            len in 1usize..400_000,
            runs in proptest::collection::vec((0u64..25, 1u64..6), 0..4),
        ) {
            let requested: Vec<Groups> = runs
                .into_iter()
                .map(|(start, count)| Groups::from(start..start + count))
                .collect();
            let (expected, found) = partial(len, &requested, None);
            prop_assert_eq!(found, expected);
        }
    }
}
