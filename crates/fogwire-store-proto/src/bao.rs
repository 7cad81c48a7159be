//! Verified streaming geometry: the BLAKE3 tree over 16 KiB chunk groups.
//!
//! A blob's outboard holds the hashes of its BLAKE3 tree down to chunk
//! groups of 16 KiB (16 chunks of 1 KiB), in post order, 64 bytes per
//! pair (bao-tree's `PostOrderOutboard` layout). With it, any range of the
//! blob can be checked chunk group by chunk group against the root hash,
//! so data is verified before it is stored or served.
//!
//! Pure computation over readers, writers and buffers the caller gives:
//! no files, no threads (the store hashes large files on two threads with
//! [`subtree_streaming`]).
//!
//! Two loops here are bao-tree's traversals (`post_order_chunks_iter`,
//! `ranges_pre_order_chunks_iter_ref`) driven over our own buffers:
//! [`outboard_streaming`] hashes the data where it was read, so that adding
//! a file reads it once and copies it once; [`read_verified`] hands out
//! each verified chunk group instead of an encoded stream.

use std::io::{self, Read, Write};

use bao_tree::io::sync::{Outboard, ReadAt};
use bao_tree::iter::BaoChunk;
use bao_tree::{BaoTree, BlockSize, ChunkRangesRef};
use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};

use crate::Hash;
use crate::message::Groups;

/// Chunk groups of 2^4 chunks of 1 KiB.
pub const BLOCK_SIZE: BlockSize = BlockSize::from_chunk_log(4);
/// Bytes in a chunk group.
pub const CHUNK_GROUP_BYTES: usize = 16 * 1024;
/// Bytes read at a time when hashing a file: a whole number of chunk
/// groups, so no chunk group ever straddles two reads.
pub const READ_BYTES: usize = 64 * CHUNK_GROUP_BYTES;

/// The tree of a blob of `size` bytes.
pub fn tree(size: u64) -> BaoTree {
    BaoTree::new(size, BLOCK_SIZE)
}

/// Hash of a subtree (a chunk group) starting at `start_chunk`.
pub(crate) fn hash_subtree(start_chunk: u64, data: &[u8], is_root: bool) -> blake3::Hash {
    if is_root {
        return blake3::hash(data);
    }
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(start_chunk * 1024);
    hasher.update(data);
    let value: ChainingValue = hasher.finalize_non_root();
    blake3::Hash::from(value)
}

pub fn parent_cv(left: &blake3::Hash, right: &blake3::Hash, is_root: bool) -> blake3::Hash {
    let (left, right): (ChainingValue, ChainingValue) = (*left.as_bytes(), *right.as_bytes());
    if is_root {
        merge_subtrees_root(&left, &right, Mode::Hash)
    } else {
        blake3::Hash::from(merge_subtrees_non_root(&left, &right, Mode::Hash))
    }
}

/// Reads exactly `buffer.len()` bytes, or fails.
fn fill(reader: &mut impl Read, buffer: &mut [u8]) -> io::Result<()> {
    reader.read_exact(buffer)
}

/// Hashes `size` bytes read from `reader`, writing the post-order outboard
/// to `outboard` and handing every block read to `on_data` (to copy it).
/// Memory: one read buffer and a stack of one hash per tree level.
pub fn outboard_streaming(
    reader: impl Read,
    size: u64,
    outboard: impl Write,
    on_data: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<Hash> {
    subtree_streaming(reader, 0, size, true, outboard, on_data).map(Hash::from)
}

/// Hashes the subtree of `len` bytes that starts at byte `offset` of its
/// blob (where BLAKE3 puts a subtree boundary), writing its post-order
/// outboard. Its shape is that of a blob of `len` bytes; its leaves are
/// hashed at their true offset. Returns its chaining value, or the root
/// hash when `is_root`. (The store hashes a large file's two top subtrees
/// on two threads with it.)
pub fn subtree_streaming(
    mut reader: impl Read,
    offset: u64,
    len: u64,
    is_root: bool,
    mut outboard: impl Write,
    mut on_data: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<blake3::Hash> {
    let tree = tree(len);
    let first_chunk = offset / 1024;
    let mut buffer = vec![0u8; READ_BYTES.min(len.max(1) as usize)];
    let (mut filled, mut cursor) = (0usize, 0usize);
    let mut remaining = len;
    let mut stack: Vec<blake3::Hash> = Vec::with_capacity(64);
    for item in tree.post_order_chunks_iter() {
        match item {
            BaoChunk::Parent {
                is_root: is_top, ..
            } => {
                let (Some(right), Some(left)) = (stack.pop(), stack.pop()) else {
                    return Err(io::Error::other("outboard stack underflow"));
                };
                outboard.write_all(left.as_bytes())?;
                outboard.write_all(right.as_bytes())?;
                stack.push(parent_cv(&left, &right, is_top && is_root));
            }
            BaoChunk::Leaf {
                size: leaf_size,
                is_root: is_top,
                start_chunk,
                ..
            } => {
                if cursor == filled {
                    if filled > 0 {
                        on_data(&buffer[..filled])?;
                    }
                    let take = (remaining as usize).min(buffer.len());
                    fill(&mut reader, &mut buffer[..take])?;
                    remaining -= take as u64;
                    (filled, cursor) = (take, 0);
                }
                let end = cursor + leaf_size;
                if end > filled {
                    return Err(io::Error::other("chunk group straddles reads"));
                }
                stack.push(hash_subtree(
                    first_chunk + start_chunk.0,
                    &buffer[cursor..end],
                    is_top && is_root,
                ));
                cursor = end;
            }
        }
    }
    if filled > 0 {
        on_data(&buffer[..filled])?;
    }
    outboard.flush()?;
    match (stack.pop(), stack.is_empty()) {
        (Some(top), true) => Ok(top),
        _ => Err(io::Error::other("outboard stack not reduced to a root")),
    }
}

/// Why a verified read failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    #[error("corrupt: the chunk group at byte {offset} does not match its hash")]
    Corrupt { offset: u64 },
    #[error("corrupt: the outboard is damaged near byte {offset}")]
    CorruptOutboard { offset: u64 },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads the chunk groups covering `ranges` from `data`, checks each
/// against the tree in `outboard`, and hands each verified group (its
/// byte offset and bytes) to `on_group`. Stops at the first group that
/// does not match: nothing unverified is ever handed out.
pub fn read_verified<D: ReadAt, O: Outboard>(
    data: D,
    outboard: O,
    ranges: &ChunkRangesRef,
    mut on_group: impl FnMut(u64, &[u8]) -> io::Result<()>,
) -> Result<(), VerifyError> {
    if ranges.is_empty() {
        return Ok(());
    }
    let tree = outboard.tree();
    let mut stack: Vec<blake3::Hash> = vec![outboard.root()];
    let mut buffer = vec![0u8; CHUNK_GROUP_BYTES];
    let ranges = bao_tree::io::sync::truncate_ranges(ranges, tree.size());
    for item in tree.ranges_pre_order_chunks_iter_ref(ranges, 0) {
        match item {
            BaoChunk::Parent {
                is_root,
                left,
                right,
                node,
                ..
            } => {
                let offset = node.chunk_range().start.to_bytes();
                let Some((left_hash, right_hash)) = outboard.load(node)? else {
                    return Err(VerifyError::CorruptOutboard { offset });
                };
                let expected = stack.pop().ok_or(VerifyError::CorruptOutboard { offset })?;
                if parent_cv(&left_hash, &right_hash, is_root) != expected {
                    return Err(VerifyError::CorruptOutboard { offset });
                }
                if right {
                    stack.push(right_hash);
                }
                if left {
                    stack.push(left_hash);
                }
            }
            BaoChunk::Leaf {
                start_chunk,
                size,
                is_root,
                ..
            } => {
                let offset = start_chunk.to_bytes();
                let expected = stack.pop().ok_or(VerifyError::CorruptOutboard { offset })?;
                let group = &mut buffer[..size];
                data.read_exact_at(offset, group)?;
                if hash_subtree(start_chunk.0, group, is_root) != expected {
                    return Err(VerifyError::Corrupt { offset });
                }
                on_group(offset, group)?;
            }
        }
    }
    Ok(())
}

/// Where the hash pair of `node` lies in the post-order outboard of a
/// blob of `size` bytes (none: the node has no stored pair).
pub fn outboard_offset(size: u64, node: bao_tree::TreeNode) -> Option<u64> {
    tree(size)
        .post_order_offset(node)
        .map(|offset| offset.value() * 64)
}

/// The chunk groups of a partly written blob that check out: each group
/// whose bytes in `data` match its hash, reached through hash pairs in
/// `outboard` that match their parents up to the root. A pair of zeros
/// (never written) or a torn write simply leaves its groups out, which is
/// what makes resuming an interrupted download safe without trusting any
/// record of what was written.
pub fn verified_groups<D: ReadAt, O: Outboard>(data: D, outboard: O) -> io::Result<Groups> {
    let tree = outboard.tree();
    let mut have = Groups::empty();
    // Expected hash of each subtree still to visit; none: not reachable
    // through verified pairs.
    let mut stack: Vec<Option<blake3::Hash>> = vec![Some(outboard.root())];
    let mut buffer = vec![0u8; CHUNK_GROUP_BYTES];
    let all = bao_tree::ChunkRanges::all();
    for item in tree.ranges_pre_order_chunks_iter_ref(&all, 0) {
        match item {
            BaoChunk::Parent {
                is_root,
                left,
                right,
                node,
                ..
            } => {
                let expected = stack.pop().flatten();
                let pair = match expected {
                    Some(expected) => outboard
                        .load(node)?
                        .filter(|(l, r)| parent_cv(l, r, is_root) == expected),
                    None => None,
                };
                if right {
                    stack.push(pair.map(|(_, r)| r));
                }
                if left {
                    stack.push(pair.map(|(l, _)| l));
                }
            }
            BaoChunk::Leaf {
                start_chunk,
                size,
                is_root,
                ..
            } => {
                let Some(expected) = stack.pop().flatten() else {
                    continue;
                };
                let group = &mut buffer[..size];
                match data.read_exact_at(start_chunk.to_bytes(), group) {
                    Ok(()) => {}
                    Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => continue,
                    Err(error) => return Err(error),
                }
                if hash_subtree(start_chunk.0, group, is_root) == expected {
                    let index = start_chunk.0 / 16;
                    have |= Groups::from(index..index + 1);
                }
            }
        }
    }
    Ok(have)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bao_tree::ChunkRanges;
    use bao_tree::io::outboard::PostOrderMemOutboard;
    use proptest::prelude::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 1031) as u8).collect()
    }

    fn outboard_of(data: &[u8]) -> (Hash, Vec<u8>) {
        let mut outboard = Vec::new();
        let mut copied = Vec::new();
        let hash = outboard_streaming(data, data.len() as u64, &mut outboard, |block| {
            copied.extend_from_slice(block);
            Ok(())
        })
        .unwrap();
        assert_eq!(copied, data);
        (hash, outboard)
    }

    #[test]
    fn the_root_is_the_blake3_hash_and_the_outboard_is_bao_trees() {
        for len in [0, 1, 1024, 16 * 1024, 16 * 1024 + 1, 3 * READ_BYTES + 5000] {
            let data = data(len);
            let (hash, outboard) = outboard_of(&data);
            assert_eq!(hash, Hash::of(&data), "len {len}");
            let reference = PostOrderMemOutboard::create(&data[..], BLOCK_SIZE);
            assert_eq!(outboard, reference.data, "len {len}");
        }
    }

    fn verify_all(
        data: &[u8],
        outboard: &[u8],
        hash: Hash,
        ranges: &ChunkRanges,
    ) -> Result<Vec<u8>, VerifyError> {
        let outboard = bao_tree::io::outboard::PostOrderOutboard {
            root: hash.into(),
            tree: tree(data.len() as u64),
            data: outboard,
        };
        let mut out = Vec::new();
        read_verified(data, outboard, ranges, |_, group| {
            out.extend_from_slice(group);
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn a_flipped_bit_is_caught_at_its_chunk_group() {
        let original = data(10 * CHUNK_GROUP_BYTES + 300);
        let (hash, outboard) = outboard_of(&original);
        assert_eq!(
            verify_all(&original, &outboard, hash, &ChunkRanges::all()).unwrap(),
            original
        );
        let mut damaged = original.clone();
        damaged[5 * CHUNK_GROUP_BYTES + 17] ^= 0x10;
        match verify_all(&damaged, &outboard, hash, &ChunkRanges::all()) {
            Err(VerifyError::Corrupt { offset }) => {
                assert_eq!(offset, 5 * CHUNK_GROUP_BYTES as u64)
            }
            other => panic!("{other:?}"),
        }
        let mut bad_outboard = outboard.clone();
        bad_outboard[3] ^= 1;
        assert!(verify_all(&original, &bad_outboard, hash, &ChunkRanges::all()).is_err());
        // The wrong root refuses everything.
        assert!(
            verify_all(
                &original,
                &outboard,
                Hash::of(b"other"),
                &ChunkRanges::all()
            )
            .is_err()
        );
    }

    proptest! {
        #[test]
        fn any_range_of_any_blob_reads_back_verified(
            len in 0usize..200_000,
            start in 0u64..220,
            count in 1u64..64,
        ) {
            let data = data(len);
            let (hash, outboard) = outboard_of(&data);
            let ranges = ChunkRanges::from(bao_tree::ChunkNum(start)..bao_tree::ChunkNum(start + count));
            let mut groups = Vec::new();
            let outboard = bao_tree::io::outboard::PostOrderOutboard {
                root: hash.into(),
                tree: tree(len as u64),
                data: &outboard[..],
            };
            read_verified(&data[..], outboard, &ranges, |offset, group| {
                groups.push((offset, group.to_vec()));
                Ok(())
            }).unwrap();
            for (offset, group) in groups {
                let offset = offset as usize;
                prop_assert_eq!(&data[offset..offset + group.len()], &group[..]);
                prop_assert_eq!(offset % CHUNK_GROUP_BYTES, 0);
            }
        }
    }
}
