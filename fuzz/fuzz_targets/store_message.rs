//! The replication protocol's decoders on bytes from a peer: a message
//! either fails to decode or re-encodes to the same bytes; a route
//! stream's bytes come apart into frames no longer than a message, or
//! stop at a bad length; and a verified
//! stream of random bytes for a real blob never hands out a byte that is
//! not the blob's (and nothing panics).
#![no_main]

use bytes::Bytes;
use fogwire_store_proto::bao::outboard_streaming;
use fogwire_store_proto::message::{Groups, MESSAGE_LEN_MAX, Message, next_frame};
use fogwire_store_proto::stream::{ItemDecoder, Verified, all_groups};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let bytes = Bytes::copy_from_slice(input);
    if let Ok(message) = Message::decode(&bytes) {
        assert_eq!(message.encode(), bytes, "decode and encode disagree");
    }
    let mut stream = bytes::BytesMut::from(input);
    while let Ok(Some(frame)) = next_frame(&mut stream) {
        assert!(!frame.is_empty() && frame.len() <= MESSAGE_LEN_MAX);
        let _ = Message::decode(&frame);
    }
    if input.len() < 6 {
        return;
    }
    // A real blob, and the groups asked of it.
    let (head, body) = input.split_at(6);
    let size = usize::from(u16::from_le_bytes([head[0], head[1]])) * 11;
    let original: Vec<u8> = (0..size).map(|i| (i as u8).wrapping_mul(head[2] | 1)).collect();
    let mut outboard = Vec::new();
    let Ok(root) = outboard_streaming(&original[..], size as u64, &mut outboard, |_| Ok(())) else {
        return;
    };
    let start = u64::from(head[3] % 16);
    let groups = Groups::from(start..start + u64::from(head[4] % 8) + 1) & all_groups(size as u64);
    if groups.is_empty() {
        return;
    }
    let mut decoder = ItemDecoder::new(root, size as u64, &groups);
    // The peer's bytes, in pieces of a fuzzed size.
    let piece = usize::from(head[5]).max(1) * 97;
    for chunk in body.chunks(piece) {
        let result = decoder.push(chunk, &mut |verified| {
            if let Verified::Group { offset, data } = verified {
                let offset = offset as usize;
                assert_eq!(&original[offset..offset + data.len()], data, "handed out a forged group");
            }
        });
        if result.is_err() {
            break;
        }
    }
});
