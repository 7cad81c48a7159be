//! The plaintext frame decoder: never panics, and whatever decodes
//! re-encodes to exactly the same bytes.
#![no_main]

use bytes::Bytes;
use fogwire_link_proto::frame::Frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = Frame::decode(Bytes::copy_from_slice(data)) {
        let mut encoded = vec![0u8; frame.encoded_len()];
        let len = frame.encode(&mut encoded);
        assert_eq!(&encoded[..len], data);
    }
});
