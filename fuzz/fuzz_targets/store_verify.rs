//! Verified reads of a real blob whose data or outboard the fuzzer damages
//! (what a bad disk or, with replication, a lying peer produces): every
//! chunk group handed out must be the original bytes at that offset, and
//! nothing may panic.
#![no_main]

use bao_tree::io::outboard::PostOrderOutboard;
use bao_tree::{ChunkNum, ChunkRanges};
use fogwire_store::bao::{outboard_streaming, read_verified, tree};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    if input.len() < 8 {
        return;
    }
    let (head, body) = input.split_at(8);
    // The blob: the body repeated to a size that spans several groups.
    let size = (usize::from(u16::from_le_bytes([head[0], head[1]])) * 37).min(400_000);
    let original: Vec<u8> = (0..size).map(|i| body.get(i % body.len().max(1)).copied().unwrap_or(i as u8)).collect();
    let mut outboard = Vec::new();
    let root = outboard_streaming(&original[..], size as u64, &mut outboard, |_| Ok(())).unwrap();
    let mut data = original.clone();
    // Damage: flip a bit in the data or the outboard, or cut either short.
    let at = usize::from(u16::from_le_bytes([head[2], head[3]])) * 13;
    match head[4] % 4 {
        0 if !data.is_empty() => { let i = at % data.len(); data[i] ^= 1 << (head[5] % 8); }
        1 if !outboard.is_empty() => { let i = at % outboard.len(); outboard[i] ^= 1 << (head[5] % 8); }
        2 => data.truncate(at.min(data.len())),
        _ => outboard.truncate(at.min(outboard.len())),
    }
    let start = u64::from(head[6]) * 3;
    let ranges = ChunkRanges::from(ChunkNum(start)..ChunkNum(start + u64::from(head[7]).max(1) * 5));
    let outboard = PostOrderOutboard { root: root.into(), tree: tree(size as u64), data: &outboard[..] };
    let _ = read_verified(&data[..], outboard, &ranges, |offset, group| {
        let offset = offset as usize;
        assert_eq!(&original[offset..offset + group.len()], group, "handed out a damaged group");
        Ok(())
    });
});
