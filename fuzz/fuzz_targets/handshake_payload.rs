//! The identity payload of handshake messages 2 and 3.
#![no_main]

use fogwire_link_proto::HandshakePayload;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(payload) = HandshakePayload::decode(data) {
        assert_eq!(payload.encode(), data);
        let _ = payload.verify(&[0u8; 32]);
    }
});
