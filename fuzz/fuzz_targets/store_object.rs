//! Object nodes and feed roots from untrusted bytes: strict decoders that
//! never panic; what decodes as a directory re-encodes to the same bytes.
#![no_main]

use fogwire_store::FeedRoot;
use fogwire_store::object::{Node, build_directory, decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut framed = b"fwob\x01".to_vec();
    framed.extend_from_slice(data);
    for bytes in [data, &framed[..]] {
        if let Ok(Node::Directory(entries)) = decode(bytes) {
            let nodes = build_directory(entries).expect("a decoded directory rebuilds");
            assert_eq!(nodes.last().map(Vec::as_slice), Some(bytes), "not canonical");
        }
    }
    let _ = FeedRoot::decode(data);
});
